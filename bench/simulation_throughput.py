"""Simulation throughput: steps per second of ``nbody_engine.integrators.loop.simulate``.

Every figure is a full ``simulate(..., StopRule(max_steps=N))`` call, so the trajectory
recording and the per-chunk diagnostics (energies, momenta, finiteness check, progress event)
are included: it is what a user of the runner or the explorer gets.

Cases (each eager and with ``compile=True``):

- ``analytic-1``: the analytic policy on one two-body Kepler orbit (e = 0.7): steps/s;
- ``analytic-1-every10``: the same, recording every 10th step (``record_every = 10``: a compiled
  run then takes 10 steps per call);
- ``analytic-1024``: the analytic policy on 1024 Kepler orbits in one batch: orbit-steps/s;
- ``analytic-1024-every10``: the same, recording every 10th step (``record_every = 10``);
- ``learned-64``: ``LearnedDt`` with the default network [64, 64] on one orbit: steps/s;
- ``learned-upstream``: ``LearnedDt`` with upstream's [200, 1000, 1000, 200]: steps/s;
- ``learned-upstream-every10``: the same, recording every 10th step.

The learned networks are built with ``build_network`` from a config's values
(``configs/kepler.toml`` by default) with ``history_len = 0`` (the ``ml`` mode, as upstream's
figure) and are untrained: speed does not depend on the weights.

Threads: the engine runs torch single-threaded unless OMP_NUM_THREADS is set
(``runtime.torch_setup``). Each case is measured in its own subprocess with the engine's setting
(OMP_NUM_THREADS unset: 1 thread); the batched cases and ``learned-upstream`` also with
OMP_NUM_THREADS=2. Each subprocess gets a fresh TorchInductor cache directory, so the reported
compile time is a cold compile (``--warm-cache`` keeps the default cache).

    python bench/simulation_throughput.py            # ~4-6 min on 2 cores
    python bench/simulation_throughput.py --quick    # ~2-3 min, fewer/shorter repeats
    python bench/simulation_throughput.py --cases analytic-1 --modes eager

Prints a markdown table (paste it into docs/BENCHMARKS.md) and writes
bench/results/simulation_throughput.json (simulation_throughput_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import REPO, engine_env, fmt, machine, machine_note, markdown_table, median, write_results


class Case(NamedTuple):
    policy: str
    systems: int
    hidden_dims: list[int] | None
    unit: str
    target: float | None
    threads: list[int | None]  # None: the engine's default (1 thread)
    record_every: int = 1


CASES = {
    "analytic-1": Case("analytic", 1, None, "steps/s", 13_200, [None]),
    "analytic-1-every10": Case("analytic", 1, None, "steps/s", 13_200, [None], record_every=10),
    "analytic-1024": Case("analytic", 1024, None, "orbit-steps/s", 5e6, [None, 2]),
    "analytic-1024-every10": Case("analytic", 1024, None, "orbit-steps/s", 5e6, [None, 2], record_every=10),
    "learned-64": Case("learned", 1, [64, 64], "steps/s", None, [None]),
    "learned-upstream": Case("learned", 1, [200, 1000, 1000, 200], "steps/s", 1_750, [None, 2]),
    "learned-upstream-every10": Case("learned", 1, [200, 1000, 1000, 200], "steps/s", 1_750, [None, 2],
                                     record_every=10),
}
TARGET_NOTES = {
    "analytic-1": ">= 13,200 (3x upstream's 4,400)",
    "analytic-1-every10": ">= 13,200 (3x upstream's 4,400)",
    "analytic-1024": ">= 5e6",
    "analytic-1024-every10": ">= 5e6",
    "learned-upstream": ">= 1,750 (5x upstream's 350)",
    "learned-upstream-every10": ">= 1,750 (5x upstream's 350)",
}
# rows of recorded trajectory kept per batched run: 1024 systems x ~112 B per row and step,
# doubled by the final concatenation, so 1500 steps stay around 350 MB
MAX_BATCH_STEPS = 1500


# --- worker: one case, one thread setting, in its own process ------------------------------

def _build(case: str, config: str):
    import torch

    from nbody_engine.config.loading import config_values, load_configs
    from nbody_engine.integrators.policies import AnalyticDt
    from nbody_engine.learning.network import LearnedDt, build_network
    from nbody_engine.physics.gravity import Gravity
    from nbody_engine.physics.initial_conditions import kepler_family, kepler_orbit
    from nbody_engine.physics.runtime import gravity_of, torch_setup

    policy_kind, systems, hidden = CASES[case].policy, CASES[case].systems, CASES[case].hidden_dims
    cfg = load_configs("simulate", config)["simulate"]
    device, dtype = torch_setup(cfg)  # the engine's thread rule: 1 thread unless OMP_NUM_THREADS is set
    if systems == 1:
        state = kepler_orbit(0.7, 1.0, dtype=dtype, device=device)
    else:
        gen = torch.Generator().manual_seed(0)
        state = kepler_family(systems, (cfg.e_min, cfg.e_max), (cfg.a_min, cfg.a_max), generator=gen,
                              dtype=dtype, device=device)
    gravity: Gravity = gravity_of(cfg)
    if policy_kind == "analytic":
        policy = AnalyticDt(cfg.eps, cfg.softening)
    else:
        values = config_values(cfg) | {"hidden_dims": hidden, "history_len": 0}  # ml mode, as upstream's figure
        network = build_network(values).to(device=device).eval()
        policy = LearnedDt(network, values["feature_type"], values["history_len"], gravity)
    return state, policy, gravity, torch.get_num_threads()


def _rate(state, policy, gravity, steps: int, compile: bool, record_every: int = 1) -> tuple[float, float]:
    from nbody_engine.integrators.loop import StopRule, simulate

    start = time.perf_counter()
    traj = simulate(state, policy, gravity, StopRule(max_steps=steps), compile=compile, record_every=record_every)
    seconds = time.perf_counter() - start
    assert int(traj.steps.max()) == steps, (traj.steps, steps)
    return steps * state.batch_size / seconds, seconds


def worker(args) -> dict:
    state, policy, gravity, threads = _build(args.worker, args.config)
    systems, every = state.batch_size, CASES[args.worker].record_every
    out = {"case": args.worker, "threads": threads, "systems": systems, "modes": {}}
    for mode in args.modes:
        compile = mode == "compiled"
        entry: dict = {}
        # warm up (and, compiled, compile): the first call; then a second short call shows what a
        # fresh simulate() call costs once the compiled code is cached
        first_steps = 300
        _, first_s = _rate(state, policy, gravity, first_steps, compile, every)
        _, second_s = _rate(state, policy, gravity, first_steps, compile, every)
        # calibrate N so that one timed run takes about --seconds
        probe_rate, _ = _rate(state, policy, gravity, 1000 if systems == 1 else 200, compile, every)
        steps_per_s = probe_rate / systems
        n = int(max(1000 if systems == 1 else 200, steps_per_s * args.seconds))
        if systems > 1:
            n = min(n, MAX_BATCH_STEPS * every)
        rates = [_rate(state, policy, gravity, n, compile, every)[0] for _ in range(args.repeats)]
        steady = median(rates)
        entry.update(steps_per_run=n, repeats=args.repeats, rates=rates, median=steady, best=max(rates),
                     first_call_s=first_s, second_call_s=second_s)
        if compile:
            # first call minus what its steps cost at the steady rate: the compile time
            entry["compile_s"] = max(0.0, first_s - first_steps * systems / steady)
        out["modes"][mode] = entry
    return out


# --- driver ---------------------------------------------------------------------------------

def run_case(case: str, threads, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, "--seconds", str(args.seconds),
           "--repeats", str(args.repeats), "--config", args.config, "--modes", *args.modes]
    with tempfile.TemporaryDirectory(prefix="nbody-bench-inductor-") as cache:
        extra = {} if args.warm_cache else {"TORCHINDUCTOR_CACHE_DIR": cache}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=engine_env(threads, extra), cwd=REPO,
                              check=False)
    if proc.returncode != 0:
        return {"case": case, "threads": threads or 1, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    rows = []
    for r in results:
        case = CASES[r["case"]]
        policy, systems, hidden, unit, target = case.policy, case.systems, case.hidden_dims, case.unit, case.target
        what = policy + (f" {hidden}" if hidden else "") + (f", record_every {case.record_every}"
                                                           if case.record_every > 1 else "")
        threads = f"{r['threads']}" + (" (engine default)" if r.get("engine_default") else "")
        if "error" in r:
            rows.append([r["case"], what, systems, threads, "-", "failed: " + " ".join(r["error"]), "-", "-", "-"])
            continue
        for mode, m in r["modes"].items():
            ok = "-" if target is None else ("yes" if m["median"] >= target else "no")
            rows.append([r["case"], what, systems, threads, mode, f"{fmt(m['median'])} {unit}",
                         fmt(m["best"]), fmt(m["compile_s"]) + " s" if "compile_s" in m else "-",
                         f"{TARGET_NOTES.get(r['case'], '-')}: {ok}" if target else "-"])
    return markdown_table(["case", "policy", "systems", "threads", "mode", "median", "best", "compile",
                           "target: met?"], rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 s per timed run, 3 repeats (default: 2 s, 5 repeats)")
    p.add_argument("--seconds", type=float, help="target duration of one timed run")
    p.add_argument("--repeats", type=int, help="timed runs per case and mode (median reported)")
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--modes", nargs="+", choices=["eager", "compiled"], default=["eager", "compiled"])
    p.add_argument("--config", default=str(REPO / "configs" / "kepler.toml"),
                   help="config whose values build the policies (eps, feature_type, history_len, ...)")
    p.add_argument("--warm-cache", action="store_true", help="keep the default TorchInductor cache (warm compiles)")
    p.add_argument("--worker", choices=list(CASES), help=argparse.SUPPRESS)
    args = p.parse_args()
    args.seconds = args.seconds or (1.0 if args.quick else 2.0)
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    info = machine()
    print(machine_note(info), flush=True)
    results = []
    for case in args.cases:
        for threads in CASES[case].threads:
            label = "engine default" if threads is None else f"OMP_NUM_THREADS={threads}"
            print(f"  {case} ({label}) ...", flush=True)
            r = run_case(case, threads, args)
            r["engine_default"] = threads is None
            results.append(r)
    print()
    text = table(results)
    print(text)
    path = write_results("simulation_throughput" + ("_quick" if args.quick else ""), {
        "machine": info, "load_avg_after": list(__import__("os").getloadavg()),
        "settings": {"seconds": args.seconds, "repeats": args.repeats, "config": str(Path(args.config).name),
                     "cold_compile": not args.warm_cache},
        "results": results, "markdown": text})
    print(f"\nwritten: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
