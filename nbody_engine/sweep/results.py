"""The results of a sweep: each run's ``status.json`` (written by the run's task) and the
table of all runs, ``results.json`` and ``results.csv`` (written by the sweep as runs end).

A run's status is ``ok`` (the runner exited 0), ``failed``, ``cancelled`` (interrupted: the
sweep was stopped, or its worker or driver went away), ``pruned`` (a search stopped it: its
per-epoch metric lagged behind the other trials'), ``running`` (in status.json while a runner
owns the run) or ``pending`` (not run yet)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..runs.directory import lock_holder, write_json, write_text
from ..runs.reader import SIM_METRICS, TRAIN_METRICS
from .sweep_plan import Run, SweepPlan

STATUS_OK, STATUS_FAILED, STATUS_CANCELLED = "ok", "failed", "cancelled"
STATUS_RUNNING, STATUS_PENDING, STATUS_PRUNED = "running", "pending", "pruned"
STATUSES = (STATUS_OK, STATUS_FAILED, STATUS_CANCELLED, STATUS_PRUNED, STATUS_RUNNING, STATUS_PENDING)
ENDED = (STATUS_OK, STATUS_PRUNED)  # a run that ended like this is done: a rerun keeps it
# where a run ran: machine, Dask worker, SLURM job id, the GPU it was given and the device it used
PROVENANCE = ("host", "worker", "slurm_job", "gpu", "device")


def metric_columns(mode: str) -> tuple[str, ...]:
    """The result columns a run of ``mode`` fills in from its outputs."""
    return {"train": TRAIN_METRICS, "simulate": SIM_METRICS}.get(mode, TRAIN_METRICS + SIM_METRICS)


def plot_metrics(doc: Mapping) -> list[str]:
    """The numeric columns of a results document that a plot can show (not the swept keys)."""
    swept = set(doc.get("grid") or {})
    return [c for c in (*metric_columns(doc.get("mode", "both")), "wall_time_s") if c not in swept]


def toml_sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def read_status(run_dir: str | Path) -> dict:
    """A run's ``status.json``, or {} when there is none (or it cannot be read)."""
    try:
        return json.loads((Path(run_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


INTERRUPTED = "cancelled: its sweep ended while it ran"


def settled_record(run_dir: str | Path, record: Mapping) -> dict:
    """``record`` as it really stands: one that says ``running`` while no task holds the run
    (its sweep or worker died before it could say so) is ``cancelled``."""
    if record.get("status") != STATUS_RUNNING or lock_holder(run_dir) is not None:
        return dict(record)
    return {**record, "status": STATUS_CANCELLED, "error": INTERRUPTED}


def is_done(plan: SweepPlan, run: Run, record: Mapping) -> bool:
    """Whether ``record`` says the run finished (ok, or pruned by a search) with the plan's mode
    and run.toml."""
    return (record.get("status") in ENDED and record.get("mode") == plan.mode
            and record.get("run_toml_sha1") == toml_sha1(run.toml))


def runs_to_do(plan: SweepPlan) -> list[Run]:
    """The runs a sweep of ``plan`` executes: all but those ended with an unchanged run.toml."""
    return [run for run in plan.runs if not is_done(plan, run, read_status(plan.run_dir(run)))]


def result_row(plan: SweepPlan, run: Run, record: Mapping) -> dict:
    """The table row of ``run`` from its status record."""
    row = {"id": run.id, **run.values}
    for column in plan.columns:
        if column not in row:
            row[column] = record.get(column)
    row["status"] = record.get("status") if record.get("status") in STATUSES else STATUS_PENDING
    row["run_dir"] = f"runs/{run.id}"
    return {c: row.get(c) for c in plan.columns}


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def counts(rows) -> dict[str, int]:
    """How many rows have each status."""
    return {s: sum(r.get("status") == s for r in rows) for s in STATUSES}


def write_results(plan: SweepPlan, rows: Mapping[str, dict], **extra) -> dict:
    """Write results.json and results.csv (atomically); returns the JSON document. ``extra``
    goes into the document (e.g. ``stopped``: why the sweep ended early)."""
    ordered = [rows[run.id] for run in plan.runs]
    doc = {
        "sweep": plan.name, "mode": plan.mode, "config": plan.config_path,
        "grid": {a.column: a.describe() for a in plan.axes},
        "grid_size": plan.total, "samples": plan.samples, "seed": plan.seed,
        "search": None if plan.search is None else vars(plan.search), "provenance": plan.provenance,
        "runs_total": len(ordered), **counts(ordered),
        "updated": datetime.now(UTC).isoformat(timespec="seconds"), **extra,
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


def read_results(root: str | Path, live: bool = False) -> dict | None:
    """``results.json`` of the sweep folder ``root``, or None while there is none.

    ``live``: every row as its run's own ``status.json`` has it now, so a run that is running
    shows as ``running``, one that ended after the table was last written (its sweep was
    killed) with its outcome, and one whose sweep died under it as ``cancelled``.
    The JSON rather than results.csv: it keeps the values' types (lists, booleans, unset)."""
    root = Path(root)
    try:
        doc = json.loads((root / "results.json").read_text())
    except (OSError, ValueError):
        return None
    if live:
        keep = {"id", "run_dir", *(doc.get("grid") or {})}
        for row in doc.get("runs") or []:
            run_dir = root / str(row.get("run_dir") or f"runs/{row.get('id')}")
            record = settled_record(run_dir, read_status(run_dir))
            if record.get("status") in STATUSES and record.get("mode", doc.get("mode")) == doc.get("mode"):
                row.update({k: record.get(k) for k in row if k not in keep})
        doc.update(counts(doc.get("runs") or []))
    return doc
