"""Is the learned policy better? Its errors against each baseline's at equal cost.

A baseline's rows for one system trace a curve over its knob; the learned policy's point is
compared with that curve interpolated log-log at the learned policy's cost: at equal force
evaluations (the primary comparison) for max |dE/E| and for the position error, and at equal
wall time for max |dE/E|. A ratio below 1 means the learned policy is better; None means its
cost lies outside the baseline's sweep even once extended, and ``outside`` then says on which
side ("more": the learned point costs more than every point of the baseline; "less").
"""

from __future__ import annotations

import math

METRICS = (("force_evals", "max_rel_dE", "ratio"), ("force_evals", "position_error", "position_ratio"),
           ("wall_time_s", "max_rel_dE", "wall_ratio"))  # cost, error, the name of their ratio


def interpolate_loglog(curve: list[tuple[float, float]], x: float) -> float | None:
    """The curve's y at ``x``, log-log between the first pair of points that bracket it."""
    points = sorted(p for p in curve if p[0] > 0 and p[1] > 0 and math.isfinite(p[1]))
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            w = math.log(x / x0) / math.log(x1 / x0) if x1 > x0 else 0.0
            return math.exp(math.log(y0) + w * math.log(y1 / y0))
    return None


def learned_versus(rows: list[dict], problem: str, system: int, baseline: str, learned: str = "learned") -> list[dict]:
    """One verdict per point of the ``learned`` policy on (problem, system) against ``baseline``."""
    mine = [r for r in rows if r["problem"] == problem and r["system"] == system]
    verdicts = []
    for point in (r for r in mine if r["policy"] == learned):
        verdict = {"problem": problem, "system": system, "label": point["label"], "baseline": baseline,
                   "learned_eps": point["eps"], "force_evals": point["force_evals"],
                   "learned_max_rel_dE": point["max_rel_dE"]}
        for cost, error, name in METRICS:
            theirs = interpolate_loglog([(r[cost], r[error]) for r in mine if r["policy"] == baseline], point[cost])
            if error == "max_rel_dE" and cost == "force_evals":
                verdict["baseline_max_rel_dE_at_same_evals"] = theirs
            verdict[name] = point[error] / theirs if theirs and math.isfinite(point[error]) else None
        costs = [r["force_evals"] for r in mine if r["policy"] == baseline]
        verdict["outside"] = None if not costs or min(costs) <= point["force_evals"] <= max(costs) else \
            "more" if point["force_evals"] > max(costs) else "less"
        verdicts.append(verdict)
    return verdicts


def all_verdicts(rows: list[dict], baselines: list[str]) -> list[dict]:
    systems = sorted({(r["problem"], r["system"]) for r in rows if r["policy"] == "learned"},
                     key=lambda ps: ([r["problem"] for r in rows].index(ps[0]), ps[1]))
    return [v for problem, system in systems for name in baselines for v in learned_versus(rows, problem, system, name)]


def _ratio(value: float | None) -> str:
    return "  -  " if value is None else f"{value:5.2f}" if value < 1000 else f"{value:.2g}"


def verdict_text(verdicts: list[dict]) -> str:
    """One line per learned point and baseline, and per problem a plain summary."""
    lines = []
    for problem in dict.fromkeys(v["problem"] for v in verdicts):
        mine = [v for v in verdicts if v["problem"] == problem]
        for v in mine:
            head = f"{problem} {v['label']}: at {v['force_evals']} force evals, learned vs {v['baseline']}: "
            if v["outside"]:
                lines.append(head + f"learned costs {v['outside']} than every point of {v['baseline']}: "
                                    "no comparison at equal force evaluations")
                continue
            lines.append(head + f"max|dE/E| ratio {_ratio(v['ratio'])}, position error ratio "
                                f"{_ratio(v['position_ratio'])}, max|dE/E| at equal wall time "
                                f"{_ratio(v['wall_ratio'])}")
        lines.append(f"{problem}: {summary(mine)}")
    return "\n".join(lines)


def summary(verdicts: list[dict]) -> str:
    """Where the learned policy wins and loses on max |dE/E| at equal force evaluations."""
    compared = [v for v in verdicts if v["ratio"] is not None]
    if not compared:
        return "the learned policy's cost lies outside every baseline's sweep: no comparison at equal cost"
    wins = [v for v in compared if v["ratio"] <= 1]
    best, worst = min(compared, key=lambda v: v["ratio"]), max(compared, key=lambda v: v["ratio"])
    return (f"learned on or below the baseline at equal force evaluations in {len(wins)} of {len(compared)} "
            f"comparisons; best {best['ratio']:.2g}x ({best['label']} vs {best['baseline']}), "
            f"worst {worst['ratio']:.2g}x ({worst['label']} vs {worst['baseline']})")
