"""Side by side with the upstream tool: the same command, timed with both, in one run.

Upstream's CLI is ``python PATH/run/runner.py simulate|train [flags]`` with the flags of
docs/runner_config_spec.md, which ours (``python -m nbody_engine.runner``) implements key by
key, so the same arguments go to both:

- ``fixed dt``: ``simulate --num-particles 2 --steps 20000 --Nperiod 0 --seed 0 --save-name
  bench_compare --dt 0.01``: the same leapfrog with the same step in both;
- ``analytic``: the same without ``--dt``: each tool's default step (ours: the adaptive
  criterion; upstream: a fixed step of 0.01, its particles' built-in dt);
- ``learned`` (only with ``--checkpoint``): the same with ``--integrator-mode ml --model-path
  CKPT`` (``--upstream-checkpoint`` when upstream needs its own checkpoint file;
  ``--learned-mode history`` for a history model).

``--Nperiod 0`` because upstream lets its default ``Nperiod = 10`` override ``--steps`` (for
seed 0's tight orbit: 23 steps). ``--ours-extra "--record-every 10 --compile"`` adds flags to
our command only.

Each tool runs in its own fresh temporary working directory (its ``data/`` lands there; upstream
gets PYTHONPATH=PATH so its package imports, or ``--upstream-cwd`` runs it inside the checkout).
Each command first runs once untimed, which fills the file and TorchInductor caches (so a
cold ``--compile`` is in no median; a user's second run finds the cache warm too). Then runs
alternate ours/upstream, ``--repeats`` times; the table gives the median process wall time
(interpreter and torch start-up included: what a user waits for), a ``python -c "import torch"``
baseline, and the ratio upstream/ours (> 1: ours is faster). Each command also runs with
``--steps 1``: the difference of the two medians, per step, gives each tool's steps/s net of
start-up and of writing its outputs (upstream reports no timing of its own), and their ratio.
Threads: each tool runs with its own default (ours: 1 torch thread unless OMP_NUM_THREADS is
set) unless ``--threads N`` sets OMP_NUM_THREADS for both.

    python bench/compare_upstream.py                          # prints what it would run, exits 0
    python bench/compare_upstream.py --upstream ../upstream   # analytic case
    python bench/compare_upstream.py --upstream ../upstream --checkpoint data/kepler/model/model_epoch_0059.pt

Prints a markdown table (paste it into docs/BENCHMARKS.md) and writes
bench/results/compare_upstream.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, engine_env, fmt, machine, machine_note, markdown_table, run_with_rusage, write_results


def cases(args) -> list[dict]:
    common = ["--steps", str(args.steps), "--Nperiod", "0", "--seed", str(args.seed), "--save-name", "bench_compare"]
    analytic = ["simulate", "--num-particles", str(args.num_particles), *common]
    out = [{"case": "fixed dt", "args": [*analytic, "--dt", str(args.dt)]}, {"case": "analytic", "args": analytic}]
    if args.checkpoint:
        up_ckpt = args.upstream_checkpoint or args.checkpoint
        base = ["simulate", "--integrator-mode", args.learned_mode, *common]
        out.append({"case": f"learned ({args.learned_mode})",
                    "args": [*base, "--model-path", str(Path(args.checkpoint).resolve())],
                    "upstream_args": [*base, "--model-path", str(Path(up_ckpt).resolve())]})
    for c in out:
        c.setdefault("upstream_args", c["args"])
    return out


def commands(args, case: dict) -> tuple[list[str], list[str]]:
    ours = [sys.executable, "-m", "nbody_engine.runner", *case["args"], *shlex.split(args.ours_extra)]
    upstream = [args.upstream_python, str(Path(args.upstream or "PATH") / "run" / "runner.py"), *case["upstream_args"]]
    return ours, upstream


def environment(args, upstream: bool) -> dict:
    env = engine_env(args.threads)
    if upstream:
        env["PYTHONPATH"] = str(Path(args.upstream).resolve()) + os.pathsep + env["PYTHONPATH"]
    return env


def timed(cmd: list[str], env: dict, cwd: Path, log: Path) -> dict:
    rc, wall, rss = run_with_rusage(cmd, cwd, env, log, None)
    out = {"exit_status": rc, "wall_s": wall, "peak_rss_mb": rss / 2**20}
    if rc != 0:
        out["log_tail"] = log.read_text().splitlines()[-3:]
    return out


def sim_wall(cwd: Path, since: float) -> float | None:
    """The simulation's own wall time, where the tool wrote a summary.json (after ``since``,
    a time.time()) that has one."""
    found = [p for p in cwd.glob("data/**/summary.json") if p.stat().st_mtime >= since]
    for path in sorted(found, key=lambda p: -p.stat().st_mtime):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key in ("wall_time_s", "wall_time", "runtime_s", "elapsed_s"):
            if isinstance(data.get(key), (int, float)):
                return float(data[key])
    return None


def _cell(side: dict) -> str:
    m = side["median_wall_s"]
    if m is None:
        return "failed: " + " ".join(side["runs"][-1].get("log_tail", [])[-1:])
    sims = [r["simulate_wall_s"] for r in side["runs"] if r.get("simulate_wall_s")]
    return f"{fmt(m)} s" + (f" (simulate {fmt(statistics.median(sims))} s)" if sims else "")


def with_steps(cmd: list[str], steps: int) -> list[str]:
    """``cmd`` with the value of ``--steps`` replaced."""
    at = cmd.index("--steps") + 1
    return [*cmd[:at], str(steps), *cmd[at + 1:]]


def marginal_rate(full: dict, one: dict, steps: int) -> float | None:
    """Steps per second net of start-up and output: (steps - 1) over the difference between
    the median walls of the ``steps`` run and the 1-step run of the same command."""
    if not full["median_wall_s"] or not one["median_wall_s"] or full["median_wall_s"] <= one["median_wall_s"]:
        return None
    return (steps - 1) / (full["median_wall_s"] - one["median_wall_s"])


def _rate(side: dict) -> str:
    return f"{side['steps_per_s']:,.0f}" if side.get("steps_per_s") else "-"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", metavar="PATH", help="checkout of the upstream tool (holds run/runner.py)")
    p.add_argument("--upstream-python", default=sys.executable, help="interpreter for upstream (default: this one)")
    p.add_argument("--upstream-cwd", action="store_true", help="run upstream inside its checkout, not a temp dir")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--num-particles", type=int, default=2)
    p.add_argument("--dt", type=float, default=0.01, help="the step of the fixed-dt case (upstream's built-in dt)")
    p.add_argument("--ours-extra", default="", help="flags added to our command only, e.g. \"--record-every 10\"")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="our checkpoint: adds the learned-policy case")
    p.add_argument("--upstream-checkpoint", help="upstream's checkpoint for the learned case (default: --checkpoint)")
    p.add_argument("--learned-mode", choices=["ml", "history"], default="ml")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both tools (default: each tool's own)")
    args = p.parse_args()

    todo = cases(args)
    if not args.upstream:
        print("no --upstream PATH given; with one, this would time (each --repeats times, alternating):")
        for case in todo:
            ours, upstream = commands(args, case)
            print(f"\n  {case['case']}:\n    ours:     {shlex.join(ours)}\n    upstream: {shlex.join(upstream)}")
        print("\nrun: python bench/compare_upstream.py --upstream PATH [--checkpoint CKPT]")
        return 0
    runner = Path(args.upstream) / "run" / "runner.py"
    if not runner.is_file():
        p.error(f"'{runner}' does not exist: --upstream must be a checkout holding run/runner.py")

    info = machine()
    print(machine_note(info), flush=True)
    root = Path(tempfile.mkdtemp(prefix="nbody-bench-compare-"))
    results = []
    try:
        import_torch = []
        for _ in range(args.repeats):
            import_torch.append(timed([sys.executable, "-c", "import torch"], engine_env(args.threads), root,
                                      root / "import.log")["wall_s"])
        for k, case in enumerate(todo):
            ours_cmd, up_cmd = commands(args, case)
            runs = {"ours": [], "upstream": [], "ours_1": [], "upstream_1": []}
            for i in range(-1, args.repeats):  # run -1: the untimed warm-up
                for who, full in (("ours", ours_cmd), ("upstream", up_cmd)):
                    for name, cmd in ((who, full), (f"{who}_1", with_steps(full, 1))):
                        fresh = root / f"case{k}-{name}-{i}"
                        cwd = Path(args.upstream).resolve() if who == "upstream" and args.upstream_cwd else fresh
                        cwd.mkdir(exist_ok=True)
                        label = "warm-up" if i < 0 else f"run {i + 1}/{args.repeats}"
                        print(f"  {case['case']} {name} {label} ...", flush=True)
                        since = time.time() - 1
                        r = timed(cmd, environment(args, who == "upstream"), cwd, root / f"case{k}-{name}-{i}.log")
                        r["simulate_wall_s"] = sim_wall(cwd, since)
                        if i >= 0:
                            runs[name].append(r)
            entry = {"case": case["case"], "arguments": shlex.join(case["args"]), "ours_command": shlex.join(ours_cmd),
                     "upstream_command": shlex.join(up_cmd)}
            for name, rs in runs.items():
                ok = [r["wall_s"] for r in rs if r["exit_status"] == 0]
                entry[name] = {"runs": rs, "median_wall_s": statistics.median(ok) if ok else None,
                               "failed": len(rs) - len(ok)}
            for who in ("ours", "upstream"):
                entry[who]["steps_per_s"] = marginal_rate(entry[who], entry[f"{who}_1"], args.steps)
            if entry["ours"]["median_wall_s"] and entry["upstream"]["median_wall_s"]:
                entry["ratio_upstream_over_ours"] = entry["upstream"]["median_wall_s"] / entry["ours"]["median_wall_s"]
            if entry["ours"]["steps_per_s"] and entry["upstream"]["steps_per_s"]:
                entry["steps_per_s_ratio"] = entry["ours"]["steps_per_s"] / entry["upstream"]["steps_per_s"]
            results.append(entry)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base = statistics.median(import_torch)
    rows = []
    for e in results:
        ratio = e.get("ratio_upstream_over_ours")
        shown = e["arguments"]
        if args.checkpoint:
            shown = shown.replace(str(Path(args.checkpoint).resolve()), "CKPT")
        rate = e.get("steps_per_s_ratio")
        rows.append([e["case"], f"`{shown}`", _cell(e["ours"]), _cell(e["upstream"]), f"{ratio:.2f}x" if ratio else "-",
                     _rate(e["ours"]), _rate(e["upstream"]), f"{rate:.2f}x" if rate else "-"])
    text = markdown_table(["case", "arguments (both tools)", "ours (median wall)", "upstream (median wall)",
                           "upstream / ours (wall)", "ours steps/s", "upstream steps/s", "ours / upstream (steps/s)"],
                          rows)
    text += f"\n\n`python -c \"import torch\"` alone: {fmt(base)} s (median of {args.repeats})."
    if args.ours_extra:
        text += f" Ours also ran with `{args.ours_extra}`."
    print()
    print(text)
    path = write_results("compare_upstream", {"machine": info, "load_avg_after": list(os.getloadavg()),
                                              "threads": args.threads, "import_torch_s": import_torch,
                                              "results": results, "markdown": text})
    print(f"\nwritten: {path.relative_to(REPO)}")
    return 0 if all(e["ours"]["failed"] == 0 and e["upstream"]["failed"] == 0 for e in results) else 1


if __name__ == "__main__":
    sys.exit(main())
