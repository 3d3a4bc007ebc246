"""Training throughput and time to quality, through the real CLI.

Runs ``python -m nbody_engine.runner train --config <config>`` in a subprocess, in a temporary
working directory (so ``data/`` lands there), for ``configs/kepler.toml`` (two-body, 16 orbits)
and ``configs/example.toml`` (the spec's 4-body history model). From the process and from
``data/<save_name>/metrics.jsonl`` it reports:

- wall time of the process (imports, checkpoints and report PNG included) and of the epochs
  alone (the sum of ``epoch_time_s``);
- epochs/s, accepted steps/s (``accepted_steps``: accepted attempts, each ``n_steps`` leapfrog
  steps) and attempts/s, over the epochs' time;
- the epoch from which ``acceptance_rate`` is 1.0 and stays 1.0 to the end ("-" if it never
  settles), and the final epoch's loss and replay loss;
- peak resident memory of the process, and the size of the checkpoints it wrote (all of them
  with the training trajectory file beside them, and the last).

    python bench/training.py                   # quick: kepler's first 20 epochs, example's first 5 (~1-3 min)
    python bench/training.py --epochs 5        # every config 5 epochs
    python bench/training.py --full            # the configs as they are (kepler: 40 epochs, example: 200: long)
    python bench/training.py --configs configs/kepler.toml

Prints a markdown table (paste it into docs/BENCHMARKS.md) and writes bench/results/training.json
(bench/results/training_full.json with --full).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    engine_env,
    fmt,
    machine,
    machine_note,
    markdown_table,
    run_with_rusage,
    runner_cmd,
    write_results,
)

# quick mode: epochs per config file name (others: QUICK_EPOCHS_OTHER). example.toml's epochs
# can each run up to 1000 replay steps on 512-state minibatches (seconds apiece on 2 cores)
QUICK_EPOCHS = {"kepler.toml": 20, "example.toml": 5}
QUICK_EPOCHS_OTHER = 10
DEFAULT_CONFIGS = ["configs/kepler.toml", "configs/example.toml"]


def settled_epoch(rates: list[float]) -> int | None:
    """The first epoch from which every acceptance rate is 1.0 (None if the last is not)."""
    first = None
    for epoch, rate in enumerate(rates):
        if rate == 1.0:
            first = epoch if first is None else first
        else:
            first = None
    return first


def measure(config: Path, epochs: int | None, workdir: Path, timeout: float | None) -> dict:
    name = "bench_" + config.stem
    cmd = runner_cmd("train", "--config", str(config), "--save-name", name)
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    rc, wall, rss = run_with_rusage(cmd, workdir, engine_env(), workdir / f"{name}.log", timeout)
    run_dir = workdir / "data" / name
    metrics = []
    if (run_dir / "metrics.jsonl").exists():
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    resolved = {}
    if (run_dir / "config.toml").exists():
        doc = tomllib.loads((run_dir / "config.toml").read_text())
        resolved = {**{k: v for k, v in doc.items() if not isinstance(v, dict)}, **doc.get("train", {})}
    out = {"config": str(config.relative_to(REPO)) if config.is_relative_to(REPO) else str(config),
           "command": " ".join(["nbody-runner", *cmd[3:]]), "exit_status": rc, "wall_s": wall,
           "peak_rss_mb": rss / 2**20,
           "epochs_done": len(metrics), "epochs_asked": epochs or resolved.get("epochs"),
           "n_steps": resolved.get("n_steps"), "num_orbits": resolved.get("num_orbits"),
           "num_particles": resolved.get("num_particles"), "hidden_dims": resolved.get("hidden_dims")}
    checkpoints = sorted((run_dir / "model").glob("*.pt"))
    model_files = [path for path in (run_dir / "model").glob("*") if path.is_file()]  # with the trajectory file
    out["checkpoints_mb"] = sum(path.stat().st_size for path in model_files) / 2**20
    out["last_checkpoint_mb"] = checkpoints[-1].stat().st_size / 2**20 if checkpoints else None
    if rc != 0:
        out["log_tail"] = (workdir / f"{name}.log").read_text().splitlines()[-3:]
    if metrics:
        epoch_s = sum(m["epoch_time_s"] for m in metrics)
        accepted = sum(m["accepted_steps"] for m in metrics)
        attempts = sum(m["attempts"] for m in metrics)
        rates = [m["acceptance_rate"] for m in metrics]
        settled = settled_epoch(rates)
        out.update(
            epochs_time_s=epoch_s, epochs_per_s=len(metrics) / epoch_s, accepted_steps=accepted,
            accepted_steps_per_s=accepted / epoch_s, attempts_per_s=attempts / epoch_s,
            leapfrog_steps_per_s=(attempts * out["n_steps"] / epoch_s) if out["n_steps"] else None,
            retrain_iterations=sum(m["retrain_iterations"] for m in metrics),
            replay_iterations=sum(m["replay_iterations"] for m in metrics),
            acceptance_settled_epoch=settled,
            acceptance_settled_s=(None if settled is None else sum(m["epoch_time_s"] for m in metrics[:settled + 1])),
            final_acceptance_rate=rates[-1], final_loss=metrics[-1]["loss"],
            final_replay_loss=metrics[-1]["replay_loss"], final_rel_dE_max=metrics[-1]["rel_dE_max"],
            slowest_epoch_s=max(m["epoch_time_s"] for m in metrics))
    return out


def _num(x):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else x


def table(results: list[dict]) -> str:
    rows = []
    for r in results:
        status = "ok" if r["exit_status"] == 0 else f"exit {r['exit_status']}"
        if "epochs_per_s" not in r:
            rows.append([r["config"], r["epochs_done"], status, fmt(r["wall_s"])] + ["-"] * 8)
            continue
        settled = r["acceptance_settled_epoch"]
        settled_txt = "-" if settled is None else f"{settled} ({fmt(r['acceptance_settled_s'])} s)"
        rows.append([r["config"], f"{r['epochs_done']}/{r['epochs_asked']}", status,
                     f"{fmt(r['wall_s'])} s ({fmt(r['epochs_time_s'])} s epochs)",
                     fmt(r["epochs_per_s"]), fmt(r["accepted_steps_per_s"]), fmt(r["attempts_per_s"]),
                     settled_txt, fmt(_num(r["final_loss"])) if _num(r["final_loss"]) != "-" else "-",
                     fmt(r["final_replay_loss"]) if _num(r["final_replay_loss"]) != "-" else "-",
                     f"{fmt(r['peak_rss_mb'])} MiB", checkpoint_sizes(r)])
    return markdown_table(["config", "epochs", "status", "wall", "epochs/s", "accepted steps/s", "attempts/s",
                           "acceptance 1.0 from epoch", "final loss", "final replay loss", "peak RSS",
                           "checkpoints (last)"], rows)


def checkpoint_sizes(r: dict) -> str:
    if r["last_checkpoint_mb"] is None:
        return "-"
    return f"{fmt(r['checkpoints_mb'])} MiB ({fmt(r['last_checkpoint_mb'])} MiB)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="run the configs as they are (all their epochs)")
    p.add_argument("--epochs", type=int, help=f"epochs per config in quick mode (default {QUICK_EPOCHS}, "
                                              f"others {QUICK_EPOCHS_OTHER})")
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="config files (relative to the repo)")
    p.add_argument("--timeout", type=float, default=None, help="kill a run after this many seconds")
    p.add_argument("--keep", action="store_true", help="keep the temporary run directories (path printed)")
    args = p.parse_args()
    if args.full and args.epochs:
        p.error("--full runs the configs' own epochs; drop --epochs")

    def epochs_for(config: str) -> int | None:
        if args.full:
            return None
        return args.epochs or QUICK_EPOCHS.get(Path(config).name, QUICK_EPOCHS_OTHER)

    info = machine()
    print(machine_note(info), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="nbody-bench-train-"))
    results = []
    try:
        for config in args.configs:
            path = (REPO / config).resolve()
            epochs = epochs_for(config)
            print(f"  train {config} ({'all epochs' if epochs is None else f'{epochs} epochs'}) ...", flush=True)
            results.append(measure(path, epochs, workdir, args.timeout))
    finally:
        if args.keep:
            print(f"run directories kept in {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    print()
    text = table(results)
    print(text)
    name = "training_full" if args.full else "training"
    path = write_results(name, {"machine": info, "load_avg_after": list(os.getloadavg()),
                                "mode": "full" if args.full else "quick",
                                "results": results, "markdown": text})
    print(f"\nwritten: {path.relative_to(REPO)}")
    return 0 if all(r["exit_status"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
