"""The examples run as their docstrings say (on tiny budgets)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_searches_fine_tunes_and_exports():
    r = subprocess.run(
        [sys.executable, "examples/quickstart.py", "--trials", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("final network (shared weights, no retraining): ") and "model.pt" in line


def test_msd_search_uses_the_one_search_object():
    text = (ROOT / "examples/msd_search.py").read_text()
    r = subprocess.run(
        [sys.executable, "examples/msd_search.py", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0 and "--trials" in r.stdout
    assert "create_search" in text and "runner" not in text
