"""Every notebook in notebooks/ runs top to bottom in a fresh kernel of this Python, without errors.

The notebooks assert on what they compute, so a broken engine, explorer or runner fails them.
They are committed without outputs; a test keeps them that way.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_the_notebooks_are_there():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_engine_tour.ipynb", "02_explorer_in_jupyter.ipynb", "03_compare_runs.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {i} of {path.name} has outputs"


def kernel_manager(tmp_path: Path) -> AsyncKernelManager:
    """A kernel of the Python running the tests (not whatever 'python3' kernel Jupyter finds first)."""
    spec_dir = tmp_path / "kernels" / "nbody-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "nbody explorer tests", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return AsyncKernelManager(kernel_name="nbody-test", kernel_spec_manager=specs)


def image_outputs(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, km=kernel_manager(tmp_path), timeout=CELL_TIMEOUT_S, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    # the notebooks work in tempfile.mkdtemp() directories: keep those under this test's tmp_path
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    try:
        client.execute(env=env)
    except CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}", pytrace=False)
    # every cell that shows a matplotlib figure shows it: importing the engine must not switch the
    # notebook's inline backend to a non-interactive one
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "plt.show()" in cell.source:
            assert image_outputs(cell) >= 1, f"cell {i} of {path.name} drew no figure"
