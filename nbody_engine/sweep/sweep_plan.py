"""What a sweep plan is: the runs it holds (id, grid values, run.toml text) and where they go.
:mod:`.plan` makes one; :mod:`.results` and the executors read it."""

from __future__ import annotations

import json
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

    def run_dir(self, run: Run) -> Path:
        return self.root / "runs" / run.id
