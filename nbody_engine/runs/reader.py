"""The one reader of a run folder ``data/<save_name>/`` (what :mod:`.directory`, the jobs and the
progress log write), as it stands: while its run goes on, or long after on another machine.
The explorer's Runs tab, sweeps, evaluation and notebooks read runs through it; nothing here writes.

- :func:`read_config`, :func:`phase_setting`: ``config.toml`` and what it sets for a phase;
- :func:`read_metrics`, :func:`last_metrics`: ``metrics.jsonl``, whole or from an offset, and its last epoch;
- :func:`sim_summaries`, :func:`latest_summary`, :func:`summary_value`: ``sim/<label>/summary.json``,
  and the one reduction of a batch's per-system values;
- :func:`sim_series`: ``sim/<label>/trajectory.npz`` as per-system series with its relative errors;
- :func:`read_notes`: ``notes.json``, the researcher's notes and tags of the run;
- :func:`run_status`: running (the directory's lock), or how the run ended (``progress.jsonl``);
- :func:`final_metrics`: a run's last epoch and latest simulation, reduced, in one flat dict;
- :func:`list_runs`: the run folders under ``data/``, newest first.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np

from ..config.schema import Config
from ..events import json_safe
from ..physics.gravity import relative_errors
from .directory import NOTES_FILE, lock_holder
from .progress_log import last_record

ENDINGS = {"RunFinished": "finished", "RunCancelledEvent": "stopped", "RunFailed": "failed"}
SMALLEST = ("dt_min",)  # summary values whose batch reduction is the smallest, not the largest
MEAN = ("steps_per_period",)  # a batch's cost: the mean over its systems
TRAIN_METRICS = ("loss", "acceptance_rate", "rel_dE_max")
SIM_METRICS = ("steps", "max_rel_energy_error", "steps_per_period")


def list_runs(data_dir: str | Path) -> list[str]:
    """Run directories (those with a config.toml) under ``data_dir``, newest first."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return []
    runs = [p for p in data_dir.iterdir() if (p / "config.toml").is_file()]
    return [p.name for p in sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)]


def read_config(root: str | Path) -> dict:
    """``config.toml`` of the run folder ``root``, as the TOML document (sections as dicts)."""
    with (Path(root) / "config.toml").open("rb") as fh:
        return tomllib.load(fh)


def phase_setting(doc: dict, phase: str, key: str):
    """``key`` as a run's config.toml sets it for ``phase`` (its section, else the top level,
    else the schema's default)."""
    section = doc.get(phase, {})
    return section[key] if key in section else doc.get(key, Config.param[key].default)


def read_metrics(path: str | Path, offset: int = 0) -> tuple[list[dict], int]:
    """The complete lines of a metrics file (a run folder's ``metrics.jsonl``, or the folder
    itself) from byte ``offset``, and the offset after them: a follower reads on from there."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        return [], offset
    with path.open("rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    lines = [json.loads(line) for line in complete.decode().splitlines() if line.strip()]
    return lines, offset + len(complete)


def last_metrics(root: str | Path) -> dict:
    """The last finished epoch's metrics of a run folder, {} before the first."""
    return last_record(Path(root) / "metrics.jsonl") or {}


def sim_summaries(root: str | Path) -> dict[str, dict]:
    """``sim/<label>/summary.json`` of a run folder, by label."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(root).glob("sim/*/summary.json"))}


def latest_summary(root: str | Path) -> dict:
    """The summary of the simulation written last ({} without one)."""
    paths = sorted(Path(root).glob("sim/*/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(paths[-1].read_text()) if paths else {}


def summary_value(summary: dict, key: str):
    """A summary's ``key`` as one number: a batch of systems (a list) reduced to its worst, the
    largest value (the smallest for ``dt_min``), except the cost ``steps_per_period``, its mean
    over the systems; None for a value no system has."""
    value = summary.get(key)
    if not isinstance(value, list):
        return value
    present = [v for v in value if v is not None]
    if not present:
        return None
    if key in MEAN:
        return sum(present) / len(present)
    return (min if key in SMALLEST else max)(present)


def sim_series(path: str | Path) -> dict[str, np.ndarray]:
    """A ``trajectory.npz`` as per-system series: time, dt, rel_dE, rel_dL (S, B); position (S, B, N, D)."""
    with np.load(path) as data:
        rel_dE, rel_dL = relative_errors(data["energy"], data["angular_momentum"])
        return {"time": data["time"], "dt": data["dt"], "rel_dE": rel_dE, "rel_dL": rel_dL,
                "position": data["position"]}


def read_notes(root: str | Path) -> dict:
    """``notes.json`` of a run folder as ``{"notes": str, "tags": [str]}`` (empty without the
    file); raises ValueError naming the file when it is no such document."""
    path = Path(root) / NOTES_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {"notes": "", "tags": []}
    except ValueError as err:
        raise ValueError(f"{path} is not JSON ({err}); fix it or delete it") from None
    notes, tags = (doc.get("notes", ""), doc.get("tags", [])) if isinstance(doc, dict) else (None, None)
    if not isinstance(notes, str) or not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError(f'{path} is not {{"notes": "text", "tags": ["text", ...]}}; fix it or delete it')
    return {"notes": notes, "tags": tags}


def run_status(root: str | Path) -> str:
    """running (with the pid), finished, stopped, failed, or interrupted (a process that died
    mid-run); runs from before the progress log: finished or incomplete."""
    root = Path(root)
    pid = lock_holder(root)
    if pid is not None:
        return f"running (pid {pid})" if pid > 0 else "running"  # -1: starting, its pid not written yet
    last = last_record(root / "progress.jsonl")
    if last is not None:
        return ENDINGS.get(last["event"], "interrupted")
    return "finished" if (root / "sim").is_dir() or (root / "model").is_dir() else "incomplete"


def final_metrics(root: str | Path) -> dict:
    """What a run folder ended with, strict-JSON ready (:func:`~nbody_engine.events.json_safe`):
    TRAIN_METRICS of its last epoch and SIM_METRICS of its latest simulation (a batch reduced by
    :func:`summary_value`); a metric the run has not written, or a file that cannot be read, is left out."""
    out = {}
    try:
        last = last_metrics(root)
    except (OSError, ValueError):
        last = {}
    out.update({key: json_safe(last[key]) for key in TRAIN_METRICS if key in last})
    try:
        summary = latest_summary(root)
    except (OSError, ValueError):
        summary = {}
    for key in SIM_METRICS:
        value = summary_value(summary, key)
        if value is not None:
            out[key] = json_safe(value)
    return out
