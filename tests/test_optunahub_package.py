"""The OptunaHub package in ``package/samplers/ronas`` loads as the registry loads it and runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "package" / "samplers" / "ronas"


def test_the_package_loads_with_optunahub_and_is_the_shipped_class():
    optunahub = pytest.importorskip("optunahub")
    from ronas_optuna import RONASSampler

    module = optunahub.load_local_module("samplers/ronas", registry_root=str(ROOT / "package"))
    assert module.RONASSampler is RONASSampler  # the same code, not a copy


def test_the_example_runs_a_few_trials_and_learns():
    optunahub = pytest.importorskip("optunahub")
    module = optunahub.load_local_module("samplers/ronas", registry_root=str(ROOT / "package"))
    spec = importlib.util.spec_from_file_location("ronas_hub_example", PACKAGE / "example.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    study = example.main(module=module, n_trials=60)
    assert len(study.trials) == 60 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.best_value >= 5.0  # of 6: the policy finds good cells (a random draw averages 2.8)


def test_the_readme_has_the_registry_front_matter():
    text = (PACKAGE / "README.md").read_text()
    front = text.split("---")[1]
    for key in ("author:", "title:", "description:", "tags:", "optuna_versions:", "license:"):
        assert key in front
    assert (PACKAGE / "LICENSE").exists() and "ronas_optuna" in (PACKAGE / "requirements.txt").read_text()
