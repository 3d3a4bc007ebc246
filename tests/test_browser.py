"""The real dashboard: ``panel serve explorer`` in a subprocess, driven by headless Chromium.

Needs Debian's Chromium at /usr/bin/chromium (``scripts/setup.sh --test`` installs it as
root). Without it these tests are skipped, except under CI (the CI variable set), where
they fail: CI must always run them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from helpers import wait_until
from dashboard_page import (batches_drawn, open_card, open_dashboard, run_sweep_named, set_setting, set_up_sweep,
                            source_column, source_length, wait_for_status, wait_until_changed)
from explorer.app import QUICK_START
from nbody_engine.config.loading import load_configs

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("offline")]

SCREENSHOT = Path("/tmp/explorer_training.png")
OPENING_EPOCHS = str(QUICK_START["epochs"])  # what the epochs box shows on a new page
# A click reaches the server between plot redraws, which take long on a busy two-core machine.
STOP_TIMEOUT = 20_000  # ms


def metrics_rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        row.pop("epoch_time_s")
    return rows


# --- tests -------------------------------------------------------------------------------

def test_page_loads(page, server):
    open_dashboard(page, server)
    assert "nbody explorer" in page.title()
    assert page.evaluate(source_length("energy_error")) == 0
    for label in ("Train", "Simulate", "Train + simulate", "Stop"):
        assert page.get_by_role("button", name=label, exact=True).is_visible()
    assert page.get_by_text("Ready.").is_visible()


def set_long_training(page) -> None:
    """Make the page's training long enough to stop it midway, however fast the machine."""
    open_card(page, "Training / optimization")
    set_setting(page, "epochs", 1000)
    wait_until_changed(page, "Training / optimization")


def test_training_streams_into_the_plots_and_stop_stops_it(page, server):
    """The dashboard's quick two-body training fills the plots live; Stop names the checkpoint."""
    open_dashboard(page, server)
    set_long_training(page)
    page.get_by_role("button", name="Train", exact=True).click()
    page.wait_for_function(f"{source_length('energy_error')} > 0", timeout=30_000)
    page.wait_for_function(f"{source_length('orbit')} > 0", timeout=30_000)
    wait_for_status(page, r"^epoch (\d{2,}|[3-9])/1000 ", timeout=30_000)  # a few epochs in: per-epoch plots drawn
    page.wait_for_function(f"{batches_drawn()} >= 3", timeout=30_000)  # the page answers each batch it drew
    page.wait_for_timeout(500)
    n = page.evaluate(source_length("energy_error"))
    page.screenshot(path=str(SCREENSHOT))
    assert page.get_by_role("button", name="Stop", exact=True).is_enabled()
    assert page.get_by_role("button", name="Train", exact=True).is_disabled()
    page.wait_for_function(f"{source_length('energy_error')} > {n}", timeout=60_000)  # still streaming
    page.get_by_role("button", name="Stop", exact=True).click()
    text = wait_for_status(page, r"stopped", timeout=STOP_TIMEOUT)  # said at once; the report is drawn after
    assert text.startswith("Train stopped after")
    kept = re.search(r"checkpoint kept: (\S+\.pt)", text)
    assert kept and (server["cwd"] / kept.group(1)).is_file(), text
    expect(page.get_by_role("button", name="Train", exact=True)).to_be_enabled(timeout=STOP_TIMEOUT)
    assert (server["cwd"] / kept.group(1)).parents[1].joinpath("train_report.png").is_file()
    final = wait_for_status(page, r"^Train stopped after")
    assert "writing" not in final and final.split(";")[0] == text.split(";")[0], (text, final)  # the time it stopped


def test_downloaded_toml_reproduces_the_run_headless(page, server, tmp_path):
    open_dashboard(page, server)
    open_card(page, "Training / optimization")
    set_setting(page, "epochs", 3)
    open_card(page, "Logging / misc")
    set_setting(page, "save_name", "repro")
    wait_until_changed(page, "Logging / misc")
    page.get_by_role("button", name="Train", exact=True).click()
    wait_for_status(page, r"^Train finished in", timeout=60_000)
    assert page.evaluate(source_length("energy_error")) > 0

    page.get_by_text("Export / import", exact=True).filter(visible=True).first.click()
    with page.expect_download(timeout=15_000) as download:
        page.get_by_role("button", name="Download TOML").click()
    assert download.value.suggested_filename == "repro.toml"
    toml_path = tmp_path / "repro.toml"
    download.value.save_as(toml_path)
    configs = load_configs("train", toml_path)
    cfg = configs["train"]
    assert (cfg.epochs, cfg.save_name) == (3, "repro")
    assert cfg.seed is not None  # the dashboard filled one in, so the export repeats the run

    cli_dir = tmp_path / "cli"
    cli_dir.mkdir()
    result = subprocess.run([sys.executable, "-m", "nbody_engine.runner", "train", "--config", str(toml_path),
                             "-n", "3"], cwd=cli_dir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    dashboard = metrics_rows(server["cwd"] / "data" / "repro" / "metrics.jsonl")
    headless = metrics_rows(cli_dir / "data" / "repro" / "metrics.jsonl")
    assert len(dashboard) == 3
    assert headless == dashboard


def test_two_trains_in_one_tab_leave_two_runs(page, server):
    """Each job writes a run folder of its own (the settings' save_name, then numbered ones),
    and the exported command names a folder neither took."""
    open_dashboard(page, server)
    open_card(page, "Training / optimization")
    set_setting(page, "epochs", 2)
    open_card(page, "Logging / misc")
    set_setting(page, "save_name", "twice")
    wait_until_changed(page, "Logging / misc")
    for folder in ("twice", "twice_2"):
        page.get_by_role("button", name="Train", exact=True).click()
        wait_for_status(page, rf"^Train finished in .*data/{folder}\.$", timeout=120_000)
    for folder in ("twice", "twice_2"):
        assert len(metrics_rows(server["cwd"] / "data" / folder / "metrics.jsonl")) == 2, folder
    page.get_by_text("Export / import", exact=True).filter(visible=True).first.click()
    command = page.get_by_label("Headless command").filter(visible=True).first
    expect(command).to_have_value("nbody-runner train --config twice.toml --save-name twice_3", timeout=15_000)


def test_an_invalid_upload_shows_the_error(page, server, tmp_path):
    open_dashboard(page, server)
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 3\nreplay_stpes = 4\n")
    page.get_by_text("Export / import", exact=True).filter(visible=True).first.click()
    page.set_input_files("input[type=file]", str(bad))
    message = page.get_by_text("unknown key 'replay_stpes'").filter(visible=True).first
    message.wait_for(state="visible", timeout=10_000)
    text = message.inner_text()
    assert "'bad.toml'" in text and "did you mean 'replay_steps'" in text
    # nothing of the bad file was applied
    open_card(page, "Training / optimization")
    assert page.get_by_label("epochs", exact=True).filter(visible=True).first.input_value() == OPENING_EPOCHS


def test_a_request_that_leaves_the_machine_is_caught(page, server, offline):
    """The check every browser test makes (the offline fixture) sees an outside request."""
    open_dashboard(page, server)
    page.evaluate("fetch('https://cdn.example.org/font.css').catch(() => null)")
    page.wait_for_timeout(500)
    assert offline == ["https://cdn.example.org/font.css"]
    offline.clear()  # caught: this test passes


def test_two_sessions_train_independently(browser, server):
    """Two tabs train at once (defaults: each fills in its own run name and seed); each sees
    only its own run, and stopping one leaves the other running."""
    data = server["cwd"] / "data"
    before = {p.name for p in data.iterdir()} if data.is_dir() else set()
    contexts = [browser.new_context(viewport={"width": 1400, "height": 900}) for _ in range(2)]
    try:
        pages = [ctx.new_page() for ctx in contexts]
        for p in pages:
            open_dashboard(p, server)
            set_long_training(p)
        for p in pages:
            p.get_by_role("button", name="Train", exact=True).click()
        for p in pages:
            p.wait_for_function(f"{source_length('energy_error')} > 3", timeout=30_000)
        names = [wait_for_status(p, r"running|^epoch ", timeout=30_000) for p in pages]
        a, b = pages
        # each page's plot holds its own run: different seeds give different errors
        head = min(a.evaluate(source_length("energy_error")), b.evaluate(source_length("energy_error")))
        errors = [p.evaluate(source_column("energy_error", "rel_dE"))[:head] for p in pages]
        assert errors[0] != errors[1], names
        a.get_by_role("button", name="Stop", exact=True).click()
        wait_for_status(a, r"stopped", timeout=STOP_TIMEOUT)
        stopped_at = a.evaluate(source_length("energy_error"))
        n_b = b.evaluate(source_length("energy_error"))
        b.wait_for_function(f"{source_length('energy_error')} > {n_b}", timeout=15_000)
        assert b.get_by_role("button", name="Stop", exact=True).is_enabled()
        assert b.get_by_text(re.compile("stopped")).filter(visible=True).count() == 0
        assert a.evaluate(source_length("energy_error")) == stopped_at
        b.get_by_role("button", name="Stop", exact=True).click()
        wait_for_status(b, r"stopped", timeout=STOP_TIMEOUT)
        assert len({p.name for p in data.iterdir()} - before) == 2  # two runs, two run directories
    finally:
        for ctx in contexts:
            ctx.close()


def test_a_sweep_fills_its_table_and_plot(page, server):
    """The Sweeps tab runs a two-run local sweep of the dashboard's settings; the table and
    the plot fill in as the runs finish."""
    errors: list[str] = []  # a model update BokehJS cannot apply freezes the page: none may occur
    page.on("pageerror", lambda err: errors.append(str(err)))
    open_dashboard(page, server)
    set_up_sweep(page, {"steps": "20, 40"})
    run_sweep_named(page, "browser_scan")
    text = wait_for_status(page, r"^Sweep 'browser_scan' finished in", timeout=60_000)
    assert "2/2 runs finished (2 ok, 0 failed)" in text
    page.wait_for_function(f"{source_length('sweep_metric')} == 2", timeout=10_000)
    assert sorted(page.evaluate(source_column("sweep_metric", "x"))) == [20, 40]
    expect(page.locator('.tabulator-cell[tabulator-field="status"]', has_text=re.compile("^ok$"))).to_have_count(2)
    doc = json.loads((server["cwd"] / "data" / "browser_scan" / "results.json").read_text())
    assert [r["status"] for r in doc["runs"]] == ["ok", "ok"]
    assert page.get_by_role("button", name="Run sweep", exact=True).is_enabled()
    assert not errors, errors


# --- a shared machine: bind address, file confinement, no file contents in messages -------------

def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_the_server_listens_on_loopback_only(server):
    addresses = listening_addresses(server["port"])
    assert addresses, "nothing listens on the server's port"
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
    assert addresses <= loopback, addresses


def upload(page, path: Path) -> None:
    page.get_by_text("Export / import", exact=True).filter(visible=True).first.click()
    page.set_input_files("input[type=file]", str(path))


def page_text(page, pattern: str, timeout: float = 15_000) -> str:
    message = page.get_by_text(re.compile(pattern)).filter(visible=True).first
    message.wait_for(state="visible", timeout=timeout)
    return message.inner_text()


def test_an_imported_path_outside_the_working_directory_is_refused(page, server, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET 1 2 3 4 5\n")
    bad = tmp_path / "outside.toml"
    bad.write_text(f"ic_path = '{secret}'\n")
    open_dashboard(page, server)
    upload(page, bad)
    text = page_text(page, "lies outside")
    assert "'ic_path'" in text and "--allow-files-under" in text
    assert "TOPSECRET" not in page.content()


def test_a_typed_path_outside_the_working_directory_is_refused(page, server, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET 1 2 3 4 5\n")
    open_dashboard(page, server)
    open_card(page, "Initial conditions")
    set_setting(page, "ic_path", secret)
    text = page_text(page, "lies outside")
    assert "'ic_path'" in text
    assert page.get_by_label("ic_path", exact=True).filter(visible=True).first.input_value() == ""


def test_a_bad_file_inside_is_reported_without_its_contents(page, server):
    (server["cwd"] / "notes.txt").write_text("TOPSECRET 1 2\n3 4 5\n")
    open_dashboard(page, server)
    open_card(page, "Initial conditions")
    set_setting(page, "ic_path", "notes.txt")
    wait_until_changed(page, "Initial conditions")
    page.get_by_role("button", name="Simulate", exact=True).click()
    text = page_text(page, "IC file 'notes.txt'", timeout=60_000)
    assert "not a table of real numbers" in text
    assert "TOPSECRET" not in page.content()


def test_an_imported_bad_list_item_gives_the_cli_message(page, server, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("hidden_dims = [64, -3]\n")
    cli = subprocess.run([sys.executable, "-m", "nbody_engine.runner", "train", "--config", "bad.toml"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2
    cli_message = cli.stderr.strip().removeprefix("nbody-runner: error: ")
    open_dashboard(page, server)
    upload(page, bad)
    assert cli_message in page_text(page, "'hidden_dims' items")


# --- settings, layout, lifecycle ---------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [("-5", "'epochs' must be at least 1, not -5"),
                                               ("2.5", "'epochs' must be an integer, not 2.5")])
def test_a_refused_value_shows_the_cli_message_by_the_box_and_as_a_notification(page, server, text, message):
    open_dashboard(page, server)
    open_card(page, "Training / optimization")
    set_setting(page, "epochs", text)
    shown = page.get_by_text(f"Settings: {message}")
    expect(shown.first).to_be_visible(timeout=15_000)
    assert shown.count() >= 2  # next to the box, and the notification
    assert "widget" not in shown.first.inner_text()
    box = page.get_by_label("epochs", exact=True).filter(visible=True).first
    expect(box).to_have_value(OPENING_EPOCHS, timeout=10_000)  # the last good value


def test_search_finds_a_key_and_reset_restores_it(page, server):
    open_dashboard(page, server)
    search = page.get_by_placeholder("search keys (name or description)").filter(visible=True).first
    search.press_sequentially("threshold")
    box = page.get_by_label("energy_threshold", exact=True).filter(visible=True).first
    expect(box).to_be_visible(timeout=15_000)
    expect(page.get_by_label("lr", exact=True).filter(visible=True)).to_have_count(0)
    box.fill("0.001")
    box.press("Enter")
    changed = page.get_by_text(re.compile(r"^Training / optimization · 1 changed$")).filter(visible=True)
    expect(changed).to_have_count(1, timeout=10_000)
    page.get_by_role("button", name="reset").filter(visible=True).first.click()
    expect(box).to_have_value("0.0002", timeout=10_000)
    expect(changed).to_have_count(0, timeout=10_000)


def test_the_run_controls_and_status_stay_in_view(page, server):
    open_dashboard(page, server)
    for title in ("Training / optimization", "Loss bounds", "Feature / history", "Model"):
        open_card(page, title)
    page.get_by_label("hidden_dims", exact=True).filter(visible=True).first.scroll_into_view_if_needed()
    page.mouse.wheel(0, 5_000)
    page.wait_for_timeout(500)
    for label in ("Train", "Stop"):
        expect(page.get_by_role("button", name=label, exact=True)).to_be_in_viewport()
    expect(page.get_by_text("Ready.")).to_be_in_viewport()


def test_closing_the_tab_stops_its_job(browser, server):
    """The job of a closed tab stops when the server drops its session (nbody-explorer drops an
    unused session after 5 s, checked every second), leaving its checkpoint."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    open_dashboard(page, server)
    open_card(page, "Training / optimization")
    set_setting(page, "epochs", 100_000)
    wait_until_changed(page, "Training / optimization")
    data = server["cwd"] / "data"
    earlier = set(data.glob("explorer_*"))
    page.get_by_role("button", name="Train", exact=True).click()
    wait_for_status(page, r"^epoch \d+/100000 ", timeout=60_000)
    # the run's name, from its new directory: the status line names it only until the first epoch ends
    (run,) = set(data.glob("explorer_*")) - earlier
    ctx.close()
    closed = time.time()
    metrics = run / "metrics.jsonl"
    # a stopped training keeps a checkpoint (written as it stops); wait for one before waiting for
    # the metrics to stop growing, or a slow epoch on a busy machine passes for the stop
    wait_until(lambda: any((run / "model").glob("*.pt")), "a checkpoint of the closed tab's job", timeout=90)
    size, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < 3 and time.time() - closed < 90:  # until it stops growing
        if metrics.stat().st_size != size:
            size, quiet_since = metrics.stat().st_size, time.monotonic()
        time.sleep(0.1)
    took = metrics.stat().st_mtime - closed
    assert took < 30, f"the job went on for {took:.1f}s after its tab closed"  # Bokeh's defaults: 15-32 s


def test_the_simulate_tab_edits_its_own_overrides(page, server):
    open_dashboard(page, server)
    page.locator(".bk-tab", has_text=re.compile(r"^Simulate$")).first.click()
    open_card(page, "Simulation / integrator")
    set_setting(page, "steps", 30)
    wait_until_changed(page, "Simulation / integrator")  # an override of the shared value
    page.locator(".bk-tab", has_text=re.compile(r"^Settings$")).first.click()
    expect(page.get_by_text(re.compile(r"^Simulation / integrator · \d+ changed$")).filter(visible=True)) \
        .to_have_count(0)  # the shared settings are unchanged
