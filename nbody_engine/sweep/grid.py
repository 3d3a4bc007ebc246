"""The grid of a sweep: which keys it varies, where (top level, ``[train]``, ``[simulate]``),
and their values, every one checked by the schema. Read from TOML (``read_grid``) or from the
text a person types, ``"1e-4, 2e-4"`` (``parse_values``).

A key takes a list of values (a grid axis; a search's choices) or, for a search, a range:
``lr = { low = 1e-4, high = 1e-2, log = true }`` (log-uniform), ``eps = { low = 0.01, high = 0.1 }``
(uniform), with ``step`` for a lattice; an integer key's range draws integers."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import param

from ..config.errors import InputError
from ..config.loading import PHASES, check_value, parse_text, read_toml, unknown_key_error
from ..config.schema import Config, KEYS

SWEEPABLE = tuple(k for k in KEYS if k != "save_name")  # the sweep names each run itself


RANGE_FIELDS = ("low", "high", "log", "step")


@dataclass(frozen=True)
class Range:
    """A search's range of a numeric key: ``low <= value <= high``, log-uniform when ``log``,
    on a lattice of ``step`` when given; ``integer`` for an integer key."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def as_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}


@dataclass(frozen=True)
class Axis:
    """One swept key: where it sits (``top``, ``train`` or ``simulate``) and its values, or its
    ``range`` (a search's continuous or integer range; ``values`` is then empty)."""

    layer: str
    key: str
    values: tuple
    range: Range | None = None

    @property
    def column(self) -> str:
        return self.key if self.layer == "top" else f"{self.layer}.{self.key}"

    def describe(self) -> list | dict:
        """The axis in results.json: its values, or its range."""
        return self.range.as_dict() if self.range is not None else list(self.values)


def read_grid(grid: str | Path | Mapping, mode: str) -> list[Axis]:
    """The grid's axes, every key and value checked against the schema (raises InputError)."""
    if isinstance(grid, Mapping):
        source, doc = "grid", grid
    else:
        source = f"grid '{grid}'"
        doc = read_toml(Path(grid), "grid file", "--grid")
    axes: list[Axis] = []
    for key, value in doc.items():
        if key in PHASES:
            if not isinstance(value, Mapping):
                raise InputError(f"{source}: '{key}' must be a section [{key}], not a value")
            if mode not in ("both", key):
                raise InputError(f"{source} sweeps [{key}] keys, but --mode {mode} runs no {key} phase; "
                                 f"move them to the top level or use --mode both")
            axes += [_axis(key, k, v, f"[{key}] of {source}") for k, v in value.items()]
        elif isinstance(value, Mapping) and key not in KEYS:
            match = difflib.get_close_matches(key, PHASES, n=1, cutoff=0.4)
            raise InputError(f"{source}: unknown section [{key}]; the sections are [train] and [simulate]"
                             + (f"; did you mean [{match[0]}]?" if match else ""))
        else:
            axes.append(_axis("top", key, value, f"{source} (top level)"))
    if not axes:
        raise InputError(f"{source} lists no keys to sweep; give each key a list of values, e.g. steps = [100, 200]")
    top = {a.key for a in axes if a.layer == "top"}
    for a in axes:
        if a.layer != "top" and a.key in top:
            raise InputError(f"{source} sweeps '{a.key}' both at the top level and in [{a.layer}]; "
                             "sweep it in one place")
    return axes


def example_values(key: str) -> str:
    """A few values of ``key``'s kind, as a person would type them."""
    p = Config.param[key]
    if isinstance(p, param.Boolean):
        return "true, false"
    if isinstance(p, param.Selector):
        return ", ".join(str(o) for o in list(p.objects)[:3])
    if isinstance(p, param.Integer):
        return "100, 200"
    if isinstance(p, param.Number):
        return "1e-4, 2e-4, 5e-4"
    if isinstance(p, param.List):
        return "[64, 64], [128, 128]"
    return "a, b"


def _axis(layer: str, key: str, values: Any, where: str) -> Axis:
    if key not in KEYS:
        raise unknown_key_error(key, where)
    if key == "save_name":
        raise InputError(f"{where}: 'save_name' is set by the sweep (each run is named by its id); "
                         "leave it out of the grid")
    p = Config.param[key]
    example = "[[64, 64], [128]]" if isinstance(p, param.List) else "[1, 2]" if isinstance(
        p, (param.Number, param.Integer)) else "[...]"
    if isinstance(values, Mapping):
        return Axis(layer, key, (), _range(key, p, values, where))
    if not isinstance(values, list):
        raise InputError(f"{where}: '{key}' must be a list of the values to sweep, e.g. {key} = {example}, "
                         f"not {values!r}")
    if not values:
        raise InputError(f"{where}: '{key}' lists no values; give at least one, e.g. {key} = {example}")
    if isinstance(p, param.List) and not all(isinstance(v, list) for v in values):
        raise InputError(f"{where}: '{key}' takes lists, so sweep it as a list of lists, e.g. {key} = {example}, "
                         f"not {values!r}")
    return Axis(layer, key, tuple(distinct_values(key, values, where)))


def _range(key: str, p: param.Parameter, spec: Mapping, where: str) -> Range:
    """A checked range ``{low, high, log, step}`` of a numeric key."""
    example = f"{key} = {{ low = 1e-4, high = 1e-2, log = true }}"
    if not isinstance(p, (param.Number, param.Integer)) or isinstance(p, param.Boolean):
        raise InputError(f"{where}: '{key}' is not a number, so it has no range; list its values instead, "
                         f"e.g. {key} = [{example_values(key)}]")
    unknown = sorted(set(spec) - set(RANGE_FIELDS))
    if unknown or "low" not in spec or "high" not in spec:
        problem = f"unknown field '{unknown[0]}'" if unknown else "needs 'low' and 'high'"
        raise InputError(f"{where}: the range of '{key}' {problem}; write e.g. {example}")
    low, high = (check_value(key, spec[end], f"{where} ({key}.{end})") for end in ("low", "high"))
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise InputError(f"{where}: '{key}.log' must be true or false, not {log!r}")
    if not low < high:
        raise InputError(f"{where}: the range of '{key}' needs low < high, not {low!r} .. {high!r}")
    if log and low <= 0:
        raise InputError(f"{where}: a log range of '{key}' needs low > 0, not {low!r}")
    integer = isinstance(p, param.Integer)
    if step is not None and (log or isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0
                             or (integer and not isinstance(step, int))):
        raise InputError(f"{where}: '{key}.step' must be a positive {'integer' if integer else 'number'} "
                         f"and cannot go with log = true, not {step!r}")
    return Range(low, high, log, step, integer)


def distinct_values(key: str, values: list, where: str) -> list:
    """Each value checked by the schema; a value listed twice is an error."""
    checked = []
    for value in values:
        value = check_value(key, value, where)
        if value in checked:
            raise InputError(f"{where}: '{key}' lists {value!r} twice")
        checked.append(value)
    return checked


def parse_values(key: str, text: str, where: str = "sweep values") -> list:
    """The values typed for ``key`` ("1e-4, 2e-4"; lists in brackets: "[64, 64], [128]"),
    each checked as the CLI checks it; raises InputError."""
    if key not in KEYS:
        raise unknown_key_error(key, "the sweep")
    text = (text or "").strip()
    if not text:
        raise InputError(f"{where}: '{key}' has no values; give at least one, e.g. {example_values(key)}")
    p = Config.param[key]
    try:  # TOML's syntax covers numbers, booleans, quoted strings and lists
        items = tomllib.loads(f"v = [{text}]")["v"]
    except tomllib.TOMLDecodeError:
        items = None if isinstance(p, param.List) else [_parse_item(key, p, piece.strip(), where)
                                                        for piece in text.split(",")]
    if isinstance(p, param.List) and (items is None or not all(isinstance(i, list) for i in items)):
        raise InputError(f"{where}: '{key}' takes lists; write each value in brackets, e.g. "
                         f"{example_values(key)}, not {text!r}")
    return distinct_values(key, items, where)


def _parse_item(key: str, p: param.Parameter, piece: str, where: str) -> Any:
    if not piece:
        raise InputError(f"{where}: '{key}' has an empty value between commas")
    if isinstance(p, param.Boolean) and piece.lower() in ("true", "false"):
        return piece.lower() == "true"
    return parse_text(key, piece)  # "none" for the keys that may be unset, numbers, else the text
