"""The simulation view: a finished simulation's errors, dt and orbit, overlaid with the
analytic policy's run on the same initial conditions when the learned policy was simulated."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

hv.extension("bokeh", logo=False)

ORBIT_FRAME = 340  # px, the orbit plot's square frame
TINY = 1e-18
POLICY_COLORS = {"simulate": "#1f77b4", "analytic": "#ff7f0e"}
SUMMARY_ROWS = ("steps", "steps_per_period", "max_rel_energy_error", "rel_energy_error_final",
                "max_rel_angular_momentum_error", "dt_min", "dt_max", "wall_time_s")


def _series(path: str, system: int = 0) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        energy, L = data["energy"][:, system], data["angular_momentum"][:, system]
        dL = np.abs(L - L[0]) if L.ndim == 1 else np.linalg.norm(L - L[0], axis=-1)
        L0 = abs(L[0]) if L.ndim == 1 else np.linalg.norm(L[0])
        return {"time": data["time"][:, system], "dt": data["dt"][:, system],
                "rel_dE": np.abs(energy - energy[0]) / abs(energy[0]) + TINY, "rel_dL": dL / (L0 or 1) + TINY,
                "position": data["position"][:, system]}


def _label(name: str, result: dict) -> str:
    return "analytic" if name == "analytic" else result.get("integrator_mode", "learned")


def _first(value):
    return value[0] if isinstance(value, list) else value


def comparison_view(results: dict) -> pn.Column:
    """Plots and a summary table for ``results`` of a job (keys 'simulate' and maybe 'analytic')."""
    runs = {name: results[name] for name in ("simulate", "analytic") if name in results}
    series = {name: _series(r["outputs"]["trajectory"]) for name, r in runs.items()}
    curves = {y: [] for y in ("rel_dE", "rel_dL", "dt")}
    for name, s in series.items():
        label = "learned / simulated" if name == "simulate" else "analytic"
        frame = pd.DataFrame({k: s[k][1:] for k in ("time", "rel_dE", "rel_dL", "dt")})
        for y in curves:
            curves[y].append(hv.Curve(frame, "time", y, label=label).opts(color=POLICY_COLORS[name]))
    # One pane per plot: responsive plots inside one hv.Layout collapse to zero height in Panel.
    opts = dict(logy=True, responsive=True, min_height=220, show_grid=True, legend_position="bottom_right")
    plots = [hv.Overlay(curves[y]).opts(title=title, **opts)
             for y, title in (("rel_dE", "|dE/E| against time"), ("rel_dL", "|dL/L| against time"),
                              ("dt", "dt against time"))]
    pos = series["simulate"]["position"]
    # A fixed square frame keeps data_aspect=1 honest (a responsive one stretches without bound).
    orbit = hv.Overlay([hv.Path((pos[:, b, 0], pos[:, b, 1]), label=f"body {b}") for b in range(pos.shape[1])]).opts(
        data_aspect=1, frame_width=ORBIT_FRAME, frame_height=ORBIT_FRAME, title="orbit (first system, x-y)")
    table = pd.DataFrame({("learned / simulated" if n == "simulate" else "analytic"):
                          [_first(r.get(k)) for k in SUMMARY_ROWS] for n, r in runs.items()}, index=list(SUMMARY_ROWS))
    return pn.Column(pn.Row(*(pn.pane.HoloViews(p, sizing_mode="stretch_width", height=280) for p in plots),
                            sizing_mode="stretch_width"),
                     pn.Row(pn.pane.HoloViews(orbit), pn.pane.DataFrame(table, float_format="{:.4g}".format,
                                                                        sizing_mode="stretch_width")),
                     sizing_mode="stretch_width")

