"""What each kind of configuration key is, in one table: how a TOML value becomes the key's
value, how a command-line string does, what the CLI flag takes, and how the value is checked.

TOML loading, the CLI, validation and the explorer's widgets all look a key's kind up here
(:func:`key_type`) instead of asking the parameter's class themselves, so a kind of key is
described once. The explorer maps ``KeyType.name`` to a widget (no UI code lives here).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import param

from .schema import FilePathList, NumberList


class Refused(ValueError):
    """A value the key cannot take; the message completes "'key' ..." (e.g. "must be finite")."""


@dataclass(frozen=True)
class KeyType:
    """One kind of key.

    ``coerce(p, value)`` turns a TOML-like value into the key's type without losing anything,
    raising TypeError when it cannot and Refused for a value of the right type that no key of
    this kind accepts; ``from_text(p, text)`` turns the CLI's string (or strings) into a
    TOML-like value; ``cli(key, p)`` gives the argparse options of the flag."""

    name: str
    param_class: type[param.Parameter]
    describe: Callable[[param.Parameter], str]
    coerce: Callable[[param.Parameter, Any], Any]
    from_text: Callable[[param.Parameter, Any], Any]
    cli: Callable[[str, param.Parameter], dict]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


LARGEST = 1e150  # a number key's magnitude: the physics squares and cubes them, and float64 ends at 1.8e308
SMALLEST = 2.0**-1022  # a nonzero number key's magnitude: float64's smallest normal number (2.23e-308); below
# it (subnormal) a value has lost digits already, and the policy's float32 tensors make it 0


def _finite(value: int | float) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise Refused(f"must be a finite number, not {value}")
    if abs(value) > LARGEST:
        raise Refused(f"must be at most {LARGEST:g} in magnitude (it is squared and cubed on the way), not {value:g}")
    if value and abs(value) < SMALLEST:
        raise Refused(f"must be 0 or at least {SMALLEST:.3g} in magnitude (the smallest normal float64 number; "
                      f"smaller, subnormal ones have lost digits), not {value:g}")
    return value


def _coerce_boolean(_p, value):
    if isinstance(value, bool):
        return value
    raise TypeError


def _coerce_integer(_p, value):
    if _is_number(value) and isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        _finite(value)
    raise TypeError


def _coerce_number(_p, value):
    if _is_number(value):
        return float(_finite(value))
    raise TypeError


def _coerce_text(_p, value):
    if isinstance(value, str):
        return value
    raise TypeError


def _item_types(p: param.List) -> tuple[type, ...]:
    return p.item_type if isinstance(p.item_type, tuple) else (p.item_type,)


def _coerce_list(p, value):
    if not isinstance(value, list):
        raise TypeError
    integers_only = int in _item_types(p) and float not in _item_types(p)
    if integers_only:
        value = [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]
    if not all(isinstance(v, _item_types(p)) and not isinstance(v, bool) for v in value):
        raise TypeError
    return [_finite(v) for v in value]


def _coerce_paths(_p, value):
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise TypeError


def _number_from_text(text: str) -> Any:
    """An int or float from ASCII text; anything else stays text, for the key's type check to
    refuse (Python's int() and float() also read other scripts' digits, '\u0661\u0662' as 12)."""
    if not text.isascii():
        return text
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _scalar_from_text(p, text):
    if p.allow_None and isinstance(text, str) and text.lower() == "none":
        return None
    return _number_from_text(text) if isinstance(p, param.Number) else text


def _list_from_text(_p, texts):
    return [_number_from_text(t) for t in texts] if isinstance(texts, list) else texts


def _cli_flag(metavar: str) -> Callable[[str, param.Parameter], dict]:
    return lambda key, _p: {"metavar": key.upper() if metavar == "KEY" else metavar}


def _cli_list(key: str, p: param.List) -> dict:
    low, high = p.bounds or (0, None)
    if low == high:  # a fixed-length vector, such as a position
        return {"nargs": low, "metavar": tuple("XYZW"[:low])}
    return {"nargs": "+", "metavar": "N"}


def _describe_list(p: param.List) -> str:
    kind = "integers" if _item_types(p) == (int,) else "numbers"
    return f"a list of {kind}"


TYPES: tuple[KeyType, ...] = (
    KeyType("boolean", param.Boolean, lambda p: "true or false", _coerce_boolean, lambda p, v: v,
            lambda key, p: {"action": argparse.BooleanOptionalAction}),
    KeyType("integer", param.Integer, lambda p: "an integer", _coerce_integer, _scalar_from_text, _cli_flag("N")),
    KeyType("number", param.Number, lambda p: "a number", _coerce_number, _scalar_from_text, _cli_flag("KEY")),
    KeyType("choice", param.Selector, lambda p: "one of " + ", ".join(repr(o) for o in p.objects), _coerce_text,
            _scalar_from_text, lambda key, p: {"choices": p.objects}),
    KeyType("paths", FilePathList, lambda p: "a list of paths", _coerce_paths, lambda p, v: v,
            lambda key, p: {"nargs": "*", "metavar": "PATH"}),
    KeyType("list", param.List, _describe_list, _coerce_list, _list_from_text, _cli_list),
    KeyType("text", param.String, lambda p: "a string", _coerce_text, _scalar_from_text, _cli_flag("KEY")),
)


def key_type(p: param.Parameter) -> KeyType:
    """The kind of the schema parameter ``p`` (the first entry of TYPES it is an instance of)."""
    for kind in TYPES:
        if isinstance(p, kind.param_class):
            return kind
    raise TypeError(f"no key type for {type(p).__name__}")


def item_bounds(p: param.Parameter) -> tuple[float | None, float | None] | None:
    """The inclusive bounds of each item of a list key (None: any finite number)."""
    return p.item_bounds if isinstance(p, NumberList) else None
