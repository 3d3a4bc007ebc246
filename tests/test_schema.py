"""The schema against the user's spec (docs/runner_config_spec.md), line by line.

The spec's tables are parsed here, so a key, default, flag or section the spec names and the
schema lacks fails a test that names it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import param
import pytest

from nbody_engine import runner
from nbody_engine.config.schema import Config, KEYS, SECTIONS, flags_for

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "docs" / "runner_config_spec.md"
SHARED_SPEC = REPO.parent / "shared" / "spec" / "runner_config.md"
MODES = ("train", "simulate", "both")


@dataclass
class SpecRow:
    section: str  # the ### heading the table sits under
    key: str
    flags: dict[str, tuple[str, ...]]  # flag -> the modes the spec accepts it in
    default: str | None = None  # the spec's default literal (reference tables only)
    cells: dict = field(default_factory=dict)


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def _flag_modes(cell: str) -> dict[str, tuple[str, ...]]:
    """``--ic-path` (train) / `--train-ic-path` (both)`` -> {flag: modes}; no annotation: every mode."""
    flags: dict[str, tuple[str, ...]] = {}
    for part in re.split(r"\s*/\s*|,\s*", cell):
        names = [t for t in _ticked(part) if t.startswith("-")]
        mode = re.search(r"\((train|simulate|both)\)", part)
        for name in names:
            flags[name] = flags.get(name, ()) + ((mode.group(1),) if mode else MODES)
    return flags


def parse_spec(text: str) -> list[SpecRow]:
    """Every row of every key table under '## Configuration reference' and later sections."""
    rows: list[SpecRow] = []
    start = text.index("## Configuration reference")
    section = None
    header: list[str] | None = None
    for line in text[start:].splitlines():
        if line.startswith("## ") and section is not None:
            break
        if line.startswith("### "):
            section, header = line[4:].strip(), None
            continue
        if not line.startswith("|"):
            header = None if not line.strip() else header
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set("".join(cells)) <= set("- :"):
            continue
        row = dict(zip(header, cells))
        key = _ticked(row["TOML key"])[0]
        default = _ticked(row["Default"])[0] if "Default" in row else None
        rows.append(SpecRow(section, key, _flag_modes(row["CLI flag"]), default, row))
    return rows


SPEC_ROWS = parse_spec(SPEC.read_text())
REFERENCE_ROWS = [r for r in SPEC_ROWS if r.default is not None]


def test_spec_tables_were_parsed():
    """Guards the parser: 11 tables; 55 rows in the reference tables, 4 more (ic_path twice) after them."""
    assert len({r.section for r in SPEC_ROWS}) == 11
    assert len(REFERENCE_ROWS) == 55
    assert len(SPEC_ROWS) == 59
    assert {"ic_path", "use_train_ic", "multi_orbit_sim", "E_lower", "movie_dpi"} <= {r.key for r in SPEC_ROWS}


@pytest.mark.parametrize("row", SPEC_ROWS, ids=lambda r: f"{r.section}:{r.key}")
def test_spec_key_exists(row):
    assert row.key in KEYS, f"spec key '{row.key}' ({row.section}) is missing from the schema"


def _spec_default(literal: str):
    if literal == "None":
        return None
    if literal in ("true", "false"):
        return literal == "true"
    try:
        return float(literal)
    except ValueError:
        return literal


@pytest.mark.parametrize("row", REFERENCE_ROWS, ids=lambda r: r.key)
def test_spec_default(row):
    expected = _spec_default(row.default)
    actual = Config.param[row.key].default
    if isinstance(expected, float):
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool), (row.key, actual)
        assert math.isclose(actual, expected, rel_tol=1e-12), (row.key, actual, expected)
    else:
        assert actual == expected and type(actual) is type(expected), (row.key, actual, expected)


@pytest.mark.parametrize("row", SPEC_ROWS, ids=lambda r: f"{r.section}:{r.key}")
def test_spec_section_grouping(row):
    titles = {s.title: s for s in SECTIONS}
    assert row.section in titles, f"no schema section titled {row.section!r}"
    assert KEYS[row.key].title == row.section, (row.key, KEYS[row.key].title)


@pytest.mark.parametrize("row", REFERENCE_ROWS, ids=lambda r: r.key)
def test_spec_flags_are_the_keys_flags(row):
    assert set(row.flags) <= set(flags_for(row.key)), (row.key, flags_for(row.key))


def _sample(key: str):
    """A valid value for ``key`` that differs from its default: (CLI words, the value it means)."""
    p = Config.param[key]
    d = p.default
    if isinstance(p, param.Boolean):
        return [], True
    if isinstance(p, param.Selector):
        value = next(o for o in reversed(p.objects) if o != d)
        return [value], value
    if key == "external_field_position":
        return ["2", "0", "-1.5"], [2, 0, -1.5]
    if isinstance(p, param.List):
        return ["32", "16"], [32, 16]
    if isinstance(p, param.Integer):
        value = 7 if d is None else d + 1
        return [str(value)], value
    if isinstance(p, param.Number):
        value = 1.5 if d is None else (d / 2 if d else 0.5)
        return [repr(value)], value
    return ["some_name"], "some_name"


def _flag_cases():
    for row in SPEC_ROWS:
        for flag, modes in row.flags.items():
            for mode in modes:
                yield pytest.param(row.key, flag, mode, id=f"{mode}:{flag}")


@pytest.mark.parametrize(("key", "flag", "mode"), list(_flag_cases()))
def test_spec_flag_is_accepted(key, flag, mode):
    words, value = _sample(key)
    args = runner.build_parser().parse_args([mode, flag, *words])
    shared, per_phase = runner._cli_values(args)
    phase = {"--train-ic-path": "train", "--sim-ic-path": "simulate"}.get(flag)
    if phase is None:
        assert shared == {key: value}
        assert per_phase == {}
    else:
        assert shared == {}
        assert per_phase == {phase: {key: value}}


def test_ic_path_flag_modes():
    """The spec: --ic-path for train and simulate, --train-ic-path/--sim-ic-path for both."""
    ic = next(r for r in SPEC_ROWS if r.key == "ic_path" and "--train-ic-path" in r.flags)
    sim = next(r for r in SPEC_ROWS if r.key == "ic_path" and "--sim-ic-path" in r.flags)
    assert set(ic.flags["--ic-path"]) == {"train"} and ic.flags["--train-ic-path"] == ("both",)
    assert set(sim.flags["--ic-path"]) == {"simulate"} and sim.flags["--sim-ic-path"] == ("both",)


@pytest.mark.parametrize(("words", "key", "value"), [
    (["-n", "12"], "epochs", 12),
    (["-s", "run1"], "save_name", "run1"),
    (["--E_lower", "1e-7"], "E_lower", 1e-7),
    (["--Nperiod", "3"], "Nperiod", 3),
    (["--external-field-position", "1", "2", "3"], "external_field_position", [1, 2, 3]),
])
@pytest.mark.parametrize("mode", MODES)
def test_spec_spellings(mode, words, key, value):
    shared, _ = runner._cli_values(runner.build_parser().parse_args([mode, *words]))
    assert shared[key] == value


def test_spec_is_the_shared_spec():
    if not SHARED_SPEC.exists():
        pytest.skip(f"{SHARED_SPEC} is not present in this checkout")
    assert SPEC.read_text() == SHARED_SPEC.read_text()


@pytest.mark.parametrize("key", ["normalize_inputs", "norm_mode", "hidden_dims", "activation", "dropout",
                                 "fourier_scale", "fourier_dim", "wandb", "retrain_log_every"])
def test_design_extra_keys(key):
    assert key in KEYS
    assert flags_for(key)
