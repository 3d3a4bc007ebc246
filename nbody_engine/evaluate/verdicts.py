"""Is the learned policy better? Its errors against each baseline's at equal cost.

A baseline's rows for one system trace a curve over its knob; the learned policy's point is
compared with that curve interpolated log-log at the learned policy's cost: at equal force
evaluations (the primary comparison) for max |dE/E| and for the position error, and at equal
wall time for max |dE/E|. A ratio below 1 means the learned policy is better; None means its
cost lies outside the baseline's sweep even once extended, and ``outside`` then says on which
side ("more": the learned point costs more than every point of the baseline; "less").

A problem is a family of systems, so each ratio is also summarized (:func:`ratio_statistics`)
as its median and range over the systems, apart for those inside and outside the checkpoint's
training family.
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
        verdict = {"problem": problem, "system": system, "label": point["label"], "family": point.get("family"),
                   "checkpoint": point.get("checkpoint"), "baseline": baseline,
                   "learned_eps": point["eps"], "force_evals": point["force_evals"],
                   "learned_max_rel_dE": point["max_rel_dE"]}
        for cost, error, name in METRICS:
            theirs = interpolate_loglog([(r[cost], r[error]) for r in mine if r["policy"] == baseline], point[cost])
            if error == "max_rel_dE" and cost == "force_evals":
                verdict["baseline_max_rel_dE_at_same_evals"] = theirs
            verdict[name] = point[error] / theirs if theirs and math.isfinite(point[error]) else None
        verdict["outside"] = _outside([r["force_evals"] for r in mine if r["policy"] == baseline],
                                      point["force_evals"])
        verdict["wall_outside"] = _outside([r["wall_time_s"] for r in mine if r["policy"] == baseline],
                                           point["wall_time_s"])
        verdicts.append(verdict)
    return verdicts


def _outside(costs: list[float], cost: float) -> str | None:
    """"more" or "less" where ``cost`` lies beyond every one of ``costs``; None within them."""
    if not costs or min(costs) <= cost <= max(costs):
        return None
    return "more" if cost > max(costs) else "less"


def all_verdicts(rows: list[dict], baselines: list[str]) -> list[dict]:
    systems = sorted({(r["problem"], r["system"]) for r in rows if r["policy"] == "learned"},
                     key=lambda ps: ([r["problem"] for r in rows].index(ps[0]), ps[1]))
    return [v for problem, system in systems for name in baselines for v in learned_versus(rows, problem, system, name)]


RATIOS = (("ratio", "max|dE/E| at equal force evals"), ("position_ratio", "position error at equal force evals"),
          ("wall_ratio", "max|dE/E| at equal wall time"))


def ratio_statistics(verdicts: list[dict]) -> list[dict]:
    """Per problem, baseline and training family ("in", "out"; None where rows carry none): each
    ratio's median, smallest and largest over the learned points compared (every system of every
    checkpoint), how many were, each checkpoint's own median (``by_checkpoint``: the spread that
    retraining makes), and how many points cost more or less than every point of the baseline
    (``outside``: no comparison at equal force evaluations) and how many learned runs take longer
    than every run of the baseline (``slower``: the baseline reaches its best accuracy sooner)."""
    groups: dict[tuple, list[dict]] = {}
    for v in verdicts:
        groups.setdefault((v["problem"], v["baseline"], v.get("family")), []).append(v)
    statistics = []
    for (problem, baseline, family), mine in groups.items():
        entry = {"problem": problem, "baseline": baseline, "family": family, "points": len(mine),
                 "outside": {side: sum(1 for v in mine if v["outside"] == side) for side in ("more", "less")},
                 "slower": sum(1 for v in mine if v.get("wall_outside") == "more")}
        for name, _ in RATIOS:
            values = sorted(v[name] for v in mine if v[name] is not None)
            entry[name] = {"median": _median(values), "min": values[0] if values else None,
                           "max": values[-1] if values else None, "compared": len(values),
                           "by_checkpoint": [_median(sorted(v[name] for v in mine if v[name] is not None and
                                                            (v.get("checkpoint") or 0) == k))
                                             for k in sorted({v.get("checkpoint") or 0 for v in mine})]}
        statistics.append(entry)
    return statistics


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    middle = len(values) // 2  # of an even count, the geometric mean of the middle two: ratios live on a log scale
    return values[middle] if len(values) % 2 else math.sqrt(values[middle - 1] * values[middle])


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def statistics_line(entry: dict) -> str:
    """One line: each ratio's median [range] over the systems compared."""
    family = f" (family {entry['family']})" if entry["family"] else ""
    parts = [f"{label} {_ratio(entry[name]['median'])} [{_ratio(entry[name]['min'])}, {_ratio(entry[name]['max'])}] "
             f"of {entry[name]['compared']}" for name, label in RATIOS]
    medians = entry["ratio"]["by_checkpoint"]
    if len(medians) > 1:
        parts.append("per checkpoint, max|dE/E| median " + " / ".join(_ratio(m) for m in medians))
    for side, count in entry["outside"].items():
        if count:
            parts.append(f"learned costs {side} than every point of {entry['baseline']} in {count} of "
                         f"{entry['points']} (no comparison at equal force evaluations)")
    if entry["slower"]:
        parts.append(f"learned takes longer than every run of {entry['baseline']} in {entry['slower']} of "
                     f"{entry['points']}")
    return f"{entry['problem']}{family}, learned vs {entry['baseline']}: median [range] of " + "; ".join(parts)


def verdict_text(verdicts: list[dict]) -> str:
    """Per problem: a line per baseline and training family with each ratio's median and range
    over the systems (table.json holds every system's), and a plain summary."""
    lines = []
    statistics = ratio_statistics(verdicts)
    for problem in dict.fromkeys(v["problem"] for v in verdicts):
        lines += [statistics_line(entry) for entry in statistics if entry["problem"] == problem]
        lines.append(f"{problem}: {summary([v for v in verdicts if v['problem'] == problem])}")
    return "\n".join(lines)


def summary(verdicts: list[dict]) -> str:
    """Where the learned policy wins and loses on max |dE/E| at equal force evaluations, and at
    equal wall time (where a learned run taking longer than every run of a baseline counts as a
    loss: the baseline reaches its best accuracy sooner)."""
    compared = [v for v in verdicts if v["ratio"] is not None]
    if not compared:
        return "the learned policy's cost lies outside every baseline's sweep: no comparison at equal cost"
    wins = [v for v in compared if v["ratio"] <= 1]
    best, worst = min(compared, key=lambda v: v["ratio"]), max(compared, key=lambda v: v["ratio"])
    timed = [v for v in verdicts if v["wall_ratio"] is not None]
    wall_wins = [v for v in timed if v["wall_ratio"] <= 1]
    slower = [v for v in verdicts if v.get("wall_outside") == "more"]
    median = _median(sorted(v["ratio"] for v in compared))
    return (f"learned on or below the baseline at equal force evaluations in {len(wins)} of {len(compared)} "
            f"comparisons (median ratio {median:.2g}); best {best['ratio']:.2g}x ({best['label']} vs "
            f"{best['baseline']}), "
            f"worst {worst['ratio']:.2g}x ({worst['label']} vs {worst['baseline']}); at equal wall time in "
            f"{len(wall_wins)} of {len(timed) + len(slower)} (in {len(slower)} the learned run takes longer than "
            f"every run of the baseline)")
