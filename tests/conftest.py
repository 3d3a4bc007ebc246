"""Shared fixtures: one tiny trained checkpoint for the session (:func:`tiny_checkpoint`), and
the browser tests' pytest-playwright on Debian's Chromium, the dashboard served from a scratch
directory, and a guard that no page request leaves the machine. Fixtures that no test asks for
cost nothing: the other tests never train, start a browser or a server.

Helpers that are no fixtures (the runner in a subprocess or in process, the tiny config,
waiting for a state) are in ``helpers.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dashboard_page import CHROMIUM, CHROMIUM_ARGS, LOOPBACK, REPO, free_port, stop, wait_until_it_answers
from helpers import TINY


@pytest.fixture(scope="session", autouse=True)
def compiled_steps_of_the_session(tmp_path_factory):
    """A cache of compiled steps (``NBODY_EXPLORER_CACHE``) of the session's own, for this
    process and the runners it starts: no test reads the packages of the user's own runs (an eager
    run would take one where it matches) or writes there."""
    before = os.environ.get("NBODY_EXPLORER_CACHE")
    os.environ["NBODY_EXPLORER_CACHE"] = str(tmp_path_factory.mktemp("nbody_explorer_cache"))
    yield Path(os.environ["NBODY_EXPLORER_CACHE"])
    if before is None:
        os.environ.pop("NBODY_EXPLORER_CACHE")
    else:
        os.environ["NBODY_EXPLORER_CACHE"] = before


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """The last checkpoint of one tiny training (:data:`helpers.TINY`), trained once per session
    for every test that needs a checkpoint and not what it learned; in a folder of its own, outside
    any test's data/. Tests copy it before they change it."""
    from nbody_engine.config.loading import load_configs
    from nbody_engine.jobs.train import run_training

    root = tmp_path_factory.mktemp("tiny_checkpoint")
    cfg = load_configs("train", cli={**TINY, "save_name": "tiny"})["train"]
    return Path(run_training(cfg, data_dir=root / "data")["checkpoint"])


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright's launch options, on the system Chromium."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium (scripts/setup.sh --test, as root)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests, but {reason}")
        pytest.skip(reason)
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1600, "height": 1000}, "accept_downloads": True}


@pytest.fixture
def offline(context):
    """Every page of a test runs as on an offline node: a request that would leave the machine
    is refused, and fails the test (the dashboard's test modules use it on every test)."""
    outside: list[str] = []

    def refuse(route):
        outside.append(route.request.url)
        route.abort()

    context.route(lambda url: not LOOPBACK.match(url), refuse)
    yield outside
    assert not outside, f"the page asked for resources outside this machine: {outside}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The dashboard (``nbody-explorer`` with its defaults) served from a scratch directory;
    its runs land in <cwd>/data."""
    cwd = tmp_path_factory.mktemp("served")
    port = free_port()
    log = (cwd / "server.log").open("w")
    cmd = [sys.executable, "-m", "explorer.serve", "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/explorer"
    try:
        wait_until_it_answers(proc, url, cwd / "server.log", "panel serve", 180)
        yield {"url": url, "cwd": cwd, "port": port}
    finally:
        stop(proc, 10)
        log.close()
