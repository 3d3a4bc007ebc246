"""The learned time transformation (ml_ttl) against log-H (ttl) at equal force evaluations.

For each problem, both run the same systems through the same TTL step (issue 27's
``TimeTransformedLeapfrog``) at a sweep of ``eps`` (the fictitious step ``h = eps Omega(q0)
tau(q0)``); each point of a front is the median over the problem's systems of force evaluations
per time unit and of max |dE/E|. The figure of merit is the learned max |dE/E| over log-H's at the
learned point's cost (log-H's front interpolated in log-log), per checkpoint; several checkpoints
(training seeds) give the median and range.

    python bench/ml_ttl.py data/triples_s0/model/model_epoch_0014.pt [more checkpoints] \
        --problems triples triples_e09 suite_triples clusters5 cluster12 kepler

Problems (held out: drawn with other seeds than any training family):
- triples: 16 coplanar hierarchical triples, inner e 0.3-0.8, mass ratios 0.1-1 (the
  ml_ttl_triples.toml family), 10 inner periods;
- triples_e09: the same with inner e 0.8-0.95 (outside that family's eccentricities);
- suite_triples: evaluate's four inclined 3D triples (equal masses, ratios 5-30), 10 inner periods;
- clusters5: 16 bound 5-body clusters (virial, masses 0.1-1, softening 0.05), 2 energy periods;
- cluster12: evaluate's cold 12-body clusters (softening 0.05), two free-fall times;
- kepler: e = 0.5, 0.7, 0.9, 10 periods (on two bodies g is a constant: the fronts must agree).
``--ablation PATH`` plots g against its features over the held-out triples (first checkpoint).
``--long N`` adds a run of N time units at the middle eps: max |dE/E| over the first and the last
tenth of it, for log-H and the first checkpoint.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from nbody_engine.config.schema import Config
from nbody_engine.evaluate.problems import cluster_problem, triples_problem
from nbody_engine.integrators.loop import StopRule, period_of, simulate
from nbody_engine.integrators.ttl import LogHamiltonian, TimeTransformedLeapfrog
from nbody_engine.learning.time_transform import FEATURE_NAMES, LearnedOmega, shape_features
from nbody_engine.physics.gravity import Gravity, State
from nbody_engine.physics.initial_conditions import bound_clusters, energy_period, hierarchical_triples, kepler_orbit
from nbody_engine.runs.checkpoints import load_checkpoint
from nbody_engine.runs.trained_policy import checked_omega_network

EPS = (0.1, 0.2, 0.4, 0.8)
CLUSTER_SOFTENING = 0.05  # as evaluate's cluster: point-mass encounters in a 5-body cluster defeat every TTL


def problem(name: str) -> tuple[State, torch.Tensor, float, float]:
    """Systems, time unit (B,), run length in time units, softening."""
    generator = torch.Generator().manual_seed(1000)
    if name in ("triples", "triples_e09"):
        e = (0.3, 0.8) if name == "triples" else (0.8, 0.95)
        state = hierarchical_triples(16, e, (0.8, 1.2), 0.1, generator=generator)
        return state, period_of(state.mass[:, :2], state.position[:, :2], state.velocity[:, :2]), 10.0, 0.0
    if name == "suite_triples":
        p = triples_problem(Config(eval_systems=0), torch.float64, "cpu")
        return p.state, p.time_unit, 10.0, 0.0
    if name == "clusters5":
        state = bound_clusters(16, 5, 0.1, generator=generator)
        return state, energy_period(state), 2.0, CLUSTER_SOFTENING
    if name == "cluster12":
        p = cluster_problem(Config(eval_systems=0), torch.float64, "cpu")
        return p.state, p.time_unit, 2.0, p.softening
    state = kepler_orbit([0.5, 0.7, 0.9], 1.0)
    return state, period_of(state.mass, state.position, state.velocity), 10.0, 0.0


def front(omega, state: State, unit: torch.Tensor, length: float, gravity: Gravity, eps=EPS) -> np.ndarray:
    """(len(eps), 2): median force evaluations per time unit and median max |dE/E| per eps, all
    eps values and systems in one batch."""
    B, K = state.batch_size, len(eps)
    tiled = State(*(t.repeat(K, *[1] * (t.dim() - 1)) for t in (state.mass, state.position, state.velocity,
                                                                  state.time)))
    eps_per_system = torch.tensor(eps, dtype=torch.float64).repeat_interleave(B)
    t_end = (length * unit).repeat(K)
    traj = simulate(tiled, TimeTransformedLeapfrog(omega, gravity, eps=eps_per_system), gravity,
                    StopRule(t_end=t_end), record_every=1)
    error = (np.abs(traj.energy / traj.energy[0] - 1)).max(0).reshape(K, B)
    evals = (traj.force_evals / length).reshape(K, B)
    return np.stack([np.median(evals, 1), np.median(error, 1)], -1)


def ratio_at_equal_cost(learned: np.ndarray, baseline: np.ndarray) -> list[float]:
    """Learned error over log-H's at the learned point's cost (log-log interpolation; NaN outside
    log-H's sweep: never extrapolated)."""
    order = np.argsort(baseline[:, 0])
    x, y = np.log(baseline[order, 0]), np.log(baseline[order, 1])
    out = []
    for cost, error in learned:
        c = math.log(cost)
        out.append(float(error / math.exp(np.interp(c, x, y))) if x[0] <= c <= x[-1] else float("nan"))
    return out


def long_run(omega, state, unit, length, gravity) -> tuple[float, float]:
    """Max |dE/E| (median over systems) over the first and the last tenth of a long run at eps = 0.4."""
    traj = simulate(state, TimeTransformedLeapfrog(omega, gravity, eps=0.4), gravity,
                    StopRule(t_end=length * unit), record_every=16)
    error = np.abs(traj.energy / traj.energy[0] - 1)
    fraction = traj.time / traj.time[-1]
    first = np.where(fraction <= 0.1, error, 0).max(0)
    last = np.where(fraction >= 0.9, error, 0).max(0)
    return float(np.median(first)), float(np.median(last))


def ablation(network, path: str) -> None:
    """Scatter of g against three of its features over the held-out triples' learned runs (eps 0.2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    state, unit, length, _ = problem("triples")
    omega = LearnedOmega(network)
    with torch.no_grad():
        traj = simulate(state, TimeTransformedLeapfrog(omega, Gravity(), eps=0.2), Gravity(),
                        StopRule(t_end=length * unit), record_every=4)
        position = torch.as_tensor(traj.position).flatten(0, 1)
        mass = state.mass.repeat(traj.position.shape[0], 1)
        features, _, _ = shape_features(mass, position)
        g = omega.log_correction(mass, position)[0]
    shown = [0, 3, 5]  # the widest-pair mean, the closest-pair mean, the fastest-pair mean
    figure, axes = plt.subplots(1, len(shown), figsize=(12, 3.6), sharey=True)
    for ax, k in zip(axes, shown):
        ax.scatter(features[:, k], g, s=2, c=features[:, 7], cmap="viridis", alpha=0.5)
        ax.set_xlabel(FEATURE_NAMES[k])
    axes[0].set_ylabel("g = log(Omega / U)")
    figure.suptitle("learned g along 16 held-out hierarchical triples (colour: log(m_min / m_max))")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--problems", nargs="+", default=["triples", "triples_e09", "suite_triples", "clusters5",
                                                          "cluster12", "kepler"])
    parser.add_argument("--long", type=float, default=0.0)
    parser.add_argument("--ablation", help="write the plot of g against its features (first checkpoint) here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    networks = [checked_omega_network(load_checkpoint(path)) for path in args.checkpoints]
    if args.ablation:
        ablation(networks[0], args.ablation)
    print("| problem | eps | log-H evals/unit | log-H max dE/E | learned evals/unit (ckpt 1) | "
          "learned / log-H at equal evals, per checkpoint | median [range] |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.problems:
        state, unit, length, softening = problem(name)
        gravity = Gravity(softening)
        with torch.no_grad():
            base = front(LogHamiltonian(), state, unit, length, gravity)
            learned = [front(LearnedOmega(net, softening), state, unit, length, gravity) for net in networks]
        ratios = np.array([ratio_at_equal_cost(points, base) for points in learned])  # (checkpoints, eps)
        for k, eps in enumerate(EPS):
            per = ratios[:, k]
            spread = (f"{np.nanmedian(per):.3g} [{np.nanmin(per):.3g}, {np.nanmax(per):.3g}]"
                      if np.isfinite(per).any() else "outside log-H's sweep")
            print(f"| {name} | {eps:g} | {base[k, 0]:.1f} | {base[k, 1]:.2e} | {learned[0][k, 0]:.1f} | "
                  f"{', '.join(f'{r:.3g}' for r in per)} | {spread} |", flush=True)
        if args.long:
            with torch.no_grad():
                for label, omega in (("log-H", LogHamiltonian()), ("learned", LearnedOmega(networks[0], softening))):
                    first, last = long_run(omega, state, unit, args.long, gravity)
                    print(f"| {name} long {args.long:g} units, {label} | 0.4 | first tenth {first:.2e} | "
                          f"last tenth {last:.2e} | | | |", flush=True)


if __name__ == "__main__":
    main()
