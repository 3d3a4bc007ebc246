"""Peak resident memory of a long simulation with trajectory recording.

Runs ``python -m nbody_engine.runner simulate --steps N`` (one random two-body system, the
analytic policy: the runner's defaults) in a subprocess, in a temporary working directory, and
reads the child's own peak RSS from ``os.wait4`` (the ``ru_maxrss`` that ``/usr/bin/time -v``
prints as "Maximum resident set size"). A 1,000-step run first gives the baseline (Python,
torch, matplotlib); the difference is what recording N steps costs. Also reports the size of
``sim/analytic/trajectory.npz`` and the simulation's own wall time from ``summary.json``.

Target: the 10^6-step run peaks below 1 GiB.

``--stages`` adds a diagnostic run that repeats ``simulation.run_simulation``'s stages in one process
(simulate, summarize, write trajectory.npz, draw report.png) and prints the peak RSS after each,
to show which stage sets the peak.

    python bench/memory.py                      # 10^3 and 10^6 steps (~2-5 min on 2 cores)
    python bench/memory.py --steps 1000 100000  # quicker
    python bench/memory.py --stages             # also the per-stage peaks of the largest run
    python bench/memory.py --estimates [--only history]  # the memory estimate against peaks (some rows)

Prints a markdown table (paste it into docs/BENCHMARKS.md) and writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
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

TARGET_BYTES = 2**30  # 1 GiB
TARGET_STEPS = 1_000_000


def measure(steps: int, workdir: Path, seed: int) -> dict:
    name = f"bench_memory_{steps}"
    cmd = runner_cmd("simulate", "--steps", str(steps), "--num-particles", "2", "--save-name", name,
                     "--seed", str(seed))
    rc, wall, rss = run_with_rusage(cmd, workdir, engine_env(), workdir / f"{name}.log", None)
    sim = workdir / "data" / name / "sim" / "analytic"
    out = {"steps": steps, "command": " ".join(["nbody-runner", *cmd[3:]]), "exit_status": rc, "wall_s": wall,
           "peak_rss_bytes": rss}
    if (sim / "trajectory.npz").exists():
        out["trajectory_npz_bytes"] = (sim / "trajectory.npz").stat().st_size
    if (sim / "summary.json").exists():
        summary = json.loads((sim / "summary.json").read_text())
        out["simulate_wall_s"] = summary.get("wall_time_s")
    if rc != 0:
        out["log_tail"] = (workdir / f"{name}.log").read_text().splitlines()[-3:]
    return out


def stages_worker(steps: int, out_dir: str) -> dict:
    """run_simulation's stages, one by one, with the peak RSS (bytes) after each."""
    import resource

    import torch

    from nbody_engine.config.loading import load_configs
    from nbody_engine.integrators.loop import period_of, simulate
    from nbody_engine.jobs.simulate import simulation_initial_state, simulation_policy, stop_rule, summarize
    from nbody_engine.physics.runtime import gravity_of, torch_setup
    from nbody_engine.reporting.curves import simulation_curves
    from nbody_engine.reporting.plots import simulation_report
    from nbody_engine.runs.directory import write_npz

    scale = 1 if sys.platform == "darwin" else 1024
    peaks = {}

    def mark(stage):
        peaks[stage] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    cfg = load_configs("simulate", None, {"steps": steps, "num_particles": 2, "seed": 0,
                                          "save_name": "stages"})["simulate"]
    device, dtype = torch_setup(cfg)
    policy, _ = simulation_policy(cfg, device)
    state = simulation_initial_state(cfg, torch.Generator().manual_seed(0), device, dtype)
    stop = stop_rule(cfg, state)
    period = period_of(state.mass, state.position, state.velocity).cpu().numpy()
    mark("imports and setup")
    traj = simulate(state, policy, gravity_of(cfg), stop)
    mark("simulate (recording included)")
    summarize(traj, period, cfg.dim)
    mark("summarize")
    arrays = traj.arrays()
    write_npz(Path(out_dir) / "trajectory.npz", {**arrays, "period": period})
    mark("write trajectory.npz")
    simulation_report(simulation_curves(arrays), Path(out_dir) / "report.png", "stages")
    mark("draw report.png")
    return peaks


def measure_stages(steps: int, workdir: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stages-worker", str(steps), str(workdir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=engine_env(), cwd=workdir, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stages_table(steps: int, peaks: dict) -> str:
    rows, before = [], None
    for stage, peak in peaks.items():
        rise = "-" if before is None else f"+{fmt((peak - before) / 2**20)} MiB"
        rows.append([stage, f"{fmt(peak / 2**20)} MiB", rise])
        before = peak
    return f"Peak RSS after each stage of a {steps:,}-step simulation (one process):\n\n" + markdown_table(
        ["stage", "peak RSS so far", "rise"], rows)


def table(results: list[dict]) -> str:
    base = min(results, key=lambda r: r["steps"])
    rows = []
    for r in results:
        mb = r["peak_rss_bytes"] / 2**20
        extra = "-"
        if r is not base and r["steps"] > base["steps"]:
            extra = f"{(r['peak_rss_bytes'] - base['peak_rss_bytes']) / (r['steps'] - base['steps']):.0f}"
        npz = r.get("trajectory_npz_bytes")
        target = "-"
        if r["steps"] >= TARGET_STEPS:
            target = "< 1 GiB: " + ("yes" if r["peak_rss_bytes"] < TARGET_BYTES else "no")
        rows.append([f"{r['steps']:,}", "ok" if r["exit_status"] == 0 else f"exit {r['exit_status']}",
                     f"{fmt(r['wall_s'])} s", f"{fmt(r['simulate_wall_s'])} s" if r.get("simulate_wall_s") else "-",
                     f"{fmt(mb)} MiB", extra, f"{fmt(npz / 2**20)} MiB" if npz else "-",
                     f"{npz / (r['steps'] + 1):.0f}" if npz else "-", target])
    return markdown_table(["steps", "status", "process wall", "simulate wall", "peak RSS",
                           "RSS bytes/step above baseline", "trajectory.npz", "npz bytes/step", "target"], rows)


# The memory estimate (nbody_engine.config.budget) against measured peaks: (label, runner arguments).
# IC files and checkpoints named "{ic2000}" / "{checkpoint}" are made in the working directory first.
ESTIMATE_CONFIGS = [
    ("simulate, defaults", ["simulate"]),
    ("simulate, 300,000 steps recorded", ["simulate", "--steps", "300000", "--num-particles", "2"]),
    ("simulate, 1,000 bodies", ["simulate", "--steps", "5", "--num-particles", "1000"]),
    ("simulate, IC file of 2,000 bodies", ["simulate", "--steps", "3", "--ic-path", "{ic2000}"]),
    ("simulate, 64 orbits x 100,000 steps", ["simulate", "--steps", "100000", "--multi-orbit-sim",
                                             "--num-orbits", "64", "--num-particles", "2"]),
    ("train, tiny", ["train", "--epochs", "2", "--num-orbits", "2", "--hidden-dims", "16", "16"]),
    ("train, 32 bodies x 16 orbits", ["train", "--epochs", "1", "--num-particles", "32", "--num-orbits", "16",
                                      "--replay-batch-size", "16", "--replay-steps", "2", "--max-retrain-steps", "0"]),
    ("train, wide network, history 32", ["train", "--epochs", "2", "--hidden-dims", "1024", "1024", "1024",
                                         "--history-len", "32", "--num-orbits", "8", "--replay-steps", "5"]),
    ("evaluate, default suite", ["evaluate", "--model-path", "{checkpoint}", "--Nperiod", "2"]),
    # large networks with long histories (issue 30): the replay buffer's history rows fill it within one epoch
    ("train, [1024, 1024], history 1000, buffer full", ["train", "--epochs", "1", "--hidden-dims", "1024", "1024",
                                                        "--history-len", "1000", "--num-orbits", "256",
                                                        "--steps-per-epoch", "40", "--replay-steps", "5"]),
    ("train, [1024, 1024], history 1000 rich, buffer full", ["train", "--epochs", "1", "--hidden-dims", "1024", "1024",
                                                             "--history-len", "1000", "--feature-type", "rich",
                                                             "--num-orbits", "256", "--steps-per-epoch", "40",
                                                             "--replay-steps", "5"]),
    ("train, [2048] x 3, history 1000, buffer nearly empty", ["train", "--epochs", "3", "--hidden-dims", "2048", "2048",
                                                              "2048", "--history-len", "1000", "--num-orbits", "8",
                                                              "--replay-steps", "20"]),
]


def estimate_of(args: list[str]) -> float:
    """The largest estimated peak (bytes) over the phases the runner arguments ``args`` run."""
    from nbody_engine.config.budget import estimated_bytes
    from nbody_engine.config.files import ic_shape
    from nbody_engine.config.loading import adopt_ic_file, load_configs
    from nbody_engine.runner import _cli_values, build_parser

    parsed = build_parser().parse_args(args)
    shared, per_phase = _cli_values(parsed)
    configs = load_configs(parsed.mode, None, shared, per_phase)
    peaks = []
    for phase, cfg in configs.items():
        phase = "evaluate" if parsed.mode == "evaluate" else phase
        adopt_ic_file(cfg, phase)
        systems = ic_shape(cfg.ic_path)[0] if cfg.ic_path else 0
        peaks.append(estimated_bytes(cfg, phase, systems))
    return max(peaks)


def measure_estimates(workdir: Path, only: list[str] | None = None) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(0)
    np.save(workdir / "ic2000.npy", np.concatenate([np.full((2000, 1), 1e-3), rng.normal(size=(2000, 4))], 1))
    rc, _, _ = run_with_rusage(runner_cmd("train", "--epochs", "1", "--num-orbits", "2", "-s", "ckpt"), workdir,
                               engine_env(), workdir / "ckpt.log", None)
    names = {"ic2000": str(workdir / "ic2000.npy"), "checkpoint": str(workdir / "data/ckpt/model/model_epoch_0000.pt")}
    rows = []
    for i, (label, args) in enumerate(ESTIMATE_CONFIGS):
        if only and not any(word in label for word in only):
            continue
        args = [a.format(**names) for a in args] + ["-s", f"est{i}", "--seed", "0"]
        print(f"  {label} ...", flush=True)
        cwd = os.getcwd()
        os.chdir(workdir)
        try:
            estimate = estimate_of(args)
        finally:
            os.chdir(cwd)
        rc, wall, rss = run_with_rusage(runner_cmd(*args), workdir, engine_env(), workdir / f"est{i}.log", None)
        rows.append({"label": label, "command": "nbody-runner " + " ".join(args), "exit_status": rc, "wall_s": wall,
                     "peak_rss_bytes": rss, "estimate_bytes": estimate, "ratio": estimate / rss})
    return rows


def estimates_table(rows: list[dict]) -> str:
    return markdown_table(["config", "status", "peak RSS", "estimate", "estimate / peak", "within 2x"], [
        [r["label"], "ok" if r["exit_status"] == 0 else f"exit {r['exit_status']}",
         f"{fmt(r['peak_rss_bytes'] / 2**20)} MiB", f"{fmt(r['estimate_bytes'] / 2**20)} MiB", f"{r['ratio']:.2f}",
         "yes" if 0.5 <= r["ratio"] <= 2 else "no"]
        for r in rows])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, nargs="+", default=[1000, TARGET_STEPS],
                   help="step counts to run; the smallest is the baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the temporary run directory (path printed)")
    p.add_argument("--stages", action="store_true", help="also the per-stage peaks of the largest run")
    p.add_argument("--stages-worker", nargs=2, metavar=("STEPS", "DIR"), help=argparse.SUPPRESS)
    p.add_argument("--estimates", action="store_true",
                   help="instead: the memory estimate against the measured peak RSS on a table of configs")
    p.add_argument("--only", nargs="+", metavar="WORD", help="with --estimates: only the configs whose label has WORD")
    args = p.parse_args()
    if args.stages_worker:
        print(json.dumps(stages_worker(int(args.stages_worker[0]), args.stages_worker[1])))
        return 0
    if args.estimates:
        return main_estimates(args.only)

    info = machine()
    print(machine_note(info), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="nbody-bench-memory-"))
    results = []
    try:
        for steps in sorted(set(args.steps)):
            print(f"  simulate --steps {steps:,} ...", flush=True)
            results.append(measure(steps, workdir, args.seed))
        stages = None
        if args.stages:
            print(f"  stages of {max(args.steps):,} steps ...", flush=True)
            stages = measure_stages(max(args.steps), workdir)
    finally:
        if args.keep:
            print(f"run directories kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    text = table(results)
    if stages and "error" not in stages:
        text += "\n\n" + stages_table(max(args.steps), stages)
    elif stages:
        text += "\n\nstages run failed: " + " ".join(stages["error"])
    print(text)
    path = write_results("memory", {"machine": info, "load_avg_after": list(os.getloadavg()), "results": results,
                                    "stages": stages, "markdown": text})
    print(f"\nwritten: {path.relative_to(REPO)}")
    return 0 if all(r["exit_status"] == 0 for r in results) else 1


def main_estimates(only: list[str] | None = None) -> int:
    info = machine()
    print(machine_note(info), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="nbody-bench-memory-"))
    try:
        rows = measure_estimates(workdir, only)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = estimates_table(rows)
    print(text)
    # a subset leaves the full table's file alone
    name = "memory_estimates" + ("_" + re.sub(r"\W+", "_", "_".join(only)) if only else "")
    path = write_results(name, {"machine": info, "load_avg_after": list(os.getloadavg()),
                                              "results": rows, "markdown": text})
    print(f"\nwritten: {path.relative_to(REPO)}")
    return 0 if all(0.5 <= r["ratio"] <= 2 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
