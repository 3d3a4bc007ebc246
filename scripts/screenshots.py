"""Screenshots of the dashboard's tabs for docs/images, taken from a real server in Chromium.

Serves the dashboard (``nbody-explorer``) from a scratch directory, presses Train + simulate
with the opening settings, then shows each tab as a user would and saves what the browser
draws: the Simulation tab (with an evaluation of the new checkpoint on four Kepler orbits, set
in the sidebar's Simulate tab),
the Sweeps tab after a three-run sweep of ``eps``, and the Export / import tab.

    .venv/bin/python scripts/screenshots.py            # writes docs/images/tab_*.png
    .venv/bin/python scripts/screenshots.py --out /tmp/shots

Needs Debian's Chromium (/usr/bin/chromium) and Playwright (``scripts/setup.sh --test``); takes
about two minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SLOW = 300_000  # ms: a whole evaluation on a busy machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(cwd: Path, port: int) -> subprocess.Popen:
    """``nbody-explorer`` in ``cwd``, once it answers."""
    proc = subprocess.Popen([sys.executable, "-m", "explorer.serve", "--port", str(port)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600  # a first page builds slowly on a loaded machine: wait for it
    while time.monotonic() < deadline:
        try:
            wait = max(5.0, deadline - time.monotonic())
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/explorer", timeout=wait):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("screenshots: the dashboard did not answer within 600 s")


def wait_for_text(page: Page, pattern: str, timeout: float = 60_000) -> None:
    page.get_by_text(re.compile(pattern)).filter(visible=True).first.wait_for(state="visible", timeout=timeout)


def show_tab(page: Page, name: str) -> None:
    page.get_by_text(name, exact=True).filter(visible=True).first.click()
    page.wait_for_timeout(1500)  # the tab's plots draw after it is shown


QUICK_EVALUATION = {"eval_systems": "4", "eval_long_periods": "20"}  # the default takes many minutes


def quick_kepler_evaluation(page: Page) -> None:
    """In the sidebar's Simulate tab: the Kepler problem alone, four systems, short long runs."""
    page.locator(".bk-tab", has_text=re.compile(r"^\s*Simulate\s*$")).first.click()  # not the Simulate button
    page.wait_for_timeout(1500)
    search = page.get_by_placeholder("search keys (name or description)").filter(visible=True).first
    search.fill("eval_")
    search.press("Enter")
    page.get_by_label("eval_suite", exact=True).filter(visible=True).first.select_option("kepler")
    for key, value in QUICK_EVALUATION.items():
        box = page.get_by_label(key, exact=True).filter(visible=True).first
        box.fill(value)
        box.press("Enter")
    page.wait_for_timeout(1500)  # the server has the changes before Evaluate reads them


def run_sweep(page: Page) -> None:
    """A three-run local sweep of the analytic step's accuracy ``eps``, drawn on a log axis."""
    page.get_by_placeholder("choose keys").filter(visible=True).first.click()
    page.locator(".choices__item--choice", has_text=re.compile(r"^\s*eps\s*$")).first.click()
    page.keyboard.press("Escape")
    values = page.get_by_label("eps values", exact=True).filter(visible=True).first
    values.fill("0.01, 0.03, 0.1")
    values.press("Enter")
    page.get_by_role("button", name="simulate", exact=True).click()
    name = page.get_by_label("Sweep name (its folder under data/)", exact=True)
    name.fill("eps_scan")
    name.press("Enter")
    page.get_by_role("button", name="Run sweep", exact=True).click()
    wait_for_text(page, r"^Sweep 'eps_scan' finished in", timeout=SLOW)
    page.locator("select").filter(has_text="max_rel_energy_error").first.select_option("max_rel_energy_error")
    page.locator(".bk-label", has_text="log y").locator("xpath=preceding-sibling::input").check()
    page.wait_for_timeout(1500)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        port = free_port()
        server = serve(Path(scratch), port)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(SLOW)  # a tab builds slowly on a loaded machine
                page.goto(f"http://127.0.0.1:{port}/explorer", timeout=600_000)
                page.wait_for_function("window.Bokeh !== undefined && Bokeh.documents.length > 0", timeout=120_000)
                page.get_by_role("button", name="Train + simulate", exact=True).click()
                wait_for_text(page, r"finished in", timeout=SLOW)
                quick_kepler_evaluation(page)
                show_tab(page, "Simulation")
                page.get_by_role("button", name=re.compile("^Evaluate")).click()
                wait_for_text(page, r"^Evaluate finished in", timeout=SLOW)
                page.screenshot(path=str(args.out / "tab_simulation.png"))
                page.get_by_text(re.compile("reference: ")).filter(visible=True).first.scroll_into_view_if_needed()
                page.wait_for_timeout(2000)
                page.screenshot(path=str(args.out / "tab_evaluate.png"))
                show_tab(page, "Sweeps")
                run_sweep(page)
                page.screenshot(path=str(args.out / "tab_sweeps.png"))
                show_tab(page, "Export / import")
                page.screenshot(path=str(args.out / "tab_export.png"))
                browser.close()
        finally:
            server.terminate()
            server.wait(10)
    print(f"screenshots: written under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
