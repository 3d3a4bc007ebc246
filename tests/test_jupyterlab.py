"""The explorer in a real JupyterLab: a server started on loopback with a token (no browser, a
temporary root directory), a notebook run from Chromium whose first cell is the README's one line
(``from explorer import Explorer; Explorer()``, no ``pn.extension`` anywhere), and the live plots
filling while a training runs, with no ``drain()`` call anywhere: the kernel's event loop drives
the Explorer's periodic callback. As on an offline node, a request that leaves the machine fails
the test (tests/conftest.py's ``offline``).

Uses tests/conftest.py's Chromium settings.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from dashboard_page import REPO, free_port, stop, wait_until_it_answers

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("offline")]
pytest.importorskip("jupyterlab", reason="the test extra installs jupyterlab (pip install -e '.[test]')")

EPOCHS = 20_000  # more than the test can see end, however fast the machine
CELLS = [
    "from explorer import Explorer; Explorer()",  # the README's line, alone in a fresh kernel
    "import os, tempfile\n"
    "os.chdir(tempfile.mkdtemp(prefix='lab_run_'))\n"
    "e = Explorer()\n"
    f"e.train.param.update(save_name='lab', seed=2, num_orbits=2, epochs={EPOCHS}, steps_per_epoch=2, n_steps=3,\n"
    "                     replay_steps=3, hidden_dims=[8])\n"
    "e",
    "assert e.start('train')",
]
SCREENSHOT = Path("/tmp/explorer_jupyterlab.png")


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 with a random token, its root a scratch directory holding the notebook."""
    root = tmp_path_factory.mktemp("lab")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, root / "live.ipynb")
    token, port = secrets.token_hex(16), free_port()
    home = tmp_path_factory.mktemp("lab_home")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "IPYTHONDIR": str(home / "ipython"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log = (home / "lab.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                             f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={root}", "--LabApp.news_url=",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                             *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI containers run as root
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_it_answers(proc, f"{base}/api/status?token={token}", home / "lab.log", "jupyter lab", 120)
        yield {"url": f"{base}/lab/tree/live.ipynb?token={token}", "root": root, "log": home / "lab.log"}
    finally:
        stop(proc, 20)
        log.close()


def run_all_cells(page) -> None:
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()


def source_length(name: str) -> str:
    """Rows of the named source in the last Bokeh document of the page that holds it (JupyterLab
    pages hold one per output: the last is the training's dashboard)."""
    return (f"(() => {{ const s = window.Bokeh && Bokeh.documents.map(d => d.get_model_by_name('{name}'))"
            f".filter(Boolean).pop(); return s ? s.get_length() : -1; }})()")


def test_the_explorer_in_jupyterlab_plots_a_training_live(page, jupyterlab):
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(jupyterlab["url"])
    page.locator(".jp-Notebook").first.wait_for(timeout=120_000)
    choose = page.get_by_role("button", name="Select", exact=True)  # JupyterLab may ask for the kernel first
    try:
        choose.wait_for(timeout=20_000)
        choose.click()
    except PlaywrightTimeout:
        pass
    page.get_by_text("Kernel status: Idle").first.wait_for(state="attached", timeout=120_000)  # the kernel is up
    run_all_cells(page)
    # the README's one line renders the whole dashboard, with no pn.extension() before it
    page.wait_for_function("window.Bokeh && Bokeh.documents.some(d => d.get_model_by_name('energy_error'))",
                           timeout=180_000)
    assert page.get_by_text("requires the panel extension").count() == 0
    # the dashboard renders into the output, then the training streams into its plots
    for name in ("energy_error", "angular_momentum_error", "epoch_metrics", "orbit"):
        page.wait_for_function(f"{source_length(name)} > 0", timeout=180_000)
    n = page.evaluate(source_length("epoch_metrics"))
    page.wait_for_function(f"{source_length('epoch_metrics')} > {n}", timeout=120_000)  # still coming in
    assert n < EPOCHS
    page.get_by_text(f"/{EPOCHS} · ", exact=False).filter(visible=True).first.wait_for(timeout=60_000)  # the header
    page.screenshot(path=str(SCREENSHOT))
    bokeh_errors = [e for e in errors if "bokeh" in e.lower() or "panel" in e.lower()]
    assert not bokeh_errors, bokeh_errors  # nothing fetched from a CDN, no model BokehJS rejects
