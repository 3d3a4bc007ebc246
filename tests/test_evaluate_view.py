"""The Evaluate view in a real browser: a real evaluation's result served by Panel, driven by
headless Chromium (the launch options come from tests/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from playwright.sync_api import expect
from dashboard_page import DOC_READY, free_port
from helpers import cli_ok

from nbody_engine.evaluate.report import PALETTE

pytestmark = pytest.mark.browser

COUNT = ("(type) => { let n = 0; for (const m of Bokeh.documents[0].all_models) "
         "{ if (m.type === type || m.constructor.__name__ === type) n++; } return n; }")
COLORS = ("() => { const out = []; for (const m of Bokeh.documents[0].all_models) { "
          "for (const c of [m.line_color, m.fill_color]) { const v = c && typeof c === 'object' ? c.value : c; "
          "if (typeof v === 'string') out.push(v.toUpperCase()); } } return out; }")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_checkpoint):
    """A finished evaluation (a tiny checkpoint, the Kepler problem) shown by ``evaluation_view``."""
    root = tmp_path_factory.mktemp("view")
    cli_ok(root, "evaluate", "--model-path", str(tiny_checkpoint), "--eval-suite", "kepler", "--eval-systems", "0",
           "--eval-e", "0.7", "--eval-eps", "0.05", "0.2", "--Nperiod", "1", "--eval-long-periods", "20", "-s", "view")
    table = json.loads((root / "data/view/eval/table.json").read_text())
    app = root / "app.py"
    app.write_text(
        "import json\nfrom explorer.evaluate_view import evaluation_view\n"
        f"t = json.loads(open({str(root / 'data/view/eval/table.json')!r}).read())\n"
        "evaluation_view({'rows': t['rows'], 'verdicts': t['learned_versus_baselines'], "
        "'references': t['references']}).servable()\n")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "panel", "serve", str(app), "--port", str(port)], cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield {"url": f"http://localhost:{port}/app", "table": table}
    server.terminate()
    server.wait(timeout=30)


def test_the_pareto_plot_is_interactive_colour_blind_safe_and_the_verdicts_a_table(page, served):
    for _ in range(60):  # the server takes a while to start on a busy machine
        try:
            page.goto(served["url"])
            break
        except Exception:  # noqa: BLE001 - connection refused until it listens
            page.wait_for_timeout(1000)
    page.wait_for_function(DOC_READY, timeout=60_000)
    page.wait_for_function(f"({COUNT})('Scatter') > 0", timeout=60_000)
    assert page.evaluate(f"({COUNT})('HoverTool')") >= 1
    assert page.evaluate(f"({COUNT})('WheelZoomTool')") >= 1
    # both axes numeric and logarithmic (a string as the markers' y made a categorical axis)
    assert page.evaluate(f"({COUNT})('FactorRange')") == 0
    assert page.evaluate(f"({COUNT})('LogAxis')") >= 2
    colors = set(page.evaluate(COLORS))
    assert colors & set(PALETTE) and "#F0E442" not in colors  # Okabe-Ito without its yellow
    expect(page.get_by_text("analytic-midpoint").first).to_be_visible(timeout=30_000)
    # a legend names every policy drawn (colours alone cannot tell six policies apart)
    legend = page.evaluate("() => Array.from(Bokeh.documents[0].all_models).filter(m => m.type === 'LegendItem' || "
                           "m.constructor.__name__ === 'LegendItem').map(m => m.label.value)")
    assert {"learned", "fixed", "classic", "analytic", "analytic-symmetric", "analytic-midpoint"} <= set(legend)
    assert page.evaluate(f"({COUNT})('WheelZoomTool')") >= 1  # on the toolbar, not active: the wheel scrolls
    page.screenshot(path="/tmp/explorer_pareto.png")
    expect(page.get_by_text("reference: IAS15").first).to_be_visible()
