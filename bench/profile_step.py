"""Where a simulation step's time goes: cProfile and torch.profiler on the analytic policy
(the engine's 1 thread), by default the single-orbit eager case the 13,200 steps/s target is
about.

First an unprofiled run splits ``simulate``'s wall time into the steps themselves and the
recorder's work (``_flush`` every 256 steps: stacking the chunk, energies, momenta, angular
momenta, finiteness check, progress event; and the final concatenation), then cProfile and
torch.profiler list the top entries.

    python bench/profile_step.py                           # 1 orbit, eager: 20,000 steps profiled
    python bench/profile_step.py --systems 1024 --steps 1000
    python bench/profile_step.py --compile --steps 20000   # (compiles first, ~15-40 s)

Prints the split and two markdown tables (Python functions by own time; torch operators by self
CPU time) and writes bench/results/profile_step[_<systems>][_compiled].json.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import REPO, fmt, machine, machine_note, markdown_table, write_results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20_000, help="steps profiled with cProfile")
    p.add_argument("--torch-steps", type=int, default=2_000, help="steps profiled with torch.profiler")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--systems", type=int, default=1, help="Kepler orbits in the batch (default 1: e = 0.7)")
    p.add_argument("--compile", action="store_true", help="simulate(..., compile=True)")
    args = p.parse_args()
    if args.systems > 1 and args.steps * args.systems > 2_000_000:
        p.error("keep --steps x --systems <= 2e6: every step is recorded (about 112 bytes per system and step)")
    args.torch_steps = min(args.torch_steps, args.steps)
    os.environ.pop("OMP_NUM_THREADS", None)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from nbody_engine.integrators import loop as integrate
    from nbody_engine.integrators.loop import StopRule
    from nbody_engine.integrators.policies import AnalyticDt
    from nbody_engine.physics.gravity import Gravity
    from nbody_engine.physics.initial_conditions import kepler_family, kepler_orbit

    torch.set_num_threads(1)  # what runtime.torch_setup does without OMP_NUM_THREADS
    info = machine()
    print(machine_note(info))
    if args.systems == 1:
        state = kepler_orbit(0.7, 1.0)
    else:
        state = kepler_family(args.systems, (0.6, 0.95), (0.8, 1.2), generator=torch.Generator().manual_seed(0))
    policy, gravity = AnalyticDt(0.1), Gravity()

    def simulate(*a):
        return integrate.simulate(*a, compile=args.compile)

    simulate(state, policy, gravity, StopRule(max_steps=300))  # warm up (and compile)

    # unprofiled: the recorder's share, by wrapping the functions simulate() calls for it
    spent = {"flush": 0.0, "numpy": 0.0}
    flush, to_numpy = integrate._flush, integrate._Recorder.numpy

    def timed_flush(*a, **k):
        t = time.perf_counter()
        try:
            return flush(*a, **k)
        finally:
            spent["flush"] += time.perf_counter() - t

    def timed_numpy(self):
        t = time.perf_counter()
        try:
            return to_numpy(self)
        finally:
            spent["numpy"] += time.perf_counter() - t

    integrate._flush, integrate._Recorder.numpy = timed_flush, timed_numpy
    try:
        start = time.perf_counter()
        simulate(state, policy, gravity, StopRule(max_steps=args.steps))
        wall = time.perf_counter() - start
    finally:
        integrate._flush, integrate._Recorder.numpy = flush, to_numpy
    plain = args.steps / wall
    split = {"wall_s": wall, "recorder_flush_s": spent["flush"], "final_concat_s": spent["numpy"],
             "steps_s": wall - spent["flush"] - spent["numpy"]}

    prof = cProfile.Profile()
    prof.enable()
    simulate(state, policy, gravity, StopRule(max_steps=args.steps))
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    total = stats.total_tt
    entries = []
    for (file, line, func), (_, nc, tt, ct, _) in stats.stats.items():
        where = f"{Path(file).name}:{line}" if file != "~" else "(builtin)"
        entries.append({"function": f"{func} ({where})", "calls": nc, "own_s": tt, "cumulative_s": ct})
    entries.sort(key=lambda e: -e["own_s"])
    top_py = entries[: args.top]
    py_rows = [[e["function"], e["calls"], f"{1e6 * e['own_s'] / args.steps:.2f}", f"{100 * e['own_s'] / total:.1f}%",
                f"{1e6 * e['cumulative_s'] / args.steps:.2f}"] for e in top_py]
    py_table = markdown_table(["function", "calls", "own us/step", "own share", "cumulative us/step"], py_rows)

    with profile(activities=[ProfilerActivity.CPU]) as tprof:
        simulate(state, policy, gravity, StopRule(max_steps=args.torch_steps))
    averages = sorted(tprof.key_averages(), key=lambda a: -a.self_cpu_time_total)
    op_total = sum(a.self_cpu_time_total for a in averages)
    top_ops = [{"op": a.key, "calls": a.count, "self_us": a.self_cpu_time_total} for a in averages[: args.top]]
    op_rows = [[o["op"], o["calls"], f"{o['calls'] / args.torch_steps:.1f}", f"{o['self_us'] / args.torch_steps:.2f}",
                f"{100 * o['self_us'] / op_total:.1f}%"] for o in top_ops]
    op_table = markdown_table(["torch op", "calls", "calls/step", "self us/step", "share"], op_rows)
    ops_per_step = sum(a.count for a in averages) / args.torch_steps

    what = "single orbit" if args.systems == 1 else f"{args.systems} orbits"
    mode = "compiled" if args.compile else "eager"
    summary = (f"{what}, analytic, {mode}, 1 thread: {fmt(plain)} steps/s unprofiled ({1e6 / plain:.0f} us/step"
               + (f", {fmt(plain * args.systems)} orbit-steps/s" if args.systems > 1 else "") + "); "
               f"recorder: {100 * split['recorder_flush_s'] / wall:.0f}% in the per-chunk flush, "
               f"{100 * split['final_concat_s'] / wall:.0f}% in the final concatenation; "
               f"cProfile: {stats.total_calls / args.steps:.0f} Python calls/step; "
               f"torch.profiler: {ops_per_step:.0f} operator calls/step (all levels)")
    print(summary)
    print("\nPython functions by own time (cProfile):\n")
    print(py_table)
    print("\ntorch operators by self CPU time (torch.profiler):\n")
    print(op_table)
    name = "profile_step" + (f"_{args.systems}" if args.systems > 1 else "") + ("_compiled" if args.compile else "")
    path = write_results(name, {"machine": info, "systems": args.systems, "compiled": args.compile,
                                          "steps": args.steps, "torch_steps": args.torch_steps,
                                          "steps_per_s_unprofiled": plain, "split": split,
                                          "python_calls_per_step": stats.total_calls / args.steps,
                                          "torch_ops_per_step": ops_per_step, "top_python": top_py,
                                          "top_torch_ops": top_ops, "summary": summary,
                                          "markdown": py_table + "\n\n" + op_table})
    print(f"\nwritten: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
