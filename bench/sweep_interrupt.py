"""Ctrl-C while a local sweep's runs execute: how long until the sweep says it was interrupted
(its runs stopped and recorded, its cluster closed) and until its process has ended.

A sweep of 4 long fixed-step simulations on 2 local workers; once 2 runs hold their folders and a
few seconds have passed, SIGINT goes to the sweep (as Ctrl-C in its terminal would, to it alone:
the sweep stops its runs itself). Target (issue 30): exit 130 within 2 s.

    python bench/sweep_interrupt.py [--repeat 3]
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


def running_runs(root: Path) -> int:
    return len(list(root.glob("runs/*/data/*")))


def interrupt_once(cwd: Path) -> dict:
    (cwd / "base.toml").write_text(BASE)
    (cwd / "grid.toml").write_text("seed = [1, 2, 3, 4]\n")
    cmd = [sys.executable, "-m", "nbody_engine.runner", "sweep", "--config", "base.toml", "--grid", "grid.toml",
           "--mode", "simulate", "--name", "long", "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    while running_runs(cwd / "data" / "long") < 2:
        if proc.poll() is not None:
            raise SystemExit(f"the sweep ended before its runs started: {proc.stderr.read()}")
        time.sleep(0.2)
    time.sleep(RUNNING_S)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    said = None
    for line in proc.stderr:
        if "interrupted" in line:
            said = time.monotonic() - sent
    proc.wait()
    return {"exit_code": proc.returncode, "said_s": said, "ended_s": time.monotonic() - sent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    found = []
    for k in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            found.append(interrupt_once(Path(tmp)))
        print(f"try {k + 1}: exit {found[-1]['exit_code']}, 'interrupted' after {found[-1]['said_s']:.2f} s, "
              f"ended after {found[-1]['ended_s']:.2f} s", flush=True)
    median = statistics.median(f["ended_s"] for f in found)
    print(f"| Ctrl-C while runs execute -> sweep ended (median of {args.repeat}) | {median:.2f} s | < 2 s |")
    write_results("sweep_interrupt", {"tries": found, "ended_median_s": median})


if __name__ == "__main__":
    main()
