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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ..config.errors import InputError
from ..config.loading import PHASES, check_save_name, load_configs, read_toml, split_layers
from ..config.schema import Logging, PATH_KEYS
from ..events import CancelToken
from ..runs.directory import DATA_DIR
from .grid import Axis, read_grid
from .provenance import file_record
from .results import PROVENANCE, metric_columns
from .search_options import SearchOptions
from .sweep_plan import Run, SweepPlan

SWEEP_MODES = ("both", "train", "simulate")
MAX_POINTS = 1000  # runs a sweep plans at most unless told otherwise (--max-points)


def run_id(mode: str, config: Mapping[str, Any]) -> str:
    """A short hash of the mode and the run's whole resolved config (its ``save_name``, which is
    this id, left out): the same point of the same base has the same id whatever the grid's
    order or its other points, and a changed base config makes new runs beside the old."""
    resolved = {k: v for k, v in config.items() if k != "save_name"}
    text = json.dumps({"mode": mode, "config": resolved}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _point(axes: Sequence[Axis], index: int) -> tuple:
    """The ``index``-th element of the cartesian product (the last axis varies fastest)."""
    out = []
    for axis in reversed(axes):
        index, i = divmod(index, len(axis.values))
        out.append(axis.values[i])
    return tuple(reversed(out))


def _absolute(value: Any, base: Path) -> Any:
    if isinstance(value, list):
        return [_absolute(item, base) for item in value]
    if isinstance(value, str) and value and not os.path.isabs(value):
        return str(base / value)
    return value


def _run_document(base: dict[str, dict], axes: Sequence[Axis], point: Sequence, cwd: Path, seed: int) -> dict:
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
    doc: dict[str, Any] = {"seed": seed, **layers["top"], "save_name": ""}
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


@dataclass
class RunMaker:
    """Makes a run from a point's values: the base with the values, checked by the runner's own
    loader (raises InputError naming the run), its id the hash of the result."""

    base: dict[str, dict]
    axes: Sequence[Axis]
    mode: str
    cwd: Path
    seed: int

    def __call__(self, values: Mapping[str, Any], index: int = -1) -> Run:
        point = [values[a.column] for a in self.axes]
        doc = _run_document(self.base, self.axes, point, self.cwd, self.seed)
        rid = doc["save_name"] = run_id(self.mode, doc)
        text = tomli_w.dumps(doc)
        with tempfile.TemporaryDirectory(prefix="nbody-sweep-") as tmp:
            check_path = Path(tmp) / "run.toml"
            check_path.write_text(text)
            try:
                load_configs(self.mode, check_path)
            except InputError as err:
                shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
                raise InputError(f"run {rid} ({shown}): {err}") from None
        return Run(rid, index, dict(values), text)


def _text_record(source: str | Path | Mapping | None, what: str) -> dict:
    """A base config or grid as provenance records it: path, full text, SHA-1."""
    if source is None:
        return file_record(None, "")
    if isinstance(source, Mapping):
        return file_record(None, tomli_w.dumps(dict(source)))
    path = Path(source).resolve()
    try:
        return file_record(path, path.read_text())
    except OSError as err:
        raise InputError(f"cannot read the {what} '{source}': {err.strerror}") from None


def plan_sweep(config: str | Path | Mapping | None, grid: str | Path | Mapping, *, mode: str = "both",
               samples: int | None = None, seed: int = 0, name: str | None = None,
               data_dir: str | Path | None = None, cwd: str | Path | None = None, max_points: int = MAX_POINTS,
               cancel: CancelToken | None = None, search: SearchOptions | Mapping | None = None) -> SweepPlan:
    """Check everything and work out every run; writes nothing (raises InputError on bad input).

    The number of runs is known before any is worked out: more than ``max_points`` is refused
    with the count (``samples`` draws fewer). ``cancel`` stops the planning between two runs
    (RunCancelled). ``search`` (:class:`SearchOptions` or a dict of its fields) makes it a search:
    Optuna draws ``trials`` points from the grid's ranges and lists as the sweep runs (no run is
    known yet)."""
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
    make_run = RunMaker(base, axes, mode, cwd, seed)
    search = _search_options(search, axes, samples, mode)
    if search is not None:
        runs, total = [], search.trials
    else:
        total = math.prod(len(a.values) for a in axes)
        _check_count(total, samples, max_points)
        if samples is None or samples >= total:
            indices: Sequence[int] = range(total)
        else:
            indices = sorted(random.Random(seed).sample(range(total), samples))
        runs = _runs(make_run, axes, indices, cancel or CancelToken())
    columns = ["id", "status", *(a.column for a in axes), *metric_columns(mode),
               "wall_time_s", "attempts", "exit_code", "error", *PROVENANCE, "run_dir"]
    config_path = None if isinstance(config, Mapping) or config is None else str(Path(config).resolve())
    return SweepPlan(name, mode, root, config_path, axes, runs, total, samples, seed, columns, search=search,
                     make_run=make_run, base_record=_text_record(config, "base config"),
                     grid_record=_text_record(grid, "grid file"))


def _check_count(total: int, samples: int | None, max_points: int) -> None:
    """A sweep runs at most ``max_points`` runs: the grid's ``total`` points, or ``samples`` of them."""
    if samples is None and total > max_points:
        raise InputError(f"the grid holds {total:,} points, more than the {max_points:,} a sweep runs at most; draw "
                         "some of them with --samples K, or raise --max-points")
    if samples is not None and min(samples, total) > max_points:
        raise InputError(f"--samples {samples:,} asks for more than the {max_points:,} runs a sweep runs at most; "
                         "lower --samples, or raise --max-points")


def _runs(make_run: RunMaker, axes: Sequence[Axis], indices: Sequence[int], cancel: CancelToken) -> list[Run]:
    """Every run of the plan, each one's config checked by the runner's own loader; ``cancel``
    stops between two runs."""
    runs = []
    for index in indices:
        cancel.raise_if_cancelled()
        runs.append(make_run(dict(zip((a.column for a in axes), _point(axes, index))), index))
    return runs


def _search_options(search: SearchOptions | Mapping | None, axes: Sequence[Axis], samples: int | None,
                    mode: str) -> SearchOptions | None:
    """The checked search options, or None for a grid (whose axes must then all be lists)."""
    ranged = [a.column for a in axes if a.range is not None]
    if search is None:
        if ranged:
            raise InputError(f"the grid gives '{ranged[0]}' a range, which only a search can draw from; "
                             "run it with --search tpe (or random) --trials N, or list its values")
        return None
    if samples is not None:
        raise InputError("--samples draws points of a grid; a search draws --trials points (leave out --samples)")
    if isinstance(search, Mapping):
        unknown = sorted(set(search) - set(SearchOptions.__dataclass_fields__))
        if unknown:
            raise InputError(f"unknown search option '{unknown[0]}'; the options are "
                             + ", ".join(SearchOptions.__dataclass_fields__))
        search = SearchOptions(**search)
    return search.resolved(mode)
