"""Live plots: HoloViews DynamicMaps over bounded ``Buffer`` streams.

The session's drain callback turns queued engine events into one DataFrame per buffer and
sends each once per tick (HoloViews then patches the Bokeh sources instead of resending
them). Every buffer has a fixed length, so memory stays bounded however long a run is.
The Bokeh data sources of the error plots and the orbit are named ``energy_error``,
``angular_momentum_error`` and ``orbit`` for automated checks.
"""

from __future__ import annotations

from functools import partial

import holoviews as hv
import numpy as np
import pandas as pd
from holoviews.streams import Buffer, Pipe

from nbody_engine.events import EpochFinished, StepAccepted, TrajectoryChunk

hv.extension("bokeh", logo=False)

TINY = 1e-18  # log axes cannot show 0
STEP_HISTORY = 5_000
EPOCH_HISTORY = 5_000
ORBIT_POINTS = 6_000
SIM_HISTORY = 20_000
ORBIT_FRAME = 340  # px, the orbit plots' square frame
PROJECTIONS = {"x-y": (0, 1), "x-z": (0, 2), "y-z": (1, 2)}
COMMON = dict(responsive=True, min_height=220, tools=["hover"], show_grid=True, framewise=True)
LOSS_FLOOR = 1e-10  # a loss of exactly 0 (every state in band) shows at the floor of the log axis


def _name_source(name: str):
    def hook(plot, element):
        plot.handles["source"].name = name
    return hook


def _frame(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float) for c in columns})


def _curve(data, x, y, label=""):
    return hv.Curve(data, x, y, label=label)


class LivePlots:
    """The buffers of one session and the plots drawn from them."""

    def __init__(self) -> None:
        self.steps = Buffer(_frame(["step", "rel_dE", "rel_dL", "dt", "retrains"]), length=STEP_HISTORY, index=False)
        self.epochs = Buffer(_frame(["epoch", "loss", "acceptance_rate", "retrain_iterations", "dt_mean"]),
                             length=EPOCH_HISTORY, index=False)
        self.orbit = Buffer(_frame(["body", "x", "y"]), length=ORBIT_POINTS, index=False)
        self.sim = Buffer(_frame(["time", "rel_dE", "rel_dL", "dt"]), length=SIM_HISTORY, index=False)
        self.sim_orbit = Buffer(_frame(["body", "x", "y"]), length=ORBIT_POINTS, index=False)
        self.bands = Pipe(data={"E": (1e-6, 1e-4), "L": (1e-4, 1e-2), "threshold": 2e-4})
        self.projection = "x-y"
        self._step_count = 0

    # plots ---------------------------------------------------------------------------------
    def energy_error(self) -> hv.DynamicMap:
        curve = hv.DynamicMap(partial(_curve, x="step", y="rel_dE"), streams=[self.steps]).opts(
            logy=True, color="#1f77b4", title="|dE/E| per accepted step", ylabel="|dE/E|",
            hooks=[_name_source("energy_error")], **COMMON)
        return curve * hv.DynamicMap(partial(self._band, "E"), streams=[self.bands])

    def angular_momentum_error(self) -> hv.DynamicMap:
        curve = hv.DynamicMap(partial(_curve, x="step", y="rel_dL"), streams=[self.steps]).opts(
            logy=True, color="#2ca02c", title="|dL/L| per accepted step", ylabel="|dL/L|",
            hooks=[_name_source("angular_momentum_error")], **COMMON)
        return curve * hv.DynamicMap(partial(self._band, "L"), streams=[self.bands])

    @staticmethod
    def _band(which: str, data) -> hv.Overlay:
        lo, hi = data[which]
        band = hv.HSpan(lo, hi).opts(color="orange", alpha=0.15)
        if which == "E":
            return band * hv.HLine(data["threshold"]).opts(color="red", line_dash="dashed", line_width=1)
        return band * hv.HLine(hi).opts(alpha=0)

    def per_epoch(self) -> list[hv.DynamicMap]:
        def panel(y, title, logy=False, color="#444"):
            return hv.DynamicMap(partial(_curve, x="epoch", y=y), streams=[self.epochs]).opts(
                title=title, logy=logy, color=color, **COMMON)
        return [panel("loss", "loss per epoch", logy=True), panel("dt_mean", "mean dt per epoch", logy=True),
                panel("acceptance_rate", "acceptance rate per epoch", color="#9467bd"),
                panel("retrain_iterations", "retrain iterations per epoch", color="#d62728")]

    def orbit_plot(self, source_name: str = "orbit", sim: bool = False) -> hv.DynamicMap:
        buffer = self.sim_orbit if sim else self.orbit
        # A fixed square frame: HoloViews only re-ranges a data_aspect plot on updates when it knows
        # the frame's size, so a responsive one would keep the empty first frame's 0..1 axes forever.
        return hv.DynamicMap(lambda data: hv.Points(data, ["x", "y"], ["body"]), streams=[buffer]).opts(
            color="body", cmap="Category10", size=3, data_aspect=1, frame_width=ORBIT_FRAME, frame_height=ORBIT_FRAME,
            framewise=True, title="orbits (trail)", colorbar=False, hooks=[_name_source(source_name)])

    def simulation_plots(self) -> list[hv.DynamicMap]:
        def panel(y, title):
            return hv.DynamicMap(partial(_curve, x="time", y=y), streams=[self.sim]).opts(
                title=title, logy=True, **COMMON)
        return [panel("rel_dE", "simulation |dE/E| (first system)"), panel("rel_dL", "simulation |dL/L|"),
                panel("dt", "simulation dt")]

    # feeding -------------------------------------------------------------------------------
    def reset(self, bands: dict) -> None:
        self._step_count = 0
        for buffer in (self.steps, self.epochs, self.orbit, self.sim, self.sim_orbit):
            buffer.clear()
        self.bands.send(bands)

    def reset_epochs(self) -> None:
        self.epochs.clear()

    def ingest(self, events: list) -> dict[str, int]:
        """Send what ``events`` hold to the buffers, one DataFrame per buffer; returns counts."""
        steps, epochs, orbit, sim, sim_orbit = [], [], [], [], []
        for ev in events:
            if isinstance(ev, StepAccepted):
                self._step_count += 1
                steps.append((self._step_count, ev.rel_dE + TINY, ev.rel_dL + TINY, ev.dt, ev.retrains))
            elif isinstance(ev, EpochFinished):
                m = ev.metrics
                epochs.append((ev.epoch, max(m["loss"], LOSS_FLOOR), m["acceptance_rate"], m["retrain_iterations"],
                               m["dt_mean"]))
            elif isinstance(ev, TrajectoryChunk):
                target = orbit if ev.phase == "train" else sim_orbit
                target.extend(self._orbit_rows(ev.position))
                if ev.phase == "simulate":
                    sim.extend(self._sim_rows(ev))
        sends = ((self.steps, steps, ["step", "rel_dE", "rel_dL", "dt", "retrains"]),
                 (self.epochs, epochs, ["epoch", "loss", "acceptance_rate", "retrain_iterations", "dt_mean"]),
                 (self.orbit, orbit, ["body", "x", "y"]), (self.sim, sim, ["time", "rel_dE", "rel_dL", "dt"]),
                 (self.sim_orbit, sim_orbit, ["body", "x", "y"]))
        for buffer, rows, columns in sends:
            if rows:
                buffer.send(pd.DataFrame(rows[-buffer.length:], columns=columns))
        return {"steps": len(steps), "epochs": len(epochs), "orbit": len(orbit), "sim": len(sim)}

    def _orbit_rows(self, position: np.ndarray, max_rows: int = 20) -> list[tuple]:
        """Body positions of the first system, projected, at most ``max_rows`` rows per chunk."""
        i, j = PROJECTIONS[self.projection] if position.shape[-1] == 3 else (0, 1)
        rows = position[:: max(1, len(position) // max_rows), 0]
        return [(float(b), float(p[b, i]), float(p[b, j])) for p in rows for b in range(p.shape[0])]

    @staticmethod
    def _sim_rows(ev: TrajectoryChunk, max_rows: int = 64) -> list[tuple]:
        stride = max(1, len(ev.time) // max_rows)
        keep = slice(None, None, stride)
        return [(float(t), float(e) + TINY, float(l) + TINY, float(d) + TINY) for t, e, l, d in
                zip(ev.time[keep, 0], ev.rel_dE[keep, 0], ev.rel_dL[keep, 0], ev.dt[keep, 0])]
