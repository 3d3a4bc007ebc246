"""``nbody-runner`` started in the background by a test, its output going to a file.

Not to a pipe: one that nobody reads while the run goes on fills up (64 KiB, about 900 epochs of
training log lines) and then blocks the run, which can then not even answer SIGTERM.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


class BackgroundRun(subprocess.Popen):
    """``python -m nbody_engine.runner *args`` in ``cwd``; its standard output and error go to
    ``cwd/log``."""

    def __init__(self, cwd: Path, *args: str, log: str = "runner.log", **popen):
        self.log = Path(cwd) / log
        with self.log.open("w") as out:
            super().__init__([sys.executable, "-m", "nbody_engine.runner", *args], cwd=cwd, stdout=out,
                             stderr=subprocess.STDOUT, **popen)

    def output(self) -> str:
        return self.log.read_text()
