"""What a sweep plan is: the runs it holds (id, grid values, run.toml text) and where they go.
:mod:`.plan` makes one; :mod:`.results` and the executors read it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .grid import Axis


@dataclass
class Run:
    id: str
    index: int  # position in the full cartesian product
    values: dict[str, Any]  # column -> value
    toml: str  # the run.toml text

    def describe(self) -> str:
        """``key=value`` pairs of the run's grid values."""
        return " ".join(f"{k}={json.dumps(v) if isinstance(v, (list, str)) else v}" for k, v in self.values.items())


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
    # a search: its .search_options.SearchOptions (which need .results, which needs this module);
    # Optuna draws ``search.trials`` points and ``runs`` grows as it does
    search: Any = None
    make_run: Callable[..., Run] | None = None  # values -> a checked Run of this sweep (raises InputError)
    base_record: dict = field(default_factory=dict)  # the base config's path, text and SHA-1
    grid_record: dict = field(default_factory=dict)  # the grid's
    provenance: dict | None = None  # this invocation's record (set by run_sweep)

    def run_dir(self, run: Run) -> Path:
        return self.root / "runs" / run.id

    def add_run(self, run: Run) -> None:
        """A search's new run (a trial's point), once."""
        if all(r.id != run.id for r in self.runs):
            self.runs.append(run)
