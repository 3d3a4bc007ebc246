"""The Evaluate view: ``nbody-runner evaluate``'s result in the page.

Per problem, an interactive Pareto plot (HoloViews on Bokeh: hover names the policy, system,
eps and figures; zoom and pan) of force evaluations per period against max |dE/E|, a colour per
policy from a colour-blind-safe palette (no yellow on white), the learned policy as large stars,
IAS15 as a competitor's point; then the ratios at equal cost (median and range over the
problem's systems, and per system), the long runs' drift
(first and last tenth, growth exponent), the notes, and the full table."""

from __future__ import annotations

import holoviews as hv
import pandas as pd
import panel as pn

from nbody_engine.evaluate.report import PALETTE
from nbody_engine.evaluate.verdicts import RATIOS, ratio_statistics, summary

from .plot_style import hv_clean_log_ticks

hv.extension("bokeh", logo=False)

# the Scatter's values: its y first (a Scatter draws its first value dimension), then what hover shows
HOVER = ["max_rel_dE", "policy", "label", "eps", "force_evals", "position_error", "wall_time_s"]
VERDICT_COLUMNS = {"label": "system", "baseline": "baseline", "force_evals": "learned force evals",
                   "learned_max_rel_dE": "learned max|dE/E|", "baseline_max_rel_dE_at_same_evals": "baseline max|dE/E|",
                   "ratio": "ratio at equal evals", "position_ratio": "position-error ratio",
                   "wall_ratio": "ratio at equal wall time", "outside": "learned costs ... than every point"}
LONG_COLUMNS = {"label": "system", "policy": "policy", "eps": "eps", "long_periods": "periods",
                "long_first_dE": "max|dE/E| first tenth", "long_last_dE": "max|dE/E| last tenth",
                "growth_exponent": "growth exponent"}


def pareto_plot(rows: pd.DataFrame, problem: str) -> hv.Overlay:
    """One problem's curves: per policy, one line over its knob for each system (and checkpoint)
    of the problem's family, drawn as one multi-line, and its points, learned as stars: two
    glyphs per policy however many systems the family holds."""
    mine = rows[(rows.problem == problem) & (rows.max_rel_dE > 0)]
    policies = list(dict.fromkeys(mine.policy))
    colors = {p: PALETTE[k % len(PALETTE)] for k, p in enumerate(policies)}
    curves = ["label"] + (["checkpoint"] if "checkpoint" in mine else [])  # a learned curve per checkpoint
    layers = []
    for policy, points in mine.groupby("policy", sort=False):
        lines = [curve.sort_values("force_evals")[["evals_per_period", "max_rel_dE"]].to_numpy()
                 for _, curve in points.groupby(curves, sort=False, dropna=False)]
        learned = policy == "learned"
        layers += [hv.Path(lines, ["evals_per_period", "max_rel_dE"], label=policy).opts(color=colors[policy],
                                                                                          line_width=1, alpha=0.6),
                   hv.Scatter(points.assign(eps=points["eps"].astype(str)), "evals_per_period", HOVER,
                              label=policy).opts(
                       color=colors[policy], size=14 if learned else 6, marker="star" if learned else "circle",
                       line_color="black" if learned else colors[policy], tools=["hover"])]
    # the legend sits beside the plot (a family's curves fill it), and a click on a policy mutes
    # it; the wheel scrolls the page until the toolbar turns zooming on
    return hv.Overlay(layers).opts(logx=True, logy=True, width=820, height=400, title=problem,
                                   legend_position="right", legend_opts={"click_policy": "mute"},
                                   active_tools=["pan"], xlabel="force evaluations per period", ylabel="max |dE/E|",
                                   show_grid=True, hooks=[hv_clean_log_ticks])


def verdict_table(verdicts: list[dict], problem: str) -> pd.DataFrame:
    """The verdicts on ``problem``, numbers to three significant digits ("-": no comparison)."""
    mine = pd.DataFrame([v for v in verdicts if v["problem"] == problem], columns=list(VERDICT_COLUMNS))
    shown = mine.rename(columns=VERDICT_COLUMNS)
    for column in list(VERDICT_COLUMNS.values())[3:-1]:
        shown[column] = [f"{v:.3g}" if pd.notna(v) else "-" for v in shown[column]]
    return shown


def statistics_table(verdicts: list[dict], problem: str) -> pd.DataFrame:
    """Each ratio's median and range over ``problem``'s systems, per baseline and training family."""
    table = []
    for entry in ratio_statistics([v for v in verdicts if v["problem"] == problem]):
        row = {"baseline": entry["baseline"], "family": entry["family"] or "-", "systems": entry["points"],
               "learned slower than every run": entry["slower"]}
        for name, label in RATIOS:
            figures = entry[name]
            row[label] = "-" if figures["median"] is None else \
                f"{figures['median']:.3g} [{figures['min']:.3g}, {figures['max']:.3g}]"
        table.append(row)
    return pd.DataFrame(table)


def long_table(rows: pd.DataFrame, problem: str) -> pd.DataFrame:
    """The long runs on ``problem``: a row per policy and system (empty where none ran)."""
    if "long_periods" not in rows:
        return pd.DataFrame(columns=list(LONG_COLUMNS.values()))
    mine = rows[(rows.problem == problem) & rows.long_periods.notna()]
    return mine[list(LONG_COLUMNS)].rename(columns=LONG_COLUMNS)


def evaluation_view(result: dict) -> pn.Column:
    """Per problem: the reference used, the Pareto plot, a plain summary, each ratio's median
    [range] over the family's systems, and the verdicts per system; then the whole table."""
    rows = pd.DataFrame(result["rows"])
    sections = []
    for problem, reference in result["references"].items():
        mine = [v for v in result["verdicts"] if v["problem"] == problem]
        parts = [pn.pane.Markdown(f"### {problem}\nreference: {reference}. {summary(mine)}."),
                 pn.pane.HoloViews(pareto_plot(rows, problem)),
                 pn.pane.Markdown("Ratios (learned / baseline; below 1: learned better): median [range] over systems"),
                 pn.widgets.Tabulator(statistics_table(result["verdicts"], problem), disabled=True, show_index=False,
                                      sizing_mode="stretch_width"),
                 pn.pane.Markdown("Per system"),
                 pn.widgets.Tabulator(verdict_table(result["verdicts"], problem), disabled=True, show_index=False,
                                      sizing_mode="stretch_width", pagination="local", page_size=10)]
        drift = long_table(rows, problem)
        if len(drift):
            parts += [pn.pane.Markdown("Long runs: energy drift"),
                      pn.widgets.Tabulator(drift, disabled=True, show_index=False, sizing_mode="stretch_width")]
        sections.append(pn.Column(*parts, sizing_mode="stretch_width"))
    notes = result.get("notes") or []
    if notes:
        sections.append(pn.pane.Markdown("\n".join(f"- {note}" for note in notes)))
    table = pn.widgets.Tabulator(rows, disabled=True, show_index=False, pagination="local", page_size=20,
                                 sizing_mode="stretch_width")
    return pn.Column(*sections, pn.Card(table, title="All rows", collapsed=True), sizing_mode="stretch_width")

