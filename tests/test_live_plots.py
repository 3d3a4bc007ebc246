"""The live plots' tools without a browser: the moving average of the per-epoch curves, the CSV
of a plot's data, log axes with clean tick labels and legends beside the data (the browser
side is in test_browser_plots.py)."""

from __future__ import annotations

import io

import holoviews as hv
import numpy as np
import pandas as pd
import pytest
from bokeh.models import CustomJSTickFormatter, Legend, LogAxis

from explorer.evaluate_view import pareto_plot
from explorer.live import EPOCH_CURVES, LivePlots
from explorer.plot_style import ema
from nbody_engine.events import EpochFinished

BANDS = {"E": (1e-6, 1e-4), "L": (1e-4, 1e-2), "threshold": 2e-4}


def epochs(n: int, start: int = 0) -> list[EpochFinished]:
    rng = np.random.default_rng(start)
    return [EpochFinished(epoch=k, metrics={"loss": 10.0 ** rng.uniform(-8, -1) if k % 4 else 0.0,
                                            "acceptance_rate": rng.uniform(0.5, 1.0),
                                            "retrain_iterations": int(rng.integers(0, 20)),
                                            "dt_mean": 10.0 ** rng.uniform(-3, -1)})
            for k in range(start, start + n)]


def test_ema_with_weight_zero_is_the_data_and_skips_what_it_cannot_average():
    values = np.array([1.0, 2.0, np.nan, 4.0])
    smooth, _ = ema(values, 0.0)
    np.testing.assert_array_equal(np.isnan(smooth), np.isnan(values))
    np.testing.assert_allclose(smooth[[0, 1, 3]], values[[0, 1, 3]])
    smooth, _ = ema([0.0, 1e-3, -1.0], 0.5, log=True)  # a log axis shows neither 0 nor negatives
    assert np.isnan(smooth[[0, 2]]).all() and smooth[1] == pytest.approx(1e-3)


def test_ema_is_debiased_and_on_a_log_axis_averages_decades():
    smooth, _ = ema([5.0, 5.0, 5.0], 0.9)
    np.testing.assert_allclose(smooth, 5.0)  # not pulled towards 0 at the start
    smooth, _ = ema([1e-8, 1e-2], 0.5, log=True)
    # weights 1/3 and 2/3 on the exponents -8 and -2 (debiased EMA of two points)
    assert smooth[1] == pytest.approx(10.0 ** (-8 / 3 - 4 / 3))


def test_ema_of_a_stream_in_chunks_equals_the_ema_of_the_whole():
    values = np.random.default_rng(1).uniform(1e-6, 1.0, 50)
    whole, _ = ema(values, 0.8, log=True)
    first, state = ema(values[:17], 0.8, log=True)
    rest, _ = ema(values[17:], 0.8, log=True, state=state)
    np.testing.assert_allclose(np.r_[first, rest], whole)


def test_smoothing_applies_to_the_drawn_epochs_and_to_those_streaming_in():
    live = LivePlots()
    live.reset(BANDS)
    live.ingest(epochs(10))
    frame = live.frame("epoch_metrics")
    for y, *_ in EPOCH_CURVES:  # smoothing 0: the line is the data
        np.testing.assert_array_equal(frame[f"{y}_ema"].isna(), frame[y].isna())
        np.testing.assert_allclose(frame[f"{y}_ema"].dropna(), frame[y].dropna())
    live.set_smoothing(0.7)
    live.ingest(epochs(5, start=10))
    frame = live.frame("epoch_metrics")
    assert len(frame) == 15
    for y, _label, _title, log_y, _color in EPOCH_CURVES:
        expected, _ = ema(frame[y].to_numpy(dtype=float), 0.7, log_y)
        np.testing.assert_allclose(frame[f"{y}_ema"].to_numpy(dtype=float), expected)
    assert not np.allclose(frame["acceptance_rate_ema"], frame["acceptance_rate"])


def test_the_csv_of_a_plot_holds_what_it_draws():
    live = LivePlots()
    live.reset(BANDS)
    live.ingest(epochs(6))
    table = pd.read_csv(io.StringIO(live.csv("epoch_metrics")))
    assert list(table.columns) == list(live.sources["epoch_metrics"].data)
    pd.testing.assert_frame_equal(table, live.frame("epoch_metrics"), check_dtype=False)
    assert "color" not in pd.read_csv(io.StringIO(live.csv("orbit"))).columns  # a drawing detail


def test_every_live_log_axis_has_clean_ticks_and_every_legend_sits_beside_the_data():
    live = LivePlots()
    figures = [live.energy_error(), live.angular_momentum_error(), *live.per_epoch(), live.orbit_plot(),
               *live.simulation_plots()]
    log_axes = [axis for fig in figures for axis in fig.yaxis if isinstance(axis, LogAxis)]
    assert len(log_axes) == 2 + 2 + 3
    assert all(isinstance(axis.formatter, CustomJSTickFormatter) for axis in log_axes)
    for fig in figures:
        assert not any(isinstance(r, Legend) for r in fig.center)
        assert all(legend in fig.right for legend in fig.legend)


def test_the_pareto_plot_has_clean_ticks_on_both_log_axes():
    rows = pd.DataFrame({"problem": "kepler", "policy": ["fixed", "fixed", "learned", "learned"],
                         "label": "e=0.5", "eps": [0.1, 0.05, 0.1, 0.05], "force_evals": [100, 200, 90, 180],
                         "evals_per_period": [100, 200, 90, 180], "max_rel_dE": [1e-5, 2e-6, 5e-6, 1e-6],
                         "position_error": 0.0, "wall_time_s": 0.1})
    fig = hv.render(pareto_plot(rows, "kepler"))
    assert all(isinstance(axis.formatter, CustomJSTickFormatter) for axis in (*fig.xaxis, *fig.yaxis))
