"""The live plots' tools in the real dashboard (headless Chromium): the smoothing slider, the
CSV downloads, clean log tick labels, legends beside the data, the placeholder of a tab being
built and the light/dark theme switch. Skipped without /usr/bin/chromium, except under CI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import expect

from dashboard_page import DOC_READY, open_dashboard, source_column, source_length, wait_for_status

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("offline")]

SCREENSHOT = Path("/tmp/explorer_training_tab.png")
SMOOTHED = ("loss", "dt_mean", "acceptance_rate", "retrain_iterations")


def smoothed_differs() -> str:
    """True in the page once some per-epoch curve's moving average is not its data."""
    pairs = " || ".join(f"{source_column('epoch_metrics', y)}.some((v, k) => !Number.isNaN(v) && "
                        f"Math.abs(v - {source_column('epoch_metrics', y + '_ema')}[k]) > 1e-12 * Math.abs(v))"
                        for y in SMOOTHED)
    return f"(() => {pairs})()"


def train_to_the_end(page) -> str:
    """Train with the page's settings; returns the run's folder name."""
    page.get_by_role("button", name="Train", exact=True).click()
    text = wait_for_status(page, r"^Train finished in", timeout=120_000)
    return text.rsplit("data/", 1)[1].rstrip(".")


def test_smoothing_csv_ticks_and_legends_on_the_training_tab(page, server, tmp_path):
    open_dashboard(page, server)
    run = train_to_the_end(page)
    epochs = page.evaluate(source_length("epoch_metrics"))
    assert epochs > 3
    assert not page.evaluate(smoothed_differs())  # smoothing 0: the line is the data

    # the slider's track, clicked at two thirds: an EMA weight of about 0.66
    track = page.locator(".noUi-base").filter(visible=True).first
    box = track.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 2 / 3, box["y"] + box["height"] / 2)
    page.wait_for_function(smoothed_differs(), timeout=15_000)
    page.screenshot(path=str(SCREENSHOT))

    with page.expect_download(timeout=15_000) as download:
        page.get_by_role("button", name="CSV: per-epoch metrics").click()
    assert download.value.suggested_filename == f"{run}_epoch_metrics.csv"  # the run's name first
    download.value.save_as(tmp_path / "epochs.csv")
    table = pd.read_csv(tmp_path / "epochs.csv")
    assert len(table) == epochs and {"epoch", "loss", "loss_ema", "acceptance_rate"} <= set(table.columns)
    assert list(table["epoch"]) == page.evaluate(source_column("epoch_metrics", "epoch"))

    # what the page's log-axis formatter writes, and where its legends are
    labels = page.evaluate("""(() => {
        const f = Bokeh.documents[0].all_models;
        const fmt = [...f].find(m => m.type === "CustomJSTickFormatter");
        return [fmt.doFormat([1e-15, 2.5e-15, 0.01, 300, 1e6], {loc: 0}), fmt.doFormat([0.01, 0.025, 300], {loc: 0})];
    })()""")
    assert labels == [["1e-15", "2.5e-15", "1e-2", "3e2", "1e6"], ["0.01", "0.025", "300"]]
    inside = page.evaluate("""[...Bokeh.documents[0].all_models].filter(m => Array.isArray(m.center) &&
        m.center.some(r => r.type === "Legend")).length""")
    beside = page.evaluate("""[...Bokeh.documents[0].all_models].filter(m => Array.isArray(m.right) &&
        m.right.some(r => r.type === "Legend")).length""")
    assert inside == 0 and beside >= 3  # |dE/E|, |dL/L| and the orbit


def test_a_tab_says_it_is_being_built_until_it_is(page, server):
    open_dashboard(page, server)
    # look for the placeholder's model in every frame, so one that comes and goes is seen (it
    # lives at least while the server builds the tab: many frames)
    page.evaluate("""window.seenBuilding = false;
        const look = () => {
            window.seenBuilding ||= [...Bokeh.documents[0].all_models].some(
                (m) => typeof m.text === "string" && m.text.includes("Building the Simulation tab"));
            if (!window.seenBuilding) requestAnimationFrame(look);
        };
        look();""")
    page.get_by_text("Simulation", exact=True).filter(visible=True).first.click()
    page.get_by_text("Is the learned step worth it?").filter(visible=True).first.wait_for(timeout=60_000)
    assert page.evaluate("window.seenBuilding")
    assert page.get_by_text("Building the Simulation tab").filter(visible=True).count() == 0


def test_the_theme_switch_reloads_the_page_in_the_other_theme(page, server):
    open_dashboard(page, server)
    assert page.evaluate("document.documentElement.getAttribute('data-bs-theme')") != "dark"
    page.get_by_role("button", name="Train", exact=True).click()  # a reload would end the job
    switch = page.get_by_role("button", name="Dark theme")
    expect(switch).to_be_disabled(timeout=15_000)
    wait_for_status(page, r"^Train finished in", timeout=120_000)
    expect(switch).to_be_enabled(timeout=15_000)
    page.get_by_role("button", name="Dark theme").click()
    page.wait_for_url("**theme=dark**", timeout=30_000)
    page.wait_for_function(DOC_READY, timeout=60_000)
    assert page.evaluate("document.documentElement.getAttribute('data-bs-theme')") == "dark"
    page.get_by_role("button", name="Light theme").wait_for(timeout=30_000)
    page.screenshot(path="/tmp/explorer_dark.png")
    page.get_by_role("button", name="Light theme").click()
    page.wait_for_url("**theme=default**", timeout=30_000)
    page.get_by_role("button", name="Dark theme").wait_for(timeout=60_000)
