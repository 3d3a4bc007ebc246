"""What ``evaluate`` writes: the table (CSV, JSON, console text) and the Pareto plot (PNG)."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
from matplotlib.lines import Line2D

from ..events import json_safe
from ..reporting.curves import positive
from ..reporting.plots import new_figure, save_figure
from ..runs.directory import write_json, write_text
from .metrics import COLUMNS

# Okabe & Ito's colour-blind-safe palette, without its yellow (unreadable on white)
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#000000")
STYLES = {"fixed": "x:", "classic": "s--", "analytic": "o-", "analytic-symmetric": "^-.", "analytic-hmm": "<-.",
          "analytic-midpoint": "v-", "ttl": "D-", "WHFast": "P:", "IAS15": "h "}  # marker, then line style
ERRORS = (("max_rel_dE", "max |dE/E|"), ("position_error", "final position error / size"))


def _number(value, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def table_text(rows: list[dict]) -> str:
    """The table as aligned text for the console."""
    head = (f"{'problem':>10} {'system':>26} {'family':>6} {'policy':>18} {'eps':>7} {'force evals':>11} "
            f"{'evals/period':>12} {'max|dE/E|':>10} {'final|dE/E|':>11} {'max|dL/L|':>10} {'pos. error':>10} "
            f"{'wall s':>8}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['problem']:>10} {r['label']:>26} {r.get('family', '-'):>6} {r['policy']:>18} "
                     f"{_number(r['eps'], '.3g'):>7} {r['force_evals']:11d} {r['evals_per_period']:12.1f} "
                     f"{_number(r['max_rel_dE'], '10.2e')} {_number(r['final_rel_dE'], '11.2e')} "
                     f"{_number(r['max_rel_dL'], '10.2e')} {_number(r['position_error'], '10.2e')} "
                     f"{r['wall_time_s']:8.3f}")
    return "\n".join(lines)


def long_text(rows: list[dict]) -> str:
    """The long runs' lines: per problem, system and policy, max |dE/E| over the first and the
    last tenth and the growth exponent."""
    lines = []
    for r in rows:
        if isinstance(r.get("long_periods"), float) and math.isfinite(r["long_periods"]):
            lines.append(f"long run, {r['problem']} {r['label']}, {r['long_periods']:g} periods, {r['policy']} "
                         f"(eps {_number(r['eps'], 'g')}): max|dE/E| first tenth {r['long_first_dE']:.2e}, last tenth "
                         f"{r['long_last_dE']:.2e}, growth exponent {_number(r['growth_exponent'], '.2f')}")
    return "\n".join(lines)


def write_evaluation(rows: list[dict], verdicts: list[dict], statistics: list[dict], references: dict[str, str],
                     directory, checkpoints: list[str], notes: list[str]) -> dict[str, str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    paths = {"csv": directory / "table.csv", "json": directory / "table.json", "pareto": directory / "pareto.png"}
    write_text(paths["csv"], buffer.getvalue())
    write_json(paths["json"], {"model_path": checkpoints[0], "checkpoints": checkpoints, "references": references,
                               "notes": notes, "rows": json_safe(rows), "learned_versus_baselines": json_safe(verdicts),
                               "ratio_statistics": json_safe(statistics)})
    pareto_plot(rows, paths["pareto"])
    return {k: str(v) for k, v in paths.items()}


def _curves(rows: list[dict]):
    """(system index, label, policy, rows sorted by cost) for every curve of one problem (one per
    checkpoint of the learned policy)."""
    for system in sorted({r["system"] for r in rows}):
        mine = [r for r in rows if r["system"] == system]
        for policy, checkpoint in dict.fromkeys((r["policy"], r.get("checkpoint")) for r in mine):
            yield system, mine[0]["label"], policy, sorted(
                (r for r in mine if (r["policy"], r.get("checkpoint")) == (policy, checkpoint)),
                key=lambda r: r["force_evals"])


LEGEND_INCHES = 0.6  # two rows of policies above the panels


def pareto_plot(rows: list[dict], path) -> None:
    """Per problem (a row of panels), force evaluations per period against max |dE/E| and against
    the final position error: a colour and line style per policy, one thin curve over its knob
    per system of the problem's family (IAS15, adaptive to machine precision, open hexagons), the
    learned policy as stars. Lower left is better."""
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    colors = {policy: PALETTE[k % len(PALETTE)] for k, policy in enumerate(policies)}
    height = 3.2 * len(problems) + LEGEND_INCHES
    fig, axes = new_figure(2, (11, height), nrows=len(problems))
    axes = np.asarray(axes).reshape(len(problems), 2)
    for row_axes, problem in zip(axes, problems):
        for _, _, policy, curve in _curves([r for r in rows if r["problem"] == problem]):
            for ax, (key, _) in zip(row_axes, ERRORS):
                x, y = [r["evals_per_period"] for r in curve], positive([r[key] for r in curve])
                if policy == "IAS15":
                    ax.loglog(x, y, "h", color=colors[policy], ms=7, mfc="none", mew=1.2)
                elif policy in STYLES:
                    ax.loglog(x, y, STYLES[policy], color=colors[policy], ms=3, lw=1, alpha=0.6)
                else:
                    ax.loglog(x, y, "*-", color=colors[policy], ms=11, markeredgecolor="k", lw=0.8)
        for ax, (_, name) in zip(row_axes, ERRORS):
            ax.set_title(problem, fontsize=9)
            ax.set_xlabel("force evaluations per period")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], color=colors[p], linestyle=STYLES.get(p, "*-")[1:].strip() or "none",
                      marker=STYLES.get(p, "*")[0], ms=9 if p not in STYLES else 4, lw=1,
                      mfc="none" if p == "IAS15" else None, mec="k" if p not in STYLES else None, label=p)
               for p in policies]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - LEGEND_INCHES / height))
    save_figure(fig, path)
