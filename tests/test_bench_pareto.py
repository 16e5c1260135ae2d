"""The two-objective benchmark: hypervolume by hand, and a tiny run through the command line."""

import json

import optuna
import pytest
from click.testing import CliRunner

from ronas_optuna.bench.pareto import hypervolume
from ronas_optuna.cli import main


@pytest.mark.parametrize(
    "points, ref, expected",
    [
        ([(0.8, 1.0)], 3.0, 0.8 * 2.0),
        # two steps: (Dice 0.5 from cost 1 to 2) + (Dice 0.8 from cost 2 to 4)
        ([(0.5, 1.0), (0.8, 2.0)], 4.0, 0.5 * 1.0 + 0.8 * 2.0),
        ([(0.5, 1.0), (0.4, 2.0)], 4.0, 0.5 * 3.0),  # a dominated point adds nothing
        ([(0.9, 5.0)], 4.0, 0.0),  # past the reference cost
        ([], 4.0, 0.0),
    ],
)
def test_hypervolume_by_hand(points, ref, expected):
    assert hypervolume(points, ref) == pytest.approx(expected)


def test_tiny_two_objective_benchmark(tmp_path, synthetic_root):
    storage = f"sqlite:///{tmp_path / 'p.db'}"
    args = ["benchmark", str(synthetic_root), "--objectives", "dice,memory", "--samplers", "ronas,nsga2"]
    args += ["--seeds", "1", "--folds", "2", "--trials", "4", "--storage", storage, "--spacing", "2.0"]
    args += ["--depth", "2", "--base-width", "4", "--max-width", "8", "--steps-per-trial", "1"]
    args += ["--device", "cpu", "-o", str(tmp_path / "out")]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "held-out hypervolume" in res.output and "| nsga2 | 2 |" in res.output
    rows = json.loads((tmp_path / "out" / "benchmark.json").read_text())["rows"]
    assert {(r["sampler"], r["fold"]) for r in rows} == {(s, f) for s in ("ronas", "nsga2") for f in (0, 1)}
    for r in rows:
        front = r["front"]
        assert front and [f["cost"] for f in front] == sorted(f["cost"] for f in front)
        assert r["hypervolume"] == pytest.approx(
            hypervolume([(f["test_dice"], f["cost"]) for f in front], r["reference_cost"])
        )
        study = optuna.load_study(
            study_name=f"bench-{r['sampler']}-dice-memory-fold{r['fold']}-seed0", storage=storage
        )
        assert len(study.directions) == 2 and {f["trial"] for f in front} == {
            t.number for t in study.best_trials
        }
    assert (tmp_path / "out" / "benchmark.png").exists()
    again = CliRunner().invoke(main, args, catch_exceptions=False)  # kept results are reused
    assert again.exit_code == 0 and again.output.count("(kept)") == 4
