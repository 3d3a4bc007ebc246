"""The code passes the linter the project configures (pyproject's [tool.ruff]): pyflakes'
undefined and unused names, bugbear's likely bugs, pycodestyle, and 120-column lines."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
