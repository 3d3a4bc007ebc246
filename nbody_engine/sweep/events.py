"""What a sweep reports as it goes, to any number of sinks (``run_sweep(..., sink=...)``).
Each event's ``text`` is the line the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SweepStarted:
    name: str
    runs: int
    total: int  # size of the full grid (runs < total with --samples)
    skipped: int  # runs finished earlier
    todo: int
    root: str

    @property
    def text(self) -> str:
        size = f"{self.runs} of {self.total}" if self.runs < self.total else f"{self.runs}"
        return f"sweep '{self.name}': {size} run(s), {self.skipped} finished earlier, {self.todo} to run ({self.root})"


@dataclass(frozen=True)
class ClusterReady:
    name: str
    label: str  # what runs the tasks: "local cluster of 2 worker(s); dashboard http://..."

    @property
    def text(self) -> str:
        return f"sweep '{self.name}': {self.label}"


@dataclass(frozen=True)
class RunEnded:
    row: dict  # the run's row of the results table
    description: str  # its grid values as key=value
    done: int
    todo: int

    @property
    def text(self) -> str:
        row = self.row
        tail = f": {row['error']}" if row["status"] != "ok" and row.get("error") else ""
        wall = f"{row['wall_time_s']:.1f} s" if row.get("wall_time_s") is not None else "-"
        where = row.get("slurm_job") and f"  job {row['slurm_job']}" or ""
        return f"[{self.done}/{self.todo}] {row['status']:<9} {row['id']}  {self.description}  {wall}{where}{tail}"


@dataclass(frozen=True)
class WorkersNotice:
    """Something about the workers: none alive (and why), a job that ended, a resubmission."""

    name: str
    message: str

    @property
    def text(self) -> str:
        return f"sweep '{self.name}': {self.message}"


@dataclass(frozen=True)
class SweepEnded:
    doc: dict = field(repr=False)  # the results document
    stopped: str | None = None  # why the sweep ended before every run did, or None
    results_path: str = ""

    @property
    def text(self) -> str:
        d = self.doc
        shown = ("ok", "failed", "cancelled", "pruned", "pending")
        counts = ", ".join(f"{d.get(s, 0)} {s}" for s in shown if d.get(s, 0) or s in ("ok", "failed"))
        head = f"sweep '{d['sweep']}' stopped ({self.stopped})" if self.stopped else f"sweep '{d['sweep']}'"
        return f"{head}: {counts}; results in {self.results_path}"
