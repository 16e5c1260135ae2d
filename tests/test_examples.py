"""The examples run as their docstrings say (on tiny budgets)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_searches_fine_tunes_and_exports(tmp_path):
    r = subprocess.run(
        [sys.executable, "examples/quickstart.py", "--trials", "2", "--out", str(tmp_path / "qs")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("final network (shared weights, no retraining): ") and "model.pt" in line
    names = {p.name for p in (tmp_path / "qs").iterdir()}  # in --out, and the study file at rest
    assert {"model.pt", "nas.db", "Task000_Synthetic"} <= names and "nas.db-wal" not in names


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from ronas_optuna.data import make_msd_dataset

    return make_msd_dataset(tmp_path_factory.mktemp("ex") / "Task001", n_cases=4, shape=(24, 24, 16), seed=0)


@pytest.mark.slow
def test_msd_search_searches_and_exports_with_the_one_search_object(dataset, tmp_path):
    text = (ROOT / "examples/msd_search.py").read_text()
    assert "create_search" in text and "runner" not in text
    cmd = [sys.executable, str(ROOT / "examples/msd_search.py"), str(dataset), "--quick", "--trials", "3"]
    cmd += ["--storage", f"sqlite:///{tmp_path / 'm.db'}", "--device", "cpu"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("final model ") and "validation Dice" in line
    model = line.split()[2].rstrip(":")
    assert (tmp_path / model).exists() or Path(model).exists()


@pytest.mark.slow
def test_compare_samplers_writes_its_table(dataset, tmp_path):
    cmd = [sys.executable, str(ROOT / "examples/compare_samplers.py"), str(dataset), "--quick"]
    cmd += ["--storage", f"sqlite:///{tmp_path / 'c.db'}"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ronas" in r.stdout and "random" in r.stdout and "plot:" in r.stdout
