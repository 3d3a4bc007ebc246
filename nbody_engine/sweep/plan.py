"""The plan of a sweep: every run it holds (id, grid values, run.toml text), checked before
anything is written. A run id is a short hash of the mode and the run's grid values, so it
does not depend on the order of the grid or on its other values."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from ..config.errors import InputError
from ..config.loading import PHASES, check_save_name, load_configs, read_toml, split_layers
from ..config.schema import Logging, PATH_KEYS
from ..events import CancelToken
from ..runs.directory import DATA_DIR
from .grid import Axis, read_grid
from .results import PROVENANCE, metric_columns
from .sweep_plan import Run, SweepPlan

SWEEP_MODES = ("both", "train", "simulate")
MAX_POINTS = 1000  # runs a sweep plans at most unless told otherwise (--max-points)


def run_id(mode: str, values: Mapping[str, Any]) -> str:
    """A short hash of the mode and the run's values: stable across reruns and grid edits."""
    text = json.dumps({"mode": mode, "values": dict(values)}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _point(axes: Sequence[Axis], index: int) -> tuple:
    """The ``index``-th element of the cartesian product (the last axis varies fastest)."""
    out = []
    for axis in reversed(axes):
        index, i = divmod(index, len(axis.values))
        out.append(axis.values[i])
    return tuple(reversed(out))


def _absolute(value: Any, base: Path) -> Any:
    if isinstance(value, str) and value and not os.path.isabs(value):
        return str(base / value)
    return value


def _run_document(base: dict[str, dict], axes: Sequence[Axis], point: tuple, rid: str, cwd: Path,
                  seed: int) -> dict:
    """The run's config: the base with the point's values, absolute paths, and the sweep's
    ``seed`` where neither the base nor the grid gives one (so its points share initial conditions)."""
    layers = {name: dict(values) for name, values in base.items()}
    for axis, value in zip(axes, point):
        layers[axis.layer][axis.key] = value
    for name in ("top", *PHASES):
        layers[name].pop("save_name", None)
        for key in PATH_KEYS:
            if key in layers[name]:
                layers[name][key] = _absolute(layers[name][key], cwd)
    doc: dict[str, Any] = {"seed": seed, **layers["top"], "save_name": rid}
    for phase in PHASES:
        if layers[phase]:
            doc[phase] = layers[phase]
    return doc


def _check_options(mode: str, samples: int | None, seed: int) -> None:
    if mode not in SWEEP_MODES:
        raise InputError(f"sweep mode must be one of {', '.join(SWEEP_MODES)}, not {mode!r}")
    if samples is not None and (not isinstance(samples, int) or isinstance(samples, bool) or samples < 1):
        raise InputError(f"'samples' must be a positive integer, not {samples!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"the sweep's seed must be an integer, not {seed!r}")
    low, high = Logging.param.seed.bounds
    if not low <= seed <= high:
        raise InputError(f"the sweep's seed (--seed) must be between {low} and {high}: it seeds the draw of --samples "
                         f"and is every run's 'seed' where the base sets none; not {seed}")


def _base_layers(config: str | Path | Mapping | None) -> dict[str, dict]:
    if config is None:
        return {"top": {}, "train": {}, "simulate": {}}
    if isinstance(config, Mapping):
        return split_layers(config, "the base config")
    return split_layers(read_toml(config), f"'{config}'")


def sweep_root(name: str, data_dir: str | Path | None = None) -> Path:
    """``data/<name>`` (absolute) for a checked sweep name (raises InputError)."""
    try:
        check_save_name(name)
    except InputError:
        raise InputError(f"the sweep name must be a plain folder name under data/, not {name!r} (see --name)") from None
    return (Path(data_dir) if data_dir is not None else Path.cwd() / DATA_DIR).resolve() / name


def plan_sweep(config: str | Path | Mapping | None, grid: str | Path | Mapping, *, mode: str = "both",
               samples: int | None = None, seed: int = 0, name: str | None = None,
               data_dir: str | Path | None = None, cwd: str | Path | None = None, max_points: int = MAX_POINTS,
               cancel: CancelToken | None = None) -> SweepPlan:
    """Check everything and work out every run; writes nothing (raises InputError on bad input).

    The number of runs is known before any is worked out: more than ``max_points`` is refused
    with the count (``samples`` draws fewer). ``cancel`` stops the planning between two runs
    (RunCancelled)."""
    _check_options(mode, samples, seed)
    cwd = Path(cwd or os.getcwd()).resolve()
    base = _base_layers(config)
    axes = read_grid(grid, mode)
    if name is None:
        if isinstance(grid, Mapping):
            raise InputError("a sweep needs a name (--name) when the grid is not a file")
        name = Path(grid).stem
    root = sweep_root(name, data_dir if data_dir is not None else cwd / DATA_DIR)
    if (root / "config.toml").is_file():
        raise InputError(f"'{root}' is an ordinary run directory, not a sweep; choose another --name")
    total = math.prod(len(a.values) for a in axes)
    _check_count(total, samples, max_points)
    if samples is None or samples >= total:
        indices: Sequence[int] = range(total)
    else:
        indices = sorted(random.Random(seed).sample(range(total), samples))
    runs = _runs(base, axes, indices, mode, cwd, seed, cancel or CancelToken())
    columns = ["id", "status", *(a.column for a in axes), *metric_columns(mode),
               "wall_time_s", "attempts", "exit_code", "error", *PROVENANCE, "run_dir"]
    config_path = None if isinstance(config, Mapping) or config is None else str(Path(config).resolve())
    return SweepPlan(name, mode, root, config_path, axes, runs, total, samples, seed, columns)


def _check_count(total: int, samples: int | None, max_points: int) -> None:
    """A sweep runs at most ``max_points`` runs: the grid's ``total`` points, or ``samples`` of them."""
    if samples is None and total > max_points:
        raise InputError(f"the grid holds {total:,} points, more than the {max_points:,} a sweep runs at most; draw "
                         "some of them with --samples K, or raise --max-points")
    if samples is not None and min(samples, total) > max_points:
        raise InputError(f"--samples {samples:,} asks for more than the {max_points:,} runs a sweep runs at most; "
                         "lower --samples, or raise --max-points")


def _runs(base: dict[str, dict], axes: Sequence[Axis], indices: Sequence[int], mode: str, cwd: Path,
          seed: int, cancel: CancelToken) -> list[Run]:
    """Every run of the plan, each one's config checked by the runner's own loader."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="nbody-sweep-") as tmp:
        check_path = Path(tmp) / "run.toml"
        for index in indices:
            cancel.raise_if_cancelled()
            point = _point(axes, index)
            values = {a.column: v for a, v in zip(axes, point)}
            rid = run_id(mode, values)
            text = tomli_w.dumps(_run_document(base, axes, point, rid, cwd, seed))
            check_path.write_text(text)
            try:
                load_configs(mode, check_path)
            except InputError as err:
                shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
                raise InputError(f"run {rid} ({shown}): {err}") from None
            runs.append(Run(rid, index, values, text))
    return runs
