"""What the browser tests share: where Chromium is, a free loopback port, starting and stopping
a server they drive, and how to read and drive the dashboard's page (its data sources are named
in explorer/live.py). The fixtures that use these (the Chromium launch options, the served
dashboard, the offline guard) are in tests/conftest.py."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
# A request the page may make without leaving the machine.
LOOPBACK = re.compile(r"^(https?|wss?)://(127\.0\.0\.1|localhost)(:\d+)?/|^(data|blob|about):")
DOC_READY = "window.Bokeh !== undefined && Bokeh.documents.length > 0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_it_answers(proc: subprocess.Popen, url: str, log: Path, name: str, seconds: float) -> None:
    """Poll ``url`` until it answers 200; fail the test with ``log`` if ``proc`` exits first or
    ``seconds`` pass (page builds are slow on a busy machine: be generous)."""
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{log.read_text()}")
        try:
            # a page's first build can take many seconds on a loaded machine: an answer given up
            # on still costs the server a whole session, so wait for it
            with urllib.request.urlopen(url, timeout=max(5.0, deadline - time.monotonic())) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{name} did not answer within {seconds:g} s:\n{log.read_text()}")
        time.sleep(0.3)


def stop(proc: subprocess.Popen, grace: float) -> None:
    """Terminate ``proc``; kill it if it is still there after ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


def source_length(name: str) -> str:
    return (f"(() => {{ const s = window.Bokeh && Bokeh.documents.length && "
            f"Bokeh.documents[0].get_model_by_name('{name}'); return s ? s.get_length() : -1; }})()")


def batches_drawn() -> str:
    """How many batches of live-plot rows the page has said it drew (explorer/paint_gate.py)."""
    return ("(() => { const m = [...Bokeh.documents[0].all_models].find("
            "(m) => m.data != null && m.data.painted !== undefined); return m ? m.data.painted : -1; })()")


def source_column(name: str, column: str) -> str:
    return f"Array.from(Bokeh.documents[0].get_model_by_name('{name}').data['{column}'])"


def open_dashboard(page, server) -> None:
    page.goto(server["url"])
    page.wait_for_function(DOC_READY, timeout=60_000)
    # the named sources exist once the plots are rendered
    page.wait_for_function(f"{source_length('energy_error')} >= 0 && {source_length('orbit')} >= 0",
                           timeout=30_000)


def open_card(page, title: str) -> None:
    """Expand a sidebar card of the Settings tab (the cards start collapsed; a title may end
    with '· N changed')."""
    page.get_by_text(re.compile("^" + re.escape(title))).filter(visible=True).first.click()


def set_setting(page, key: str, value) -> None:
    """Type ``value`` into the Settings tab's widget labelled ``key`` and commit it."""
    box = page.get_by_label(key, exact=True).filter(visible=True).first
    box.fill(str(value))
    box.press("Enter")


def wait_until_changed(page, title: str, timeout: float = 15_000) -> None:
    """Wait until the server has the sidebar's changes: its card's title counts them (the
    page's messages keep their order, so earlier changes have arrived too)."""
    title_changed = page.get_by_text(re.compile("^" + re.escape(title) + r" · \d+ changed$")).filter(visible=True)
    title_changed.first.wait_for(state="visible", timeout=timeout)


def wait_for_status(page, pattern: str, timeout: float = 30_000) -> str:
    loc = page.get_by_text(re.compile(pattern)).filter(visible=True).first
    loc.wait_for(state="visible", timeout=timeout)
    return loc.inner_text()


def set_up_sweep(page, values: dict[str, str]) -> None:
    """On a loaded dashboard: open the Sweeps tab, choose the keys of ``values`` (key -> the text
    typed into its values box) and the simulate mode."""
    page.get_by_text("Sweeps", exact=True).filter(visible=True).first.click()
    page.get_by_placeholder("choose keys").filter(visible=True).first.click()
    for key in values:
        page.locator(".choices__item--choice", has_text=re.compile(rf"^\s*{key}\s*$")).first.click()
    page.keyboard.press("Escape")
    for key, text in values.items():
        box = page.get_by_label(f"{key} values", exact=True).filter(visible=True).first
        box.fill(text)
        box.press("Enter")
    page.get_by_role("button", name="simulate", exact=True).click()


def run_sweep_named(page, name: str) -> None:
    """Name the sweep set up on the Sweeps tab and press Run sweep."""
    box = page.get_by_label("Sweep name (its folder under data/)", exact=True)
    box.fill(name)
    box.press("Enter")
    page.get_by_role("button", name="Run sweep", exact=True).click()
