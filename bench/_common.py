"""Shared helpers of the benchmark scripts: machine facts, tables, result files.

Only the standard library (and torch, for its version and thread count) is used, so the
scripts measure with the same public tools anyone can re-run: ``time.perf_counter``,
``resource``/``os.wait4`` and ``subprocess``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """What ``lscpu | grep 'Model name'`` says (falls back to /proc/cpuinfo, then platform)."""
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.strip().startswith("Model name"):
                return line.split(":", 1)[1].strip()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def engine_revision() -> str | None:
    """``git describe``-like id of the checkout measured: short HEAD, plus "+dirty" when
    nbody_engine/ or configs/ differ from it."""
    if not shutil.which("git"):
        return None
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=False)
    if head.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "nbody_engine", "configs"], cwd=REPO,
                           capture_output=True, text=True, check=False).stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")


def machine() -> dict:
    """Facts about where the figures come from; ``load_avg_before`` says whether it was quiet."""
    info = {
        "revision": engine_revision(),
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_before": load_average(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def machine_note(info: dict) -> str:
    load = info.get("load_avg_before")
    busy = load is not None and info.get("nproc") and load[0] > 0.5
    text = (f"revision {info.get('revision')}; "
            f"machine: {info['cpu']}, {info['nproc']} CPUs, Python {info['python']}, torch {info.get('torch', '?')}; "
            f"load average before measuring: {load}")
    if busy:
        text += " (the machine was busy with other processes: figures are pessimistic)"
    return text


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return fmt(v)
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float) -> str:
    """A figure with three significant digits and thousands separators (1.23e+06 for big ones)."""
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    ax = abs(x)
    if ax >= 1e6:
        return f"{x:.3g}"
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 1 or ax == 0:
        return f"{x:.3g}" if ax < 100 else f"{x:.0f}"
    return f"{x:.3g}"


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=_jsonable) + "\n")
    return path


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def engine_env(threads: int | None = None, extra: dict | None = None) -> dict:
    """Environment for a child running the engine from this checkout (PYTHONPATH = repo).

    ``threads=None`` leaves OMP_NUM_THREADS unset, so the engine picks its default (1 thread)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(extra or {})
    return env


def runner_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "nbody_engine.runner", *args]


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def run_with_rusage(cmd: list[str], cwd: Path, env: dict, log_path: Path, timeout: float | None
                    ) -> tuple[int, float, int]:
    """Run ``cmd``; return (exit status, wall seconds, peak RSS in bytes of that child alone)."""
    with log_path.open("w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = None if timeout is None else start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
            time.sleep(0.05)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return proc.returncode, wall, usage.ru_maxrss * scale
