"""The general N-body step against REBOUND's leapfrog: per system-step times, in one run on one thread.

Every figure of ours is a full ``simulate(state, AnalyticDt(0.02), Gravity(), StopRule(max_steps=S),
record_every=100)`` call, float64, eager, on random systems of N equal-mass bodies in 3D
(``random_system``, seed 0); REBOUND integrates each of the same systems with its leapfrog
(``integrator = "leapfrog"``, G = 1, a fixed step) in C, one simulation per system. Cases:

- ``n3-1``: one system of 3 bodies;
- ``n3-256``: 256 systems of 3 bodies in one batch;
- ``n32-64``: 64 systems of 32 bodies in one batch.

``--paths`` picks our steps: ``fast`` (the eager path, :mod:`nbody_engine.integrators.pair_step`
for N >= 3; the default where no compiled step exists), ``aot`` (the pair step compiled ahead of
time, :mod:`nbody_engine.integrators.aot_step`: compiled into this machine's cache first where
missing, not among the defaults; ``learned-aot`` the same for the ``learned`` step), ``general``
(the general step it replaces, ``leapfrog_step`` with the policy's ``dt``, eight steps a call:
the step before issue 32), ``learned`` (the learned step on the fast path, an
untrained [64, 64] network on the basic features) and ``learned-history`` (the same network on
the ``delta_mag`` features with a two-step history, as ``configs/kepler.toml`` trains it).
REBOUND's time per system-step is its time on the first 16 systems of a case (one simulation
each: a C step's cost does not depend on the batch). Each figure is the median of ``--repeats``
timed runs after a warm-up, the paths and REBOUND alternated within each repeat, so their ratios
come from the same minutes of the machine.

    python bench/nbody_step.py                       # all cases, all paths (~2 min)
    python bench/nbody_step.py --cases n3-256 --paths fast general
    python bench/nbody_step.py --first-use           # compile = true on one N = 3 system, twice

``--first-use`` runs two fresh processes one after the other with one empty cache directory
(``NBODY_EXPLORER_CACHE`` and ``TORCHINDUCTOR_CACHE_DIR``): the first call of
``simulate(..., compile=True)`` (64 steps) in each is the cold compile, then the first use with a
warm cache; each process then times ``--steps`` steps compiled (``aot``), eager (the pair step)
and REBOUND's leapfrog on the same system, alternated ``--repeats`` times (medians).

Prints a markdown table and writes bench/results/nbody_step.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import REPO, machine, machine_note, markdown_table, median, write_results

CASES = {"n3-1": (3, 1), "n3-256": (3, 256), "n32-64": (32, 64)}
PATHS = ("fast", "general", "learned", "learned-history", "aot", "learned-aot")
DEFAULT_PATHS = PATHS[:4]
EPS, RECORD_EVERY, DIM = 0.02, 100, 3


def systems(bodies: int, count: int):
    import torch

    from nbody_engine.physics.initial_conditions import random_system

    return random_system(bodies, DIM, num_systems=count, generator=torch.Generator().manual_seed(0))


def ours(state, path: str, steps: int) -> float:
    """Seconds per system-step of one ``simulate`` call on ``path``."""
    from nbody_engine.integrators import aot_step, pair_step
    from nbody_engine.integrators.loop import StopRule, simulate
    from nbody_engine.physics.gravity import Gravity

    policy = {"learned": learned_policy, "learned-aot": learned_policy,
              "learned-history": history_policy}.get(path, analytic_policy)()
    compiled = path in ("aot", "learned-aot")
    general, packaged = pair_step.pair_stepper, aot_step.aot_stepper
    if path == "general":
        pair_step.pair_stepper = lambda *args: None
    if not compiled:  # the eager paths, even where this machine has a compiled step of this shape
        aot_step.aot_stepper = lambda *args: None
    try:
        start = time.perf_counter()
        traj = simulate(state, policy, Gravity(), StopRule(max_steps=steps), record_every=RECORD_EVERY,
                        compile=compiled)
        assert traj.path == ("aot" if compiled else "general" if path == "general" else "pairs"), traj.path
        return (time.perf_counter() - start) / (steps * state.batch_size)
    finally:
        pair_step.pair_stepper, aot_step.aot_stepper = general, packaged


def analytic_policy():
    from nbody_engine.integrators.policies import AnalyticDt

    return AnalyticDt(EPS)


def learned_policy():
    from nbody_engine.physics.gravity import Gravity
    from nbody_engine.learning.network import DtNetwork, LearnedDt

    network = DtNetwork(11, [64, 64], eps=EPS).eval()
    return LearnedDt(network, "basic", 0, Gravity())


def history_policy():
    """configs/kepler.toml's kind of network: [64, 64] on the delta_mag features with a two-step history."""
    from nbody_engine.learning.network import DtNetwork, LearnedDt
    from nbody_engine.physics.gravity import Gravity

    network = DtNetwork(11 + 2 * 7, [64, 64], eps=EPS).eval()
    return LearnedDt(network, "delta_mag", 2, Gravity())


def rebound(state, steps: int, systems: int) -> float:
    """Seconds per system-step of REBOUND's leapfrog on the first ``systems`` systems of ``state``."""
    import rebound as rb

    total = 0.0
    for b in range(systems):
        sim = rb.Simulation()
        sim.G, sim.integrator, sim.dt = 1.0, "leapfrog", 1e-3
        for m, x, v in zip(state.mass[b].tolist(), state.position[b].tolist(), state.velocity[b].tolist()):
            sim.add(m=m, x=x[0], y=x[1], z=x[2], vx=v[0], vy=v[1], vz=v[2])
        start = time.perf_counter()
        sim.steps(steps) if hasattr(sim, "steps") else sim.integrate(steps * sim.dt, exact_finish_time=0)
        total += time.perf_counter() - start
    return total / (steps * systems)


def first_use(steps: int, repeats: int) -> dict:
    """One fresh process's figures of ``compile = true`` on one three-body system (see the module's docstring)."""
    start = time.perf_counter()
    import torch

    from nbody_engine.integrators.loop import StopRule, simulate
    from nbody_engine.physics.gravity import Gravity

    imported = time.perf_counter() - start
    state, policy, gravity = systems(3, 1), analytic_policy(), Gravity()
    start = time.perf_counter()
    traj = simulate(state, policy, gravity, StopRule(max_steps=64), compile=True, record_every=RECORD_EVERY)
    first = time.perf_counter() - start
    runs = {"aot": [], "fast": [], "rebound": []}
    for _ in range(repeats):
        runs["aot"].append(ours(state, "aot", steps))
        runs["fast"].append(ours(state, "fast", steps))
        runs["rebound"].append(rebound(state, 10 * steps, 1))  # C: ten times the steps, for a measurable time
    medians = {k: 1e6 * median(v) for k, v in runs.items()}
    return {"torch": torch.__version__, "stepper": traj.path, "engine_import_s": imported, "first_call_s": first,
            "steps": steps, "runs_s_per_step": runs, "median_us_per_step": medians}


def first_uses(steps: int, repeats: int) -> dict:
    """``first_use`` in two fresh processes, one after the other, sharing one empty cache."""
    import json
    import subprocess
    import tempfile

    figures = {}
    with tempfile.TemporaryDirectory(prefix="nbody-bench-cache-") as cache:
        env = {**os.environ, "NBODY_EXPLORER_CACHE": cache, "TORCHINDUCTOR_CACHE_DIR": os.path.join(cache, "inductor")}
        for label in ("cold cache", "warm cache"):
            proc = subprocess.run([sys.executable, __file__, "--worker", "--steps", str(steps), "--repeats",
                                   str(repeats)], capture_output=True, text=True, env=env, check=True)
            figures[label] = json.loads(proc.stdout.strip().splitlines()[-1])
            f = figures[label]
            times = ", ".join(f"{k} {v:.3g}" for k, v in f["median_us_per_step"].items())
            print(f"{label}: engine import {f['engine_import_s']:.2f} s, first call (64 steps, stepper {f['stepper']}) "
                  f"{f['first_call_s']:.2f} s; us/step: {times}", flush=True)
    return figures


def measure(case: str, paths: list[str], repeats: int, seconds: float) -> dict:
    bodies, count = CASES[case]
    state = systems(bodies, count)
    for path in paths:  # warm-up: the aot path compiles its package first where this machine lacks it
        ours(state, path, 200)
    probe = {path: ours(state, path, 200) for path in paths}  # the size of a timed run
    steps = {path: max(200, int(seconds / (probe[path] * count))) for path in paths}
    rb_systems = min(count, 16)
    rb_steps = max(1000, int(seconds / max(rebound(state, 1000, 1), 1e-9) / rb_systems))
    runs = {path: [] for path in (*paths, "rebound")}
    for _ in range(repeats):
        for path in paths:
            runs[path].append(ours(state, path, steps[path]))
        runs["rebound"].append(rebound(state, rb_steps, rb_systems))
    per_step = {path: median(values) for path, values in runs.items()}
    return {"case": case, "bodies": bodies, "systems": count, "steps": steps, "rebound_steps": rb_steps,
            "rebound_systems": rb_systems, "runs_s_per_system_step": runs, "median_s_per_system_step": per_step}


def table(results: list[dict]) -> str:
    rows = []
    for r in results:
        times = r["median_s_per_system_step"]
        ref, analytic = times["rebound"], times.get("fast")
        for path, value in times.items():
            rows.append([r["case"], r["bodies"], r["systems"], path, f"{1e6 * value:.3g}", f"{value / ref:.2f}",
                         f"{value / analytic:.2f}" if analytic and path != "rebound" else "-"])
    return markdown_table(["case", "N", "systems", "step", "us per system-step", "/ REBOUND", "/ fast analytic"],
                          rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--paths", nargs="+", choices=PATHS, default=list(DEFAULT_PATHS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=0.5, help="target duration of one timed run")
    p.add_argument("--first-use", action="store_true", help="compile = true's first use, cold and warm cache")
    p.add_argument("--steps", type=int, default=20_000, help="steps of each timed run of --first-use")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.pop("OMP_NUM_THREADS", None)
    import torch

    torch.set_num_threads(1)  # the engine's default (runtime.torch_setup)
    if args.worker:
        import json

        print(json.dumps(first_use(args.steps, args.repeats)))
        return 0
    info = machine()
    if args.first_use:
        print(machine_note(info), flush=True)
        figures = first_uses(args.steps, args.repeats)
        path = write_results("nbody_step_first_use", {"machine": info, "load_avg_after": list(os.getloadavg()),
                                                      "settings": {"eps": EPS, "record_every": RECORD_EVERY,
                                                                   "steps": args.steps, "repeats": args.repeats},
                                                      "results": figures})
        print(f"\nwritten: {path.relative_to(REPO)}")
        return 0
    print(machine_note(info), flush=True)
    results = []
    for case in args.cases:
        print(f"  {case} ...", flush=True)
        results.append(measure(case, args.paths, args.repeats, args.seconds))
    text = table(results)
    print()
    print(text)
    path = write_results("nbody_step", {"machine": info, "load_avg_after": list(os.getloadavg()),
                                        "settings": {"eps": EPS, "record_every": RECORD_EVERY, "dim": DIM,
                                                     "repeats": args.repeats, "seconds": args.seconds},
                                        "results": results, "markdown": text})
    print(f"\nwritten: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
