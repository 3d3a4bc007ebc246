"""The Sweeps tab in headless Chromium: an Optuna search started from the page over a typed range."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from playwright.sync_api import expect

from dashboard_page import (open_dashboard, run_sweep_named, set_up_sweep, source_column, source_length,
                            wait_for_status)
from helpers import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("offline")]
SCREENSHOTS = Path("/tmp")


def test_a_random_search_over_a_typed_range_runs_from_the_page(page, server):
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    open_dashboard(page, server)
    set_up_sweep(page, {"steps": "20 .. 60"})
    page.get_by_label("points", exact=True).filter(visible=True).first.select_option("random")
    trials = page.get_by_label("trials", exact=True).filter(visible=True).first
    trials.fill("2")
    trials.press("Enter")
    run_sweep_named(page, "browser_search")
    wait_for_status(page, r"^Sweep 'browser_search' finished in", timeout=90_000)
    root = server["cwd"] / "data" / "browser_search"
    doc = json.loads((root / "results.json").read_text())
    assert doc["search"]["sampler"] == "random" and doc["search"]["trials"] == 2
    assert doc["grid"]["steps"] == {"low": 20, "high": 60, "log": False, "step": None}
    assert {r["status"] for r in doc["runs"]} == {"ok"} and 1 <= len(doc["runs"]) <= 2
    page.wait_for_function(f"{source_length('sweep_metric')} == {len(doc['runs'])}", timeout=10_000)
    assert sorted(page.evaluate(source_column("sweep_metric", "x"))) == sorted(r["steps"] for r in doc["runs"])
    assert (root / "study.journal").is_file()
    assert not errors, errors


# the sweep's status line and every progress bar of the page, read in one go (no update between)
PROGRESS_AND_STATUS = """() => {
  const models = Array.from(Bokeh.documents[0].all_models);
  const bars = models.filter(m => m.constructor.__name__ === 'Progress').map(m => m.value);
  const status = models.map(m => typeof m.text === 'string' ? m.text : '').find(t => /runs finished/.test(t));
  return [bars, status || ''];
}"""


def header_cells(page, field: str) -> list[str]:
    return [c.inner_text() for c in page.locator(f'.tabulator-row .tabulator-cell[tabulator-field="{field}"]').all()]


def test_a_grid_sweeps_table_sorts_its_plot_opens_on_the_error_and_draws_parallel_coordinates(page, server):
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    open_dashboard(page, server)
    set_up_sweep(page, {"steps": "30, 60", "eps": "0.01, 0.1"})
    run_sweep_named(page, "browser_grid")
    # while it runs, the bar says how many runs finished: never more (it said 50% with none finished)
    seen = set()
    while not (seen and max(seen)[0] == 4):
        bars, status = page.evaluate(PROGRESS_AND_STATUS)
        if status:
            finished, total = map(int, re.search(r"(\d+)/(\d+) runs finished", status).groups())
            assert total == 4 and 100 * finished // total in bars, (status, bars)
            seen.add((finished, status))
        page.wait_for_timeout(200)
    wait_for_status(page, r"^Sweep 'browser_grid' finished in", timeout=60_000)
    doc = json.loads((server["cwd"] / "data" / "browser_grid" / "results.json").read_text())
    assert [r["status"] for r in doc["runs"]] == ["ok"] * 4
    # the plot opens on the worst energy error of each run's simulation, not on a count
    expect(page.get_by_label("metric", exact=True).filter(visible=True).first).to_have_value("max_rel_energy_error")
    page.wait_for_function(f"{source_length('sweep_metric')} == 4", timeout=30_000)
    # the table: the results' columns, none of the machinery's; any column sorts
    expect(page.locator('.tabulator-col[tabulator-field="max_rel_energy_error"]').first).to_be_visible()
    for internal in ("worker", "slurm_job", "run_dir", "run_toml_sha1", "host", "exit_code"):
        assert page.locator(f'.tabulator-col[tabulator-field="{internal}"]').count() == 0, internal
    errors_by_id = {r["id"]: r["max_rel_energy_error"] for r in doc["runs"]}
    page.locator('.tabulator-col[tabulator-field="max_rel_energy_error"] .tabulator-col-title').first.click()
    expect(page.locator('.tabulator-col[tabulator-field="max_rel_energy_error"]').first).to_have_attribute(
        "aria-sort", "ascending")
    assert header_cells(page, "id") == sorted(errors_by_id, key=errors_by_id.get)
    eps = page.locator('.tabulator-col[tabulator-field="eps"]').first
    for _ in range(2):  # ascending, then descending
        eps.locator(".tabulator-col-title").click()
    expect(eps).to_have_attribute("aria-sort", "descending")
    assert [float(s) for s in header_cells(page, "eps")] == [0.1, 0.1, 0.01, 0.01]  # not the grid's order
    # the table read again (as while a sweep runs): it keeps its order
    page.get_by_role("button", name="Open results", exact=True).click()
    wait_for_status(page, r"^Sweep 'browser_grid': 4/4 runs finished")
    expect(eps).to_have_attribute("aria-sort", "descending")
    assert [float(s) for s in header_cells(page, "eps")] == [0.1, 0.1, 0.01, 0.01]
    # parallel coordinates: one line per run, coloured by the chosen metric
    page.get_by_role("button", name="parallel coordinates", exact=True).click()
    page.wait_for_function(f"{source_length('sweep_parallel')} == 4", timeout=30_000)
    values = page.evaluate(source_column("sweep_parallel", "value"))
    assert values == sorted(errors_by_id.values(), reverse=True)  # the lowest error drawn on top
    page.get_by_label("metric", exact=True).filter(visible=True).first.select_option("wall_time_s")
    walls = sorted((r["wall_time_s"] for r in doc["runs"]), reverse=True)
    wait_until(lambda: page.evaluate(source_column("sweep_parallel", "value")) == walls,
               "the parallel lines coloured by wall time", timeout=30)
    page.get_by_label("metric", exact=True).filter(visible=True).first.select_option("max_rel_energy_error")
    wait_until(lambda: page.evaluate(source_column("sweep_parallel", "value")) == values,
               "the parallel lines coloured by the error again", timeout=30)
    # pictures of the results (plot and table in view), in both views
    page.get_by_text(re.compile(r"^Sweep 'browser_grid'")).first.evaluate(
        "el => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(1500)  # the page settles before its picture
    page.screenshot(path=str(SCREENSHOTS / "tab_sweeps_parallel.png"))
    page.get_by_role("button", name="against a key", exact=True).click()
    page.wait_for_function(f"{source_length('sweep_metric')} == 4", timeout=30_000)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(SCREENSHOTS / "tab_sweeps.png"))
    assert not errors, errors
