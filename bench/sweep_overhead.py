"""How much faster a sweep of short runs goes on two warm workers than the same runs one after another.

Issue 31's measure: 16 short runs (a two-body ``simulate`` of a few hundred steps each, so that
start-up, not stepping, is most of a run) done two ways in one sitting, on one machine:

- one after another: ``nbody-runner simulate --config run.toml`` for each run's ``run.toml``, a
  fresh Python process each (what a shell loop or a SLURM array of one-run jobs does);
- ``nbody-runner sweep --workers 2`` over the same 16 points: a LocalCluster of two workers,
  each forking its runs from a zygote that imported torch once; the sweep's wall time includes
  starting the cluster and the zygotes.

The ratio is (one after another) / (sweep); the target is >= 1.6x. Each way is timed ``--repeat``
times, alternating, and the medians are compared.

    python bench/sweep_overhead.py                 # ~2-3 min on 2 cores
    python bench/sweep_overhead.py --runs 16 --steps 300 --repeat 3

Prints a markdown table and writes bench/results/sweep_overhead.json.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import engine_env, machine, machine_note, markdown_table, median, runner_cmd, write_results


def inputs(folder: Path, runs: int, steps: int) -> None:
    """A base config and a grid of ``runs`` seeds: 16 short two-body simulations."""
    (folder / "base.toml").write_text(f"num_particles = 2\nnum_orbits = 1\n[simulate]\nsteps = {steps}\n")
    (folder / "grid.toml").write_text(f"seed = {list(range(1, runs + 1))}\n")


def sweep_once(folder: Path) -> float:
    """Wall seconds of the sweep on 2 local workers, from a clean folder."""
    shutil.rmtree(folder / "data", ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run(runner_cmd("sweep", "--config", "base.toml", "--grid", "grid.toml", "--mode", "simulate",
                                     "--workers", "2", "--name", "bench"),
                          cwd=folder, env=engine_env(), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the sweep failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def one_after_another(folder: Path) -> float:
    """Wall seconds of the sweep's runs, each ``nbody-runner simulate`` in a fresh process, in turn."""
    run_dirs = sorted((folder / "data" / "bench" / "runs").iterdir())
    start = time.perf_counter()
    for run_dir in run_dirs:
        shutil.rmtree(run_dir / "data", ignore_errors=True)
        done = subprocess.run(runner_cmd("simulate", "--config", "run.toml"), cwd=run_dir, env=engine_env(),
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"a run failed in {run_dir}:\n{done.stderr}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    info = machine()
    sweep_s, serial_s = [], []
    with tempfile.TemporaryDirectory(prefix="nbody-bench-sweep-") as tmp:
        folder = Path(tmp)
        inputs(folder, args.runs, args.steps)
        for _ in range(args.repeat):
            sweep_s.append(sweep_once(folder))
            serial_s.append(one_after_another(folder))
    ratio = median(serial_s) / median(sweep_s)
    rows = [["one after another (fresh process each)", median(serial_s), median(serial_s) / args.runs, 1.0],
            ["nbody-runner sweep --workers 2 (warm)", median(sweep_s), median(sweep_s) / args.runs, ratio]]
    print(markdown_table([f"{args.runs} runs of {args.steps} steps", "wall s (median)", "s per run", "speed-up"],
                         rows))
    print(f"\nspeed-up {ratio:.2f}x (target >= 1.6x); sweep {[round(s, 1) for s in sweep_s]} s, one after another "
          f"{[round(s, 1) for s in serial_s]} s")
    print(machine_note(info))
    path = write_results("sweep_overhead", {"machine": info, "runs": args.runs, "steps": args.steps,
                                            "sweep_s": sweep_s, "one_after_another_s": serial_s, "speedup": ratio})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
