"""Ctrl-C to a local sweep at each stage: how long until the sweep says it was interrupted (its
runs stopped and recorded, its cluster closed) and until its process has ended.

A sweep of 4 long fixed-step simulations on 2 local workers; SIGINT goes to the sweep (as Ctrl-C
in its terminal would, to it alone: the sweep stops its runs itself) at one of these stages:

- ``planning``: right after it says it is planning the grid;
- ``starting``: half a second after it says how many runs it has (its local cluster is starting);
- ``warming``: right after it says its cluster is ready (each worker's warm parent is importing
  torch; the runs wait for it);
- ``running``: once 2 runs hold their folders and a few seconds have passed.

Target (issue 30): exit 130 within 2 s at any stage.

    python bench/sweep_interrupt.py [--repeat 3] [--at running starting ...]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_results

BASE = 'seed = 1\nnum_orbits = 1\nnum_particles = 2\ndt = 0.001\nrecord_every = 1000\nsteps = 3000000\n'
RUNNING_S = 3.0  # how long the runs execute before the interrupt
STAGES = ("planning", "starting", "warming", "running")
SAYS = {"planning": "planning the sweep", "starting": "run(s),", "warming": "local cluster of"}
STARTING_S = 0.5  # after it says how many runs it has: into its cluster's start, not just before it


def running_runs(root: Path) -> int:
    return len(list(root.glob("runs/*/data/*")))


def _wait_for_stage(proc: subprocess.Popen, cwd: Path, stage: str) -> None:
    """Return when the sweep is at ``stage`` (see the module's docstring)."""
    if stage in SAYS:
        for line in proc.stdout:
            if SAYS[stage] in line:
                time.sleep(STARTING_S if stage == "starting" else 0)
                return
        raise SystemExit(f"the sweep ended before the '{stage}' stage: {proc.stderr.read()}")
    while running_runs(cwd / "data" / "long") < 2:
        if proc.poll() is not None:
            raise SystemExit(f"the sweep ended before its runs started: {proc.stderr.read()}")
        time.sleep(0.2)
    time.sleep(RUNNING_S)


def interrupt_once(cwd: Path, stage: str) -> dict:
    (cwd / "base.toml").write_text(BASE)
    (cwd / "grid.toml").write_text("seed = [1, 2, 3, 4]\n")
    cmd = [sys.executable, "-m", "nbody_engine.runner", "sweep", "--config", "base.toml", "--grid", "grid.toml",
           "--mode", "simulate", "--name", "long", "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for_stage(proc, cwd, stage)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    said = None
    for line in proc.stderr:
        if "interrupted" in line:
            said = time.monotonic() - sent
    proc.wait()
    proc.stdout.close()
    return {"stage": stage, "exit_code": proc.returncode, "said_s": said, "ended_s": time.monotonic() - sent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--at", nargs="+", choices=STAGES, default=list(STAGES), help="the stages (default: all)")
    args = parser.parse_args()
    found, medians = [], {}
    for stage in args.at:
        tries = []
        for k in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                tries.append(interrupt_once(Path(tmp), stage))
            said = tries[-1]["said_s"]
            print(f"{stage} try {k + 1}: exit {tries[-1]['exit_code']}, 'interrupted' after "
                  f"{'-' if said is None else f'{said:.2f}'} s, ended after {tries[-1]['ended_s']:.2f} s", flush=True)
        medians[stage] = statistics.median(t["ended_s"] for t in tries)
        found += tries
    for stage, median in medians.items():
        print(f"| Ctrl-C while {stage} -> sweep ended (median of {args.repeat}) | {median:.2f} s | < 2 s |")
    write_results("sweep_interrupt", {"tries": found, "ended_median_s": medians})


if __name__ == "__main__":
    main()
