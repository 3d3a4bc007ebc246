"""The Sweeps tab in headless Chromium: an Optuna search started from the page over a typed range."""

from __future__ import annotations

import json
import re

import pytest

from dashboard_page import open_dashboard, source_column, source_length, wait_for_status

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("offline")]


def test_a_random_search_over_a_typed_range_runs_from_the_page(page, server):
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    open_dashboard(page, server)
    page.get_by_text("Sweeps", exact=True).filter(visible=True).first.click()
    page.get_by_placeholder("choose keys").filter(visible=True).first.click()
    page.locator(".choices__item--choice", has_text=re.compile(r"^\s*steps\s*$")).first.click()
    page.keyboard.press("Escape")
    values = page.get_by_label("steps values", exact=True).filter(visible=True).first
    values.fill("20 .. 60")
    values.press("Enter")
    page.get_by_role("button", name="simulate", exact=True).click()
    page.get_by_label("points", exact=True).filter(visible=True).first.select_option("random")
    trials = page.get_by_label("trials", exact=True).filter(visible=True).first
    trials.fill("2")
    trials.press("Enter")
    name = page.get_by_label("Sweep name (its folder under data/)", exact=True)
    name.fill("browser_search")
    name.press("Enter")
    page.get_by_role("button", name="Run sweep", exact=True).click()
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
