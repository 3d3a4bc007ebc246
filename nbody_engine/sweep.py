"""Parameter sweeps: one base config, a grid of values, every run the ordinary headless runner.

``nbody-runner sweep --config base.toml --grid grid.toml`` (or :func:`run_sweep`) expands the
grid's cartesian product (or ``samples`` seeded random draws from it) and runs each point as
``python -m nbody_engine.runner <mode> --config run.toml`` in a subprocess inside a Dask task,
so a crashed run cannot take a worker down. Dask runs the tasks on an embedded
``LocalCluster`` (default), an existing cluster (``scheduler``) or SLURM jobs (``slurm``,
needs the ``slurm`` extra).

Layout, under ``data/<sweep_name>/``::

    results.csv, results.json   one row per run, rewritten atomically as each run finishes
    runs/<id>/                   the run's working directory (the runner's cwd):
        run.toml                 the base config merged with the run's grid values, save_name = <id>
        stdout.log, stderr.log   what the runner printed
        status.json              the run's row (status, error, wall time, metrics): the resume record
        data/<id>/               the runner's ordinary run directory (config.toml, metrics.jsonl,
                                 model/, sim/<mode>/summary.json, ...)

``cd data/<sweep_name>/runs/<id> && nbody-runner <mode> --config run.toml`` repeats a run by
hand. A run id is a short hash of the mode and the run's grid values, so it does not depend on
the order of the grid or on the other values in it: a rerun (or an extended grid) finds the
runs already done and skips those whose status is ok and whose run.toml is unchanged.

Relative paths in the base or the grid (``ic_path``, ``model_path``, ``movie_dir``) are made
absolute against the directory the sweep is started from. Every worker must see the sweep's
directory and those paths at the same place (a shared filesystem on a cluster).
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import param
import tomli_w

from .config import PHASES, check_save_name, check_value, load_configs, read_toml, split_layers, unknown_key_error
from .errors import InputError
from .runs import DATA_DIR, write_json, write_text
from .schema import KEYS, Config

SWEEP_MODES = ("both", "train", "simulate")
PATH_KEYS = ("ic_path", "model_path", "movie_dir")
TRAIN_METRICS = ("loss", "acceptance_rate", "rel_dE_max")
SIM_METRICS = ("steps", "max_rel_energy_error", "steps_per_period")
STATUS_OK, STATUS_FAILED, STATUS_PENDING = "ok", "failed", "pending"
SLURM_HINT = "pip install 'nbody-explorer[slurm]'"
_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


# --------------------------------------------------------------------------- the plan

@dataclass(frozen=True)
class Axis:
    """One swept key: where it sits (``top``, ``train`` or ``simulate``) and its values."""

    layer: str
    key: str
    values: tuple

    @property
    def column(self) -> str:
        return self.key if self.layer == "top" else f"{self.layer}.{self.key}"


@dataclass
class Run:
    id: str
    index: int  # position in the full cartesian product
    values: dict[str, Any]  # column -> value
    toml: str  # the run.toml text


@dataclass
class SweepPlan:
    name: str
    mode: str
    root: Path  # data/<name>, absolute
    config_path: str | None
    axes: list[Axis]
    runs: list[Run]
    total: int  # size of the full product
    samples: int | None
    seed: int
    columns: list[str] = field(default_factory=list)

    def run_dir(self, run: Run) -> Path:
        return self.root / "runs" / run.id


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
        elif isinstance(value, Mapping):
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


def _axis(layer: str, key: str, values: Any, where: str) -> Axis:
    if key not in KEYS:
        raise unknown_key_error(key, where)
    if key == "save_name":
        raise InputError(f"{where}: 'save_name' is set by the sweep (each run is named by its id); "
                         "leave it out of the grid")
    p = Config.param[key]
    example = "[[64, 64], [128]]" if isinstance(p, param.List) else "[1, 2]" if isinstance(
        p, (param.Number, param.Integer)) else "[...]"
    if not isinstance(values, list):
        raise InputError(f"{where}: '{key}' must be a list of the values to sweep, e.g. {key} = {example}, "
                         f"not {values!r}")
    if not values:
        raise InputError(f"{where}: '{key}' lists no values; give at least one, e.g. {key} = {example}")
    if isinstance(p, param.List) and not all(isinstance(v, list) for v in values):
        raise InputError(f"{where}: '{key}' takes lists, so sweep it as a list of lists, e.g. {key} = {example}, "
                         f"not {values!r}")
    return Axis(layer, key, tuple(distinct_values(key, values, where)))


def distinct_values(key: str, values: list, where: str) -> list:
    """Each value checked by the schema; a value listed twice is an error."""
    checked = []
    for value in values:
        value = check_value(key, value, where)
        if value in checked:
            raise InputError(f"{where}: '{key}' lists {value!r} twice")
        checked.append(value)
    return checked


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


def _run_document(base: dict[str, dict], axes: Sequence[Axis], point: tuple, rid: str, cwd: Path) -> dict:
    layers = {name: dict(values) for name, values in base.items()}
    for axis, value in zip(axes, point):
        layers[axis.layer][axis.key] = value
    doc: dict[str, Any] = {}
    for name in ("top", *PHASES):
        layers[name].pop("save_name", None)
        for key in PATH_KEYS:
            if key in layers[name]:
                layers[name][key] = _absolute(layers[name][key], cwd)
    doc.update(layers["top"])
    doc["save_name"] = rid
    for phase in PHASES:
        if layers[phase]:
            doc[phase] = layers[phase]
    return doc


def plan_sweep(config: str | Path | Mapping | None, grid: str | Path | Mapping, *, mode: str = "both",
               samples: int | None = None, seed: int = 0, name: str | None = None,
               data_dir: str | Path | None = None, cwd: str | Path | None = None) -> SweepPlan:
    """Check everything and work out every run; writes nothing (raises InputError on bad input)."""
    if mode not in SWEEP_MODES:
        raise InputError(f"sweep mode must be one of {', '.join(SWEEP_MODES)}, not {mode!r}")
    if samples is not None and (not isinstance(samples, int) or isinstance(samples, bool) or samples < 1):
        raise InputError(f"'samples' must be a positive integer, not {samples!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"the sampling seed must be an integer, not {seed!r}")
    cwd = Path(cwd or os.getcwd()).resolve()
    if config is None:
        base = {"top": {}, "train": {}, "simulate": {}}
    elif isinstance(config, Mapping):
        base = split_layers(config, "the base config")
    else:
        base = split_layers(read_toml(config), f"'{config}'")
    axes = read_grid(grid, mode)
    if name is None:
        if isinstance(grid, Mapping):
            raise InputError("a sweep needs a name (--name) when the grid is not a file")
        name = Path(grid).stem
    try:
        check_save_name(name)
    except InputError:
        raise InputError(f"the sweep name must be a plain folder name under data/, not {name!r} (see --name)") from None
    root = (Path(data_dir) if data_dir is not None else cwd / DATA_DIR).resolve() / name
    if (root / "config.toml").is_file():
        raise InputError(f"'{root}' is an ordinary run directory, not a sweep; choose another --name")
    total = math.prod(len(a.values) for a in axes)
    if samples is None or samples >= total:
        indices: Sequence[int] = range(total)
    else:
        indices = sorted(random.Random(seed).sample(range(total), samples))
    runs = []
    with tempfile.TemporaryDirectory(prefix="nbody-sweep-") as tmp:
        check_path = Path(tmp) / "run.toml"
        for index in indices:
            point = _point(axes, index)
            values = {a.column: v for a, v in zip(axes, point)}
            rid = run_id(mode, values)
            text = tomli_w.dumps(_run_document(base, axes, point, rid, cwd))
            check_path.write_text(text)
            try:
                load_configs(mode, check_path)
            except InputError as err:
                shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
                raise InputError(f"run {rid} ({shown}): {err}") from None
            runs.append(Run(rid, index, values, text))
    columns = ["id", "status", *(a.column for a in axes), *_metric_columns(mode),
               "wall_time_s", "attempts", "exit_code", "error", "run_dir"]
    config_path = None if isinstance(config, Mapping) or config is None else str(Path(config).resolve())
    return SweepPlan(name, mode, root, config_path,
                     axes, runs, total, samples, seed, columns)


def _metric_columns(mode: str) -> tuple[str, ...]:
    return {"train": TRAIN_METRICS, "simulate": SIM_METRICS}.get(mode, TRAIN_METRICS + SIM_METRICS)


# --------------------------------------------------------------------------- one run (inside a Dask task)

def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def read_status(run_dir: str | Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def collect_metrics(output_dir: str | Path) -> dict:
    """Final metrics of a runner output directory: the last line of metrics.jsonl (loss,
    acceptance_rate, rel_dE_max) and the simulation summary (steps, max_rel_energy_error,
    steps_per_period; for a batch of systems the worst error and the mean steps per period)."""
    output_dir = Path(output_dir)
    out: dict[str, Any] = {}
    try:
        lines = [ln for ln in (output_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        last = json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        last = {}
    for key in TRAIN_METRICS:
        if key in last:
            out[key] = _finite(last[key])
    summaries = sorted(output_dir.glob("sim/*/summary.json"), key=lambda p: p.stat().st_mtime)
    try:
        summary = json.loads(summaries[-1].read_text()) if summaries else {}
    except (OSError, ValueError):
        summary = {}
    for key, reduce in (("steps", max), ("max_rel_energy_error", max), ("steps_per_period", _mean)):
        value = summary.get(key)
        if isinstance(value, list):
            value = [v for v in value if v is not None]
            value = reduce(value) if value else None
        if value is not None:
            out[key] = _finite(value)
    return out


def _mean(values):
    return sum(values) / len(values)


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _task_cancelled() -> bool:
    """Whether the Dask task running this thread was cancelled (best effort)."""
    try:
        from distributed import get_worker
        from distributed.worker import thread_state

        worker, key = get_worker(), getattr(thread_state, "key", None)
        if key is None:
            return False
        ts = worker.state.tasks.get(key)
        return ts is None or ts.state in ("cancelled", "released", "forgotten")
    except Exception:  # noqa: BLE001 - best-effort look at Dask's worker state; never fail the run over it
        return False


def execute_run(run_dir: str, mode: str) -> dict:
    """Run ``run_dir/run.toml`` with the headless runner in a subprocess (cwd = ``run_dir``),
    capture its output, and write and return the run's status row. Never raises for a failed run."""
    run_dir_path = Path(run_dir)
    rid = run_dir_path.name
    toml_text = (run_dir_path / "run.toml").read_text()
    attempts = int(read_status(run_dir_path).get("attempts", 0)) + 1
    output = run_dir_path / "data" / rid
    try:
        resume = bool(tomllib.loads(toml_text).get("resume", False))
    except tomllib.TOMLDecodeError:
        resume = False
    if output.exists() and not resume:
        shutil.rmtree(output)  # a rerun starts clean: no stale checkpoints or metrics
    started = datetime.now(UTC).isoformat(timespec="seconds")
    row: dict[str, Any] = {"id": rid, "status": "running", "attempts": attempts, "started": started,
                           "host": os.uname().nodename, "mode": mode, "run_toml_sha1": _sha(toml_text)}
    write_json(run_dir_path / "status.json", row)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    package_root = str(Path(__file__).resolve().parents[1])  # importable even from an uninstalled checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "nbody_engine.runner", mode, "--config", "run.toml"]
    t0 = time.perf_counter()
    error = ""
    with open(run_dir_path / "stdout.log", "wb") as out, open(run_dir_path / "stderr.log", "wb") as err:
        try:
            proc = subprocess.Popen(cmd, cwd=run_dir_path, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            proc, error = None, f"cannot start the runner: {exc}"
        code = None
        cancelled = False
        while proc is not None:
            try:
                code = proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if not cancelled and _task_cancelled():
                    cancelled = True
                    proc.send_signal(signal.SIGINT)  # the runner checkpoints and exits 130
    wall = time.perf_counter() - t0
    if code == 0:
        status = STATUS_OK
    else:
        status = STATUS_FAILED
        if not error:
            error = _last_line(run_dir_path / "stderr.log")
            if cancelled:  # whether the runner saved a checkpoint or the SIGINT caught it starting up
                error = "cancelled: the sweep was interrupted"
            elif code is not None and code < 0:
                error = f"killed by {signal.Signals(-code).name}" + (f" ({error})" if error else "")
            error = error or f"exit status {code}"
    row.update(status=status, exit_code=code, error=error, wall_time_s=round(wall, 3),
               finished=datetime.now(UTC).isoformat(timespec="seconds"), **collect_metrics(output))
    write_json(run_dir_path / "status.json", row)
    return row


# --------------------------------------------------------------------------- results table

def _row(plan: SweepPlan, run: Run, record: Mapping) -> dict:
    row = {"id": run.id, **run.values}
    for column in plan.columns:
        if column not in row:
            row[column] = record.get(column)
    row["status"] = record.get("status") if record.get("status") in (STATUS_OK, STATUS_FAILED) else STATUS_PENDING
    row["run_dir"] = f"runs/{run.id}"
    return {c: row.get(c) for c in plan.columns}


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def write_results(plan: SweepPlan, rows: Mapping[str, dict]) -> dict:
    """Write results.json and results.csv (atomically); returns the JSON document."""
    ordered = [rows[run.id] for run in plan.runs]
    counts = {s: sum(r["status"] == s for r in ordered) for s in (STATUS_OK, STATUS_FAILED, STATUS_PENDING)}
    doc = {
        "sweep": plan.name, "mode": plan.mode, "config": plan.config_path,
        "grid": {a.column: list(a.values) for a in plan.axes},
        "grid_size": plan.total, "samples": plan.samples, "seed": plan.seed,
        "runs_total": len(ordered), **counts,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "columns": plan.columns, "runs": ordered,
    }
    write_json(plan.root / "results.json", doc)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=plan.columns, lineterminator="\n")
    writer.writeheader()
    for row in ordered:
        writer.writerow({c: _csv_cell(row.get(c)) for c in plan.columns})
    write_text(plan.root / "results.csv", buf.getvalue())
    return doc


# --------------------------------------------------------------------------- where the runs execute

@dataclass
class SlurmOptions:
    """``dask_jobqueue.SLURMCluster`` settings; None leaves a value to Dask's jobqueue config."""

    queue: str | None = None
    account: str | None = None
    walltime: str | None = None
    cores: int | None = None
    memory: str | None = None
    gpus: int = 0


def slurm_cluster_kwargs(opts: SlurmOptions | Mapping, log_directory: str | Path | None = None) -> dict:
    """Checked keyword arguments for ``SLURMCluster`` (raises InputError)."""
    if isinstance(opts, Mapping):
        unknown = set(opts) - set(SlurmOptions.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown SLURM option '{min(unknown)}'; the options are "
                             + ", ".join(SlurmOptions.__dataclass_fields__))
        opts = SlurmOptions(**opts)
    try:
        import dask
        import dask_jobqueue  # noqa: F401
    except ImportError:
        raise InputError(f"--slurm needs the dask-jobqueue package: {SLURM_HINT}") from None
    from dask.utils import parse_bytes

    if opts.walltime is not None and not _WALLTIME.match(opts.walltime):
        raise InputError(f"--slurm-walltime must look like HH:MM:SS (or D-HH:MM:SS, MM, ...), not {opts.walltime!r}")
    for flag, value in (("--slurm-cores", opts.cores), ("--slurm-gpus", opts.gpus)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0
                                  or (flag == "--slurm-cores" and value < 1)):
            raise InputError(f"{flag} must be a {'positive' if flag == '--slurm-cores' else 'non-negative'} "
                             f"integer, not {value!r}")
    if opts.memory is not None:
        try:
            parse_bytes(opts.memory)
        except (ValueError, TypeError):
            raise InputError(f"--slurm-memory must be an amount like 4GB or 500MiB, not {opts.memory!r}") from None
    for flag, value, key in (("--slurm-cores", opts.cores, "cores"), ("--slurm-memory", opts.memory, "memory")):
        if value is None and dask.config.get(f"jobqueue.slurm.{key}", None) is None:
            raise InputError(f"--slurm needs {flag} (or jobqueue.slurm.{key} in Dask's configuration)")
    kwargs: dict[str, Any] = {"processes": 1, "python": sys.executable}
    for key in ("queue", "account", "walltime", "cores", "memory"):
        if getattr(opts, key) is not None:
            kwargs[key] = getattr(opts, key)
    if opts.gpus:
        kwargs["job_extra_directives"] = [f"--gres=gpu:{opts.gpus}"]
    if log_directory is not None:
        kwargs["log_directory"] = str(log_directory)
    return kwargs


def local_worker_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _shield_from_ctrl_c() -> None:
    """In a local worker process: let Ctrl-C in the terminal pass. The sweep itself cancels and
    closes the cluster, and the runs (which reset this handler when they start) get the signal
    directly and stop as the runner does; without this, every worker prints a traceback."""
    try:
        signal.signal(signal.SIGINT, lambda signum, frame: None)
    except ValueError:  # not the worker's main thread: leave the default
        pass


@contextmanager
def _dask_client(plan: SweepPlan, todo: int, scheduler: str | None, slurm: SlurmOptions | Mapping | None,
                 workers: int | None, client, echo: Callable[[str], None]) -> Iterator[Any]:
    """A distributed Client for the sweep; what it starts, it closes."""
    if client is not None:
        yield client
        return
    from distributed import Client

    if scheduler is not None:
        try:
            c = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(f"cannot connect to the Dask scheduler at {scheduler!r}: {first}") from None
        try:
            n = len(c.scheduler_info().get("workers", {}))
            echo(f"sweep '{plan.name}': scheduler {scheduler} with {n} worker(s)"
                 + ("" if n else f"; waiting for workers (start them with: dask worker {scheduler})"))
            yield c
        finally:
            c.close()
        return
    if slurm is not None:
        from dask_jobqueue import SLURMCluster

        kwargs = slurm_cluster_kwargs(slurm, plan.root / "slurm-logs")
        jobs = workers or 1
        cluster = SLURMCluster(**kwargs)
        try:
            cluster.scale(jobs=jobs)
            c = Client(cluster)
            echo(f"sweep '{plan.name}': {jobs} SLURM job(s) submitted; dashboard {cluster.dashboard_link}")
            try:
                yield c
            finally:
                c.close()
        finally:
            cluster.close()
        return
    import logging

    from distributed import LocalCluster

    n = workers or max(1, min(local_worker_count(), todo))
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    try:
        c = Client(cluster)
        c.run(_shield_from_ctrl_c)
        echo(f"sweep '{plan.name}': local cluster of {n} worker(s); dashboard {cluster.dashboard_link}")
        try:
            yield c
        finally:
            c.close()
    finally:
        cluster.close()


# --------------------------------------------------------------------------- the sweep

def _describe(run: Run) -> str:
    return " ".join(f"{k}={json.dumps(v) if isinstance(v, (list, str)) else v}" for k, v in run.values.items())


def run_sweep(config: str | Path | Mapping | None, grid: str | Path | Mapping, *, mode: str = "both",
              samples: int | None = None, seed: int = 0, name: str | None = None,
              scheduler: str | None = None, slurm: SlurmOptions | Mapping | None = None,
              workers: int | None = None, client=None, data_dir: str | Path | None = None,
              echo: Callable[[str], None] | None = print) -> dict:
    """Run a sweep; returns the results document (what results.json holds).

    ``config``/``grid``: TOML paths or parsed mappings. Runs on ``client`` (a
    ``distributed.Client``) when given, else the cluster at ``scheduler``, else SLURM jobs
    (``slurm``: :class:`SlurmOptions` or a dict of its fields; ``workers`` = jobs), else a
    ``LocalCluster`` of ``workers`` processes (default: one per core). Bad input raises
    InputError before anything is written; failed runs are recorded, not raised.
    """
    echo = echo or (lambda _msg: None)
    if sum(x is not None for x in (scheduler, slurm, client)) > 1:
        raise InputError("give at most one of scheduler, slurm and client")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise InputError(f"'workers' must be a positive integer, not {workers!r}")
    if workers is not None and (scheduler is not None or client is not None):
        raise InputError("--workers sizes a local or SLURM cluster; an existing scheduler has its own workers")
    plan = plan_sweep(config, grid, mode=mode, samples=samples, seed=seed, name=name, data_dir=data_dir)
    if slurm is not None:
        slurm_cluster_kwargs(slurm)  # the dask-jobqueue import and the options, before anything is written
    rows: dict[str, dict] = {}
    todo: list[Run] = []
    for run in plan.runs:
        record = read_status(plan.run_dir(run))
        done = (record.get("status") == STATUS_OK and record.get("mode") == plan.mode
                and record.get("run_toml_sha1") == _sha(run.toml))
        rows[run.id] = _row(plan, run, record if done else {"attempts": record.get("attempts")})
        if not done:
            todo.append(run)
    skipped = len(plan.runs) - len(todo)
    size = f"{len(plan.runs)} of {plan.total}" if len(plan.runs) < plan.total else f"{len(plan.runs)}"
    echo(f"sweep '{plan.name}': {size} run(s), {skipped} finished earlier, {len(todo)} to run ({plan.root})")
    if not todo:
        return write_results(plan, rows)
    with _dask_client(plan, len(todo), scheduler, slurm, workers, client, echo) as dask_client:
        from distributed import as_completed

        for run in todo:
            run_dir = plan.run_dir(run)
            path = run_dir / "run.toml"
            if not path.is_file() or path.read_text() != run.toml:
                write_text(path, run.toml)
        write_results(plan, rows)
        token = uuid.uuid4().hex[:8]
        futures = {dask_client.submit(execute_run, str(plan.run_dir(run)), plan.mode, pure=False, retries=0,
                                      key=f"nbody-sweep-{plan.name}-{run.id}-{token}"): run for run in todo}
        finished = 0
        try:
            for future in as_completed(futures):
                run = futures[future]
                if future.status == "finished":
                    record = future.result()
                else:  # the task itself failed (a worker died, the task was lost): record it
                    try:
                        exc = future.exception()
                        message = f"dask: {type(exc).__name__}: {exc}".splitlines()[0]
                    except Exception as err:  # noqa: BLE001 - cancelled, or anything Dask raises: record it
                        message = f"dask: {type(err).__name__}"
                    record = {**read_status(plan.run_dir(run)), "status": STATUS_FAILED, "error": message}
                    write_json(plan.run_dir(run) / "status.json", record)
                rows[run.id] = _row(plan, run, record)
                write_results(plan, rows)
                finished += 1
                row = rows[run.id]
                tail = f": {row['error']}" if row["status"] != STATUS_OK else ""
                wall = f"{row['wall_time_s']:.1f} s" if row.get("wall_time_s") is not None else "-"
                echo(f"[{finished}/{len(todo)}] {row['status']:<6} {run.id}  {_describe(run)}  {wall}{tail}")
        except BaseException:
            dask_client.cancel(list(futures))
            write_results(plan, rows)
            raise
    doc = write_results(plan, rows)
    echo(f"sweep '{plan.name}': {doc['ok']} ok, {doc['failed']} failed; results in {plan.root / 'results.csv'}")
    return doc


# --------------------------------------------------------------------------- the CLI (nbody-runner sweep)

def _int_at_least(minimum: int):
    """An argparse type: an integer no smaller than ``minimum``."""
    import argparse

    what = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
        return value
    return parse


SLURM_FLAGS = ("queue", "account", "walltime", "cores", "memory", "gpus")


def add_sweep_parser(subparsers) -> None:
    """Add ``sweep`` to the runner's subcommands."""
    help_text = "run a grid of configs (local cores, a Dask cluster or SLURM); see docs/SWEEPS.md"
    sub = subparsers.add_parser("sweep", help=help_text, description=help_text)
    sub.add_argument("--config", metavar="FILE", required=True, help="base TOML (top-level keys, [train], [simulate])")
    sub.add_argument("--grid", metavar="FILE", required=True,
                     help="TOML listing values per key, e.g. steps = [100, 200], [train] history_len = [0, 5]")
    sub.add_argument("--mode", dest="sweep_mode", choices=SWEEP_MODES, default="both",
                     help="what each run does (default: both)")
    sub.add_argument("--name", metavar="SWEEP_NAME", help="folder under data/ (default: the grid file's name)")
    sub.add_argument("--samples", metavar="K", type=_int_at_least(1),
                     help="run K random points of the grid instead of all of it")
    sub.add_argument("--seed", metavar="S", type=_int_at_least(0), default=0,
                     help="seed of the --samples draws (default 0; the runs' own seed is the key 'seed')")
    sub.add_argument("--workers", metavar="N", type=_int_at_least(1),
                     help="local worker processes (default: one per core) or, with --slurm, SLURM jobs (default 1)")
    where = sub.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing Dask cluster, e.g. tcp://host:8786")
    where.add_argument("--slurm", action="store_true", help=f"run in SLURM jobs via dask-jobqueue ({SLURM_HINT})")
    group = sub.add_argument_group("SLURM jobs (with --slurm)")
    group.add_argument("--slurm-queue", metavar="Q", help="partition (#SBATCH -p)")
    group.add_argument("--slurm-account", metavar="A", help="account (#SBATCH -A)")
    group.add_argument("--slurm-walltime", metavar="HH:MM:SS", help="time limit of each job")
    group.add_argument("--slurm-cores", metavar="C", type=_int_at_least(1),
                       help="cores per job = runs at a time per job")
    group.add_argument("--slurm-memory", metavar="MEM", help="memory per job, e.g. 4GB")
    group.add_argument("--slurm-gpus", metavar="G", type=_int_at_least(0), default=0,
                       help="GPUs per job (--gres=gpu:G)")


def main_from_args(args, prog: str = "nbody-runner") -> int:
    """``nbody-runner sweep``: exit 0 when every run is ok, 1 when some failed, 2 on bad input, 130 on Ctrl-C."""
    given = [f for f in SLURM_FLAGS if getattr(args, f"slurm_{f}") not in (None, 0)]
    try:
        if given and not args.slurm:
            raise InputError(f"--slurm-{given[0]} needs --slurm")
        slurm = SlurmOptions(**{f: getattr(args, f"slurm_{f}") for f in SLURM_FLAGS}) if args.slurm else None
        doc = run_sweep(args.config, args.grid, mode=args.sweep_mode, samples=args.samples, seed=args.seed,
                        name=args.name, scheduler=args.scheduler, slurm=slurm, workers=args.workers)
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished runs are kept and a rerun resumes", file=sys.stderr)
        return 130
    return 0 if doc["failed"] == 0 and doc["pending"] == 0 else 1


__all__ = ["Axis", "Run", "SlurmOptions", "SweepPlan", "collect_metrics", "execute_run", "plan_sweep", "read_grid",
           "run_id", "run_sweep", "slurm_cluster_kwargs", "write_results"]
