"""The Runs tab in the real dashboard (``panel serve explorer`` driven by headless Chromium): the
runs table fills itself, ticked runs are overlaid, and a headless ``nbody-runner`` in a subprocess
is followed live into every plot and the header.

The server and the Chromium settings are tests/conftest.py's fixtures, the page helpers
tests/dashboard_page.py's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from background_run import BackgroundRun
from dashboard_page import open_dashboard, source_length, wait_for_status
from helpers import wait_until
from test_progress_log import TINY_TOML

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("offline")]

SCREENSHOTS = Path("/tmp")
RUN_TOML = TINY_TOML.replace("epochs = 3", "epochs = {epochs}")
FOLLOWED_PLOTS = ("energy_error", "angular_momentum_error", "epoch_metrics", "orbit")
# the labels of every legend entry on the page (HoloViews and Bokeh legends alike)
LEGEND_LABELS = ("Array.from(Bokeh.documents[0].all_models).filter(m => m.constructor.__name__ === 'LegendItem')"
                 ".map(m => m.label && m.label.value !== undefined ? m.label.value : String(m.label && m.label.field))")


def runner(cwd: Path, mode: str, name: str, epochs: int, *flags: str) -> BackgroundRun:
    (cwd / f"{name}.toml").write_text(RUN_TOML.format(epochs=epochs))
    return BackgroundRun(cwd, mode, "--config", f"{name}.toml", "-s", name, *flags, log=f"{name}.{mode}.log")


def open_runs_tab(page, server) -> None:
    open_dashboard(page, server)
    page.get_by_text("Runs", exact=True).filter(visible=True).first.click()


def table_row(page, name: str):
    return page.locator(".tabulator-row", has=page.locator(".tabulator-cell", has_text=re.compile(f"^{name}$")))


def tick(page, name: str) -> None:
    table_row(page, name).locator("input[type=checkbox]").first.click()


def finished_run(data: Path, name: str, error: float) -> None:
    """A run folder as a finished ``both`` run leaves it, made by hand: its config, its last
    epoch and a simulation summary (what the table reads)."""
    (data / name / "sim" / "analytic").mkdir(parents=True)
    (data / name / "config.toml").write_text("epochs = 3\n")
    (data / name / "metrics.jsonl").write_text(json.dumps({"epoch": 2, "loss": 0.25, "rel_dE_max": error}) + "\n")
    (data / name / "sim" / "analytic" / "summary.json").write_text(json.dumps({"max_rel_energy_error": [error]}))


def rows_in_view(page) -> int:
    """How many rows of the runs table are wholly inside its scrolling area."""
    holder = page.locator(".tabulator-tableholder").filter(visible=True).first.bounding_box()
    boxes = [r.bounding_box() for r in page.locator(".tabulator-row").filter(visible=True).all()]
    return sum(1 for b in boxes if b and holder["y"] <= b["y"] and b["y"] + b["height"] <= holder["y"]
               + holder["height"] + 1)


def test_the_table_shows_ten_rows_its_chosen_columns_and_tagged_runs(page, server):
    data = server["cwd"] / "data"
    for i in range(12):
        finished_run(data, f"row_{i:02d}", 10.0 ** -(i + 3))
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(f"{err}: {err.stack}"))
    open_runs_tab(page, server)
    table_row(page, "row_11").wait_for(timeout=60_000)
    # the table's stylesheets arrive after its rows: wait for the rows to be laid out compactly
    wait_until(lambda: rows_in_view(page) >= 10, "10 rows of the runs table in view", timeout=60)
    # the final metrics are in view at 1600 px beside the run, in scientific notation
    for field in ("tags", "status", "sim max |dE/E|", "train max |dE/E|", "final loss"):
        header = page.locator(f'.tabulator-col[tabulator-field="{field}"]').first
        expect(header).to_be_visible()
        box = header.bounding_box()
        assert box["x"] + box["width"] <= 1600, (field, box)
    expect(table_row(page, "row_11")).to_contain_text("1.000e-14")
    # the column chooser: notes off, lr on
    page.locator(".choices__item[data-value='notes'] .choices__button").first.click()
    expect(page.locator('.tabulator-col[tabulator-field="notes"]').first).to_be_hidden(timeout=30_000)
    page.get_by_placeholder("any tags").filter(visible=True)  # the tag filter is there before any tag
    chooser = page.locator(".choices", has=page.locator(".choices__item[data-value='tags']")).first
    chooser.locator("input").first.click()
    page.locator(".choices__item--choice[data-value='lr']").first.click()
    page.keyboard.press("Escape")
    expect(page.locator('.tabulator-col[tabulator-field="lr"]').first).to_be_visible(timeout=30_000)
    # notes and tags of the ticked run, saved in its folder, shown in the table, filtered by tag
    tick(page, "row_03")
    tags = page.get_by_label("Tags (commas between them)", exact=True).filter(visible=True).first
    tags.fill("baseline, kepler")
    notes = page.get_by_label("Notes", exact=True).filter(visible=True).first
    notes.fill("eps too large: the error grows")
    page.get_by_role("button", name="Save notes and tags", exact=True).click()
    wait_for_status(page, r"^Saved the notes and tags of 'row_03'\.")
    assert json.loads((data / "row_03" / "notes.json").read_text()) == {
        "notes": "eps too large: the error grows", "tags": ["baseline", "kepler"]}
    expect(table_row(page, "row_03")).to_contain_text("baseline, kepler", timeout=30_000)
    page.screenshot(path=str(SCREENSHOTS / "tab_runs.png"))
    page.get_by_placeholder("any tags").filter(visible=True).first.click()
    page.locator(".choices__item--choice[data-value='kepler']").first.click()
    page.keyboard.press("Escape")
    expect(page.locator(".tabulator-row").filter(visible=True)).to_have_count(1, timeout=30_000)
    expect(table_row(page, "row_03")).to_be_visible()
    assert not errors, errors


def test_ticked_runs_are_overlaid_with_legends(page, server):
    procs = [runner(server["cwd"], "both", "overlay_a", 4),
             runner(server["cwd"], "train", "overlay_b", 6, "--seed", "9")]
    for proc in procs:
        assert proc.wait(300) == 0, proc.output()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(f"{err}: {err.stack}"))
    open_runs_tab(page, server)
    for name in ("overlay_a", "overlay_b"):
        table_row(page, name).wait_for(timeout=30_000)
    assert "finished" in table_row(page, "overlay_a").inner_text()
    tick(page, "overlay_a")
    tick(page, "overlay_b")
    page.get_by_text("no simulation yet").filter(visible=True).first.wait_for(timeout=60_000)
    # per-epoch curves of both runs; the simulation's errors named by run and simulation
    page.wait_for_function(f"{LEGEND_LABELS}.includes('overlay_b') && {LEGEND_LABELS}.includes('overlay_a') && "
                           f"{LEGEND_LABELS}.includes('overlay_a / ml_multi')", timeout=60_000)
    page.get_by_text("'overlay_b' has no simulation yet").filter(visible=True).first.wait_for(timeout=30_000)
    assert page.get_by_text("No properties").count() == 0
    page.mouse.move(900, 700)
    page.mouse.wheel(0, 450)  # down to the overlaid plots
    page.wait_for_timeout(1500)
    page.screenshot(path=str(SCREENSHOTS / "explorer_runs_overlay.png"))
    assert not errors, errors


def test_a_headless_run_appears_by_itself_and_following_it_fills_every_plot_and_the_header(page, server):
    """A long headless training, followed while it runs, then stopped; a headless simulation
    started into the same run directory is picked up by the follower and fills the simulation
    plots while it runs."""
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(f"{err}: {err.stack}"))
    open_runs_tab(page, server)
    epochs = 5000
    proc = runner(server["cwd"], "train", "followed", epochs)
    try:
        table_row(page, "followed").wait_for(timeout=60_000)  # no refresh button: the table updates itself
        expect(table_row(page, "followed")).to_contain_text(f"running (pid {proc.pid})", timeout=60_000)
        tick(page, "followed")
        page.get_by_role("button", name=re.compile("^Follow the last ticked run")).click()
        page.get_by_text("Training", exact=True).filter(visible=True).first.click()  # its plots draw while shown
        for name in FOLLOWED_PLOTS:
            page.wait_for_function(f"{source_length(name)} > 0", timeout=60_000)
        status = wait_for_status(page, rf"^epoch \d+/{epochs} .*ETA \d+s", timeout=60_000)
        expect(page.locator("progress").first).to_have_attribute("value", re.compile(r"^\d+$"), timeout=30_000)
        n = page.evaluate(source_length("epoch_metrics"))
        page.wait_for_function(f"{source_length('epoch_metrics')} > {n}", timeout=60_000)  # still coming in
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SCREENSHOTS / "explorer_runs_follow_training.png"))
    finally:
        proc.terminate()
        proc.wait(60)
    assert status
    page.get_by_text("Runs", exact=True).filter(visible=True).first.click()
    expect(table_row(page, "followed")).not_to_contain_text("running", timeout=30_000)

    sim = BackgroundRun(server["cwd"], "simulate", "--config", "followed.toml", "-s", "followed", "--integrator-mode",
                        "analytic", "--steps", "200000", "--record-every", "20", log="followed.simulate.log")
    try:
        page.get_by_text("Simulation", exact=True).filter(visible=True).first.click()
        for name in ("simulation", "sim_orbit"):
            page.wait_for_function(f"{source_length(name)} > 0", timeout=60_000)
        assert sim.poll() is None, "the simulation was caught while it ran"
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SCREENSHOTS / "explorer_runs_follow_simulation.png"))
        page.get_by_text("Training", exact=True).filter(visible=True).first.click()
        # a new run in that directory: the training plots restarted empty
        page.wait_for_function(f"{source_length('energy_error')} == 0", timeout=30_000)
        assert sim.wait(600) == 0, sim.output()
        wait_for_status(page, r"^simulate finished\.", timeout=60_000)
    finally:
        sim.kill()
        sim.wait(60)
    assert not errors, errors
