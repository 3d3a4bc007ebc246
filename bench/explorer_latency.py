"""The dashboard: what a new session costs, the opening run, and latency under load.

Measures, in one run against real `panel serve explorer` servers in headless Chromium:
  1. a new session, before and after (the dashboard of revision ``--before``, extracted with
     ``git archive``, and this tree's, served side by side, sessions alternating): the server's
     CPU time per session (its process's user + system time from opening the page until it is
     interactive and quiet) and the browser's time to interactive (page requested -> the Train
     button enabled);
  2. the opening run, before and after: press Train with the dashboard's defaults and time the
     first orbit points in the browser and the end of the run; and how long a job goes on
     after its tab is closed;
  3. latency from an epoch's end in the engine (its metrics.jsonl line appearing) to its point
     in the browser's per-epoch plot source (median and 90th percentile; epochs that end while
     the page shows another tab are left out: a tab's plots are rendered only while it shows);
  4. training throughput with the dashboard open, as a ratio of the headless runner's on the
     same settings (sum of epoch_time_s), and of the same job with no browser (the server's own
     cost, apart from a browser sharing the machine's cores);
  5. how fast the page answers a widget change while training runs (server round trip: the
     export mode buttons rewrite the headless command box);
  6. two tabs training at once: the first page's main thread busy share (long tasks), then
     Stop: the click to the server's answer ('Stopping...') and to 'stopped' in the status line.
Targets: session < 0.8 s of server time; opening run: first orbit points < 2 s, whole run < 15 s;
Stop < 1 s; a closed tab's job ends once the server drops its session (5 s unused, checked each s)
(idle 2-core machine); latency median < 0.5 s, throughput >= 90% of headless, widget answer
< 200 ms. ``--epochs`` must keep the run in 3-5 going past the widget changes of 5 (a few
seconds), or every epoch ends while the page shows the Export tab and none is counted;
``--before ''`` measures this tree alone.

    python bench/explorer_latency.py [--epochs 200] [--sessions 5] [--before d06d972]
                                     [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from _common import write_results

REPO = Path(__file__).resolve().parent.parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(cwd: Path, port: int, tree: Path = REPO) -> subprocess.Popen:
    """``panel serve`` of the dashboard in ``tree`` (this checkout, or an extracted revision)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # the unused-session settings nbody-explorer gives (explorer/serve.py), for both revisions
    proc = subprocess.Popen([sys.executable, "-m", "panel", "serve", str(tree / "explorer"), "--port", str(port),
                             "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}",
                             "--check-unused-sessions", "1000", "--unused-session-lifetime", "5000"],
                            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300  # a first page builds slowly on a loaded machine
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/explorer", timeout=300)
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the server did not answer")


class LineWatcher(threading.Thread):
    """Timestamps each line of a growing file the moment it appears (polled every 2 ms)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.times, self.stop = path, [], threading.Event()

    def run(self) -> None:
        seen = 0
        while not self.stop.is_set():
            if self.path.exists():
                n = self.path.read_bytes().count(b"\n")
                now = time.time()
                self.times.extend([now] * (n - seen))
                seen = n
            time.sleep(0.002)


def set_epochs(page, epochs: int) -> None:
    page.get_by_text("Training / optimization").first.click()
    box = page.get_by_label("epochs", exact=True).filter(visible=True).first
    box.fill(str(epochs))
    box.press("Enter")
    time.sleep(1)


def dashboard_run(cwd: Path, epochs: int, chromium: str) -> dict:
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = serve(cwd, port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.set_default_timeout(300_000)  # a loaded machine builds the page slowly
            page.goto(f"http://127.0.0.1:{port}/explorer")
            page.wait_for_function("window.Bokeh && Bokeh.documents.length > 0")
            set_epochs(page, epochs)
            page.evaluate("""() => { window.__seen = []; let last = 0;
                setInterval(() => { const s = Bokeh.documents[0].get_model_by_name('epoch_metrics');
                  const n = s ? s.get_length() : 0;
                  for (let i = last; i < n; i++) window.__seen.push(Date.now() / 1000); last = Math.max(last, n); }, 5);
            }""")
            earlier = runs_in(cwd)
            page.get_by_role("button", name="Train", exact=True).click()
            # the run's name from its new folder: the status line names it only until the first epoch ends
            name = new_run(cwd, earlier)
            watcher = LineWatcher(cwd / "data" / name / "metrics.jsonl")
            watcher.start()
            away_from = time.time()
            answers = widget_answers(page)
            away_until = time.time() + 1.0
            page.get_by_text(re.compile("finished in")).filter(visible=True).first.wait_for(timeout=1_800_000)
            time.sleep(1)
            watcher.stop.set()
            seen = page.evaluate("() => window.__seen")
            browser.close()
    finally:
        server.kill()
        server.wait()
    lines = (cwd / "data" / name / "metrics.jsonl").read_text().splitlines()
    epoch_time = sum(json.loads(line)["epoch_time_s"] for line in lines)
    n = min(len(seen), len(watcher.times))
    # epochs that ended while the page showed the Export tab reach the plot when the Training
    # tab is shown again (tabs render only when shown): they are not counted
    latencies = [seen[i] - watcher.times[i] for i in range(n) if not away_from <= watcher.times[i] <= away_until]
    return {"name": name, "epoch_time_s": epoch_time, "latencies": latencies, "widget_answers": answers,
            "config": (cwd / "data" / name / "config.toml").read_text()}


def runs_in(cwd: Path) -> set[str]:
    data = cwd / "data"
    return {p.name for p in data.iterdir()} if data.is_dir() else set()


def new_run(cwd: Path, earlier: set[str], timeout: float = 120.0) -> str:
    """The run folder that appeared under ``cwd``/data since ``earlier`` was listed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = runs_in(cwd) - earlier
        if fresh:
            return fresh.pop()
        time.sleep(0.02)
    raise RuntimeError("no run folder appeared")


def widget_answers(page, repeats: int = 8) -> list[float]:
    """Seconds from clicking an export mode button to the server's new command in the page."""
    page.get_by_text("Export / import", exact=True).filter(visible=True).first.click()
    times = []
    for i in range(repeats):
        mode = ("train", "both")[i % 2]
        start = time.perf_counter()
        page.get_by_role("button", name=mode, exact=True).first.click()
        page.wait_for_function(f"() => [...Bokeh.documents[0].all_models].some("
                               f"m => m.title === 'Headless command' && m.value.startsWith('nbody-runner {mode} '))",
                               timeout=30_000, polling=5)
        times.append(time.perf_counter() - start)
        time.sleep(0.3)
    page.get_by_text("Training", exact=True).filter(visible=True).first.click()
    return times


def extract_revision(ref: str, into: Path) -> Path:
    """The dashboard and engine of revision ``ref``, as files under ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "explorer", "nbody_engine"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_interactive(page) -> None:
    """Until the page's Train button can be pressed (Bokeh's widgets live in shadow roots,
    which Playwright's locators pierce)."""
    from playwright.sync_api import expect

    page.wait_for_function("window.Bokeh && Bokeh.documents.length > 0", timeout=120_000, polling=20)
    expect(page.get_by_role("button", name="Train", exact=True)).to_be_enabled(timeout=120_000)


def quiet(pid: int, for_s: float = 1.0, timeout: float = 60.0) -> None:
    """Wait until process ``pid`` has used no CPU for ``for_s`` seconds (deferred work done)."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(for_s)
        now = cpu_seconds(pid)
        if now - last < 0.02 * for_s:
            return
        last = now


def open_session(browser, port: int, pid: int) -> tuple[float, float]:
    """Open a new session; return (server CPU seconds it cost, browser seconds to interactive)."""
    quiet(pid)
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    cpu = cpu_seconds(pid)
    start = time.perf_counter()
    page.goto(f"http://127.0.0.1:{port}/explorer", timeout=120_000)
    wait_interactive(page)
    interactive = time.perf_counter() - start
    quiet(pid)
    cost = cpu_seconds(pid) - cpu
    page.close()
    return cost, interactive


def opening_run(browser, port: int, cwd: Path) -> dict:
    """Press Train with the dashboard's defaults: seconds to the first orbit points in the
    browser and to the run's end (the status line's 'finished')."""
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.goto(f"http://127.0.0.1:{port}/explorer", timeout=120_000)
    wait_interactive(page)
    orbit = "(() => { const s = Bokeh.documents[0].get_model_by_name('orbit'); return s && s.get_length() > 0; })()"
    start = time.perf_counter()
    page.get_by_role("button", name="Train", exact=True).click()
    page.wait_for_function(orbit, timeout=600_000, polling=20)
    first = time.perf_counter() - start
    page.get_by_text(re.compile("Train finished in")).filter(visible=True).first.wait_for(timeout=1_800_000)
    whole = time.perf_counter() - start
    page.close()
    return {"first_orbit_points_s": first, "whole_run_s": whole}


BUSY_JS = """() => { window.__busy = 0; new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__busy += e.duration; }).observe({entryTypes: ["longtask"]}); }"""


def long_training(browser, port: int):
    """A page training for 100,000 epochs, a few epochs in."""
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.goto(f"http://127.0.0.1:{port}/explorer", timeout=120_000)
    wait_interactive(page)
    page.evaluate(BUSY_JS)
    page.get_by_text(re.compile(r"^Training / optimization")).filter(visible=True).first.click()
    box = page.get_by_label("epochs", exact=True).filter(visible=True).first
    box.fill("100000")
    box.press("Enter")
    time.sleep(1)
    page.get_by_role("button", name="Train", exact=True).click()
    # a few epochs in (the status shows the last epoch of each batch sent, so it can skip some)
    page.get_by_text(re.compile(r"^epoch ([3-9]|\d{2,})/100000")).filter(visible=True).first.wait_for(timeout=300_000)
    return page


def closed_tab_stop(browser, port: int, cwd: Path) -> float:
    """Start a long training, close its tab a few epochs in, and return the seconds from the
    close to the run's last metrics line (negative: no epoch ended after the close)."""
    page = long_training(browser, port)
    metrics = max((cwd / "data").glob("*/metrics.jsonl"), key=lambda p: p.stat().st_mtime)
    page.close()
    closed = time.time()
    size, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < 5 and time.time() - closed < 120:
        if metrics.stat().st_size != size:
            size, quiet_since = metrics.stat().st_size, time.monotonic()
        time.sleep(0.05)
    return metrics.stat().st_mtime - closed


def stop_latency(browser, port: int, cwd: Path, tabs: int = 2) -> dict:
    """``tabs`` tabs train at once (the server's two job slots); on the first: the share of its
    main thread taken by long tasks (> 50 ms) over 10 s, then Stop: seconds from the click to
    the server's answer in the page ('Stopping...') and to 'stopped' (the job has ended)."""
    pages = [long_training(browser, port) for _ in range(tabs)]
    page = pages[0]
    time.sleep(2)
    busy, since = page.evaluate("window.__busy"), time.perf_counter()
    time.sleep(10)
    busy = (page.evaluate("window.__busy") - busy) / 1000 / (time.perf_counter() - since)
    stop = page.get_by_role("button", name="Stop", exact=True)
    start = time.perf_counter()
    stop.click(force=True, timeout=300_000)  # a page redrawn by the stream never looks 'stable' to Playwright
    page.get_by_text(re.compile("Stopping|stopped")).filter(visible=True).first.wait_for(timeout=300_000)
    answered = time.perf_counter() - start
    page.get_by_text(re.compile("stopped after")).filter(visible=True).first.wait_for(timeout=300_000)
    took = time.perf_counter() - start
    for p in pages:
        p.close()
    return {"busy_share": busy, "stop_answered_s": answered, "stop_click_s": took}


def before_and_after(before: str, sessions: int, chromium: str, tmp: Path) -> dict:
    """Sessions of the ``before`` revision's dashboard and this tree's, alternating, then each
    one's opening run and a job whose tab closes; the first session of each server (imports)
    is not counted."""
    from playwright.sync_api import sync_playwright

    trees = {"before": extract_revision(before, tmp / "before"), "after": REPO} if before else {"after": REPO}
    servers, ports = {}, {}
    try:
        for label, tree in trees.items():
            (tmp / f"cwd_{label}").mkdir()
            ports[label] = free_port()
            servers[label] = serve(tmp / f"cwd_{label}", ports[label], tree)
        found: dict = {label: {"server_cpu_s": [], "interactive_s": []} for label in trees}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=ARGS)
            for label in trees:
                open_session(browser, ports[label], servers[label].pid)  # warm-up
            for _ in range(sessions):
                for label in trees:
                    cost, interactive = open_session(browser, ports[label], servers[label].pid)
                    found[label]["server_cpu_s"].append(cost)
                    found[label]["interactive_s"].append(interactive)
            for label in trees:
                found[label].update(opening_run(browser, ports[label], tmp / f"cwd_{label}"))
                found[label]["closed_tab_stop_s"] = closed_tab_stop(browser, ports[label], tmp / f"cwd_{label}")
                found[label].update(stop_latency(browser, ports[label], tmp / f"cwd_{label}"))
            browser.close()
    finally:
        for proc in servers.values():
            proc.kill()
            proc.wait()
    return found


def headless_run(cwd: Path, config_text: str) -> float:
    config = cwd / "run.toml"
    config.write_text(config_text)
    subprocess.run([sys.executable, "-m", "nbody_engine.runner", "train", "--config", str(config), "-s", "headless"],
                   cwd=cwd, check=True, capture_output=True)
    return sum(json.loads(line)["epoch_time_s"] for line in (cwd / "data/headless/metrics.jsonl").open())


def job_run(cwd: Path, config_text: str) -> float:
    """The same training as a dashboard job (explorer.jobs.Job, drained into the live plots as a
    session would) with no browser: what the server costs the engine, apart from a browser
    sharing its cores."""
    sys.path.insert(0, str(REPO))
    from explorer.jobs import Job
    from explorer.live import LivePlots

    previous = os.getcwd()
    os.chdir(cwd)  # before the Job: it runs where it was made
    try:
        live, job = LivePlots(), Job("train", config_text, save_name="job")
        job.start()
        while job.running:
            time.sleep(0.2)
            live.ingest(job.poll())
    finally:
        os.chdir(previous)
    return sum(json.loads(line)["epoch_time_s"] for line in (cwd / "data/job/metrics.jsonl").open())


def print_sessions(found: dict, before: str) -> None:
    med = {label: {k: statistics.median(v) if isinstance(v, list) else v for k, v in m.items()}
           for label, m in found.items()}
    labels = [label for label in ("before", "after") if label in med]
    heads = " | ".join(f"before ({before})" if label == "before" else "after" for label in labels)
    print(f"| new session and opening run | {heads} | target |\n| --- |{' --- |' * len(labels)} --- |")
    rows = [("server CPU time per session, median", "server_cpu_s", "< 0.8 s"),
            ("browser: page requested -> interactive, median", "interactive_s", ""),
            ("opening run: Train -> first orbit points", "first_orbit_points_s", "< 2 s"),
            ("opening run: Train -> finished", "whole_run_s", "< 15 s"),
            ("tab closed -> its job's last epoch written", "closed_tab_stop_s", "< 7 s"),
            ("two tabs train: the first's main thread busy (long tasks)", "busy_share", ""),
            ("... Stop clicked -> the server's answer in the page", "stop_answered_s", "< 0.3 s"),
            ("... Stop clicked -> 'stopped' in the browser", "stop_click_s", "< 1 s")]
    for text, key, target in rows:
        shown = [f"{100 * med[label][key]:.0f}%" if key == "busy_share" else f"{med[label][key]:.2f} s"
                 for label in labels]
        print(f"| {text} | " + " | ".join(shown) + f" | {target} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=5, help="new sessions measured per revision")
    parser.add_argument("--before", default="d06d972", help="the revision to compare with (before the lazy page)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    # a job's process may still be writing its last checkpoint as the folder goes
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        sessions = before_and_after(args.before, args.sessions, args.chromium, Path(tmp))
        print_sessions(sessions, args.before)  # before the long stage: a failure there keeps these
        dash = dashboard_run(Path(tmp), args.epochs, args.chromium)
        headless = headless_run(Path(tmp), dash["config"])
        job = job_run(Path(tmp), dash["config"])
    lat = sorted(dash["latencies"])
    result = {
        "sessions": sessions,
        "epochs": len(lat),
        "latency_median_s": statistics.median(lat),
        "latency_p90_s": lat[int(0.9 * (len(lat) - 1))],
        "throughput_ratio": headless / dash["epoch_time_s"],
        "job_throughput_ratio": headless / job,
        "widget_answer_median_s": statistics.median(dash["widget_answers"]),
        "widget_answer_max_s": max(dash["widget_answers"]),
    }
    print("| measure | value | target |\n| --- | --- | --- |")
    print(f"| epoch end -> browser, median | {result['latency_median_s']:.3f} s | < 0.5 s |")
    print(f"| epoch end -> browser, 90th percentile | {result['latency_p90_s']:.3f} s | |")
    print(f"| training throughput, dashboard / headless | {result['throughput_ratio']:.2f} | >= 0.9 |")
    print(f"| training throughput, job without a browser / headless | {result['job_throughput_ratio']:.2f} | |")
    print(f"| widget change answered, median | {1000 * result['widget_answer_median_s']:.0f} ms | < 200 ms |")
    print(f"| widget change answered, max | {1000 * result['widget_answer_max_s']:.0f} ms | |")
    write_results("explorer_latency", result)


if __name__ == "__main__":
    main()
