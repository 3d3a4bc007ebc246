"""How much could reshaping the analytic step gain on a Kepler orbit, and which way?

A study of the room the learned policy has, not a timing. For each eccentricity it simulates the
analytic policy tilted by a power of the separation,

    dt = eps * pairwise_timescale(state) * (r / a) ** tilt,

for ``Nperiod`` periods from pericentre at several ``eps`` (one batched run per tilt), and
reports each tilt's max |dE/E| divided by the untilted analytic policy's at the same steps per
period (interpolated log-log between the ``eps`` values that bracket it, as ``nbody-runner
evaluate`` does). Below 1: that tilt beats the analytic policy at equal cost. A negative tilt
lengthens pericentre steps relative to apocentre ones (a flatter profile), a positive one
shortens them.

``--model-path`` adds a checkpoint's own tilt on each orbit: the slope of log(correction) against
log(r) over its second period, where the correction ``dt / (eps * tau)`` is what its network
multiplies the analytic step by. A policy whose tilt is near the row's best has learned the
shape that orbit needs.

    python bench/tilt_sweep.py                            # e = 0.5 ... 0.9, ~2 min on 2 cores
    python bench/tilt_sweep.py --model-path data/kepler/model/model_epoch_0039.pt
    python bench/tilt_sweep.py --e 0.5 0.7 --tilts -0.25 0.25 --periods 3

Prints a markdown table (paste it into docs/BENCHMARKS.md) and writes bench/results/tilt_sweep.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import REPO, machine, machine_note, markdown_table, write_results

from nbody_engine.config.loading import load_configs
from nbody_engine.evaluate import learned_versus
from nbody_engine.integrators.loop import StopRule, period_of, simulate
from nbody_engine.integrators.policies import pairwise_timescale
from nbody_engine.physics.gravity import Gravity, State, relative_change
from nbody_engine.physics.initial_conditions import kepler_orbit
from nbody_engine.runs.trained_policy import learned_policy_from_checkpoint


class TiltedAnalyticDt:
    """``eps * pairwise_timescale * (r / a) ** tilt`` for a batch of two-body systems, one
    ``eps`` per system."""

    def __init__(self, eps: torch.Tensor, tilt: float, a: float) -> None:
        self.eps, self.tilt, self.a = eps, tilt, a

    def init(self, state: State):
        return None

    def update(self, carry, state: State, dt: torch.Tensor, acc=None):
        return carry

    def relative_rule(self, binaries):
        """None: the tilt has no relative rule written, so binaries take the general step."""
        return None

    def dt(self, state: State, carry=None, acc=None) -> torch.Tensor:
        return self.eps * pairwise_timescale(state) * (separation(state) / self.a) ** self.tilt


def separation(state: State) -> torch.Tensor:
    """|x_1 - x_0| of each two-body system, (B,)."""
    return (state.position[:, 1] - state.position[:, 0]).norm(dim=-1)


def tilted_runs(e: float, a: float, tilt: float, eps: list[float], periods: int) -> list[dict]:
    """One row per eps: steps per period and max |dE/E| of the tilted policy."""
    state = kepler_orbit([e] * len(eps), a)
    period = period_of(state.mass, state.position, state.velocity)
    policy = TiltedAnalyticDt(torch.tensor(eps, dtype=torch.float64), tilt, a)
    traj = simulate(state, policy, Gravity(), StopRule(t_end=periods * period))
    error = relative_change(traj.energy, traj.energy[0], vector=False).max(0)
    return [{"eps": x, "steps_per_period": float(traj.steps[i]) / periods, "max_rel_dE": float(error[i])}
            for i, x in enumerate(eps)]


def ratio_to_analytic(point: dict, analytic: list[dict]) -> float | None:
    """The point's max |dE/E| over the untilted policy's at the same steps per period."""
    rows = [{"system": 0, "policy": "analytic", **r} for r in analytic]
    rows.append({"system": 0, "policy": "learned", "e": None, **point})
    return learned_versus(rows, 0, "analytic")["ratio"]


def learned_tilt(model_path: str, e: float, a: float) -> float:
    """The slope of log(correction) against log(r) of a checkpoint's policy over its second period."""
    cfg = load_configs("evaluate", None, {"model_path": model_path})["simulate"]
    policy, _ = learned_policy_from_checkpoint(cfg, torch.device("cpu"), as_trained=True)
    state = kepler_orbit(e, a)
    period = period_of(state.mass, state.position, state.velocity)
    traj = simulate(state, policy, Gravity(), StopRule(t_end=2 * period))
    rows = State(torch.from_numpy(traj.mass).expand(len(traj.time), -1),
                 torch.from_numpy(traj.position[:, 0]), torch.from_numpy(traj.velocity[:, 0]),
                 torch.from_numpy(traj.time[:, 0]))
    second = slice(len(traj.time) // 2, -2)  # the last step is cut to land on t_end
    correction = traj.dt[1:, 0] / (policy.network.eps * pairwise_timescale(rows).numpy()[:-1])
    r = separation(rows).numpy()[:-1]
    return float(np.polyfit(np.log(r[second]), np.log(correction[second]), 1)[0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--e", nargs="+", type=float, default=[0.5, 0.55, 0.6, 0.7, 0.8, 0.9], help="eccentricities")
    p.add_argument("--tilts", nargs="+", type=float, default=[-0.5, -0.25, 0.25, 0.5],
                   help="powers of r/a to try (0, the analytic policy, is always run)")
    p.add_argument("--eps", nargs="+", type=float, default=[0.0125, 0.025, 0.05, 0.1, 0.2],
                   help="eps values of every curve; the ratio is reported at the middle one")
    p.add_argument("--periods", type=int, default=10, help="periods simulated (Nperiod)")
    p.add_argument("--a", type=float, default=1.0, help="semi-major axis")
    p.add_argument("--model-path", help="a checkpoint whose own tilt is reported per eccentricity")
    args = p.parse_args()
    torch.set_num_threads(1)
    info = machine()
    print(machine_note(info), flush=True)
    tilts = sorted(set(args.tilts) - {0.0})
    middle = len(args.eps) // 2
    results = []
    for e in args.e:
        analytic = tilted_runs(e, args.a, 0.0, args.eps, args.periods)
        row = {"e": e, "steps_per_period": analytic[middle]["steps_per_period"],
               "analytic_max_rel_dE": analytic[middle]["max_rel_dE"], "ratio": {}}
        for tilt in tilts:
            point = tilted_runs(e, args.a, tilt, args.eps, args.periods)[middle]
            row["ratio"][tilt] = ratio_to_analytic(point, analytic)
        if args.model_path:
            row["learned_tilt"] = learned_tilt(args.model_path, e, args.a)
        results.append(row)
        print(f"  e = {e}: " + ", ".join(f"tilt {t:+g}: {r:.2f}" for t, r in row["ratio"].items() if r), flush=True)
    headers = ["e", "analytic steps/period", "analytic max \\|dE/E\\|"] + [f"tilt {t:+g}" for t in tilts]
    headers += ["learned tilt"] if args.model_path else []
    rows = [[f"{r['e']:g}", f"{r['steps_per_period']:.0f}", f"{r['analytic_max_rel_dE']:.2e}",
             *(f"{r['ratio'][t]:.2f}" if r["ratio"][t] else None for t in tilts)]
            + ([f"{r['learned_tilt']:+.2f}"] if args.model_path else []) for r in results]
    text = markdown_table(headers, rows)
    print()
    print(text)
    path = write_results("tilt_sweep", {"machine": info, "settings": vars(args), "results": results,
                                        "markdown": text})
    print(f"\nwritten: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
