import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from ronas_optuna import NASObjective, RONASSampler, SearchSettings
from ronas_optuna.dashboard import TrialFigures
from ronas_optuna.data import DataError
from ronas_optuna.plan import SearchPlan
from ronas_optuna.runner import (
    build_objective,
    export,
    prepare,
    run_folder_name,
    run_search,
    trials_to_run,
)

SETTINGS = SearchSettings.from_options(
    spacing=2.0, depth=2, base_width=4, max_width=8, n_patch_sizes=1, steps_per_trial=1, finetune_steps=0
)


def test_run_folder_names_are_safe_and_distinct():
    assert run_folder_name("demo") == "demo"
    a, b = run_folder_name("a/b"), run_folder_name("a_b")
    assert a != b and "/" not in a and a.startswith("a_b-")
    assert ".." not in run_folder_name("../../x").split("-")[0].replace("_.._", "")
    with pytest.raises(ValueError, match="--study"):
        run_folder_name("...")


def test_prepare_resolves_once_then_reuses_the_plan(tmp_path, synthetic_root):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study, plan = prepare(str(synthetic_root), storage, "p", settings=SETTINGS)
    assert isinstance(study.sampler, RONASSampler) and study.user_attrs["sampler"] == "ronas"
    assert Path(plan.run_dir) == (tmp_path / "s_runs" / "p").resolve() and plan.path.exists()
    again_study, again = prepare(
        None, storage, "p", sampler="random", settings=SearchSettings.from_options(steps_per_trial=99)
    )
    assert again == plan and isinstance(again_study.sampler, optuna.samplers.RandomSampler)
    with pytest.raises(ValueError, match="does not exist"):
        prepare(None, storage, "missing")


def test_run_search_and_export(tmp_path, synthetic_root):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study, plan = prepare(str(synthetic_root), storage, "r", settings=SETTINGS)
    obj = run_search(study, plan, 2, device="cpu", artifacts=tmp_path / "art", figures_every=1)
    assert len(study.trials) == 2 and plan.checkpoint.exists()
    assert sum(isinstance(h, TrialFigures) for h in obj.hooks) == 1
    run_search(study, plan, 1, device="cpu", artifacts=tmp_path / "art", objective=obj)
    assert sum(isinstance(h, TrialFigures) for h in obj.hooks) == 1 and len(study.trials) == 3
    model = export(study, plan, tmp_path / "m.pt", objective=obj)
    assert (tmp_path / "m.pt").exists() and model.metrics["eval_seconds"] >= 0


def test_importing_the_package_leaves_the_matplotlib_backend_alone():
    code = (
        "import matplotlib; matplotlib.use('svg'); import ronas_optuna.runner, ronas_optuna.cli, "
        "ronas_optuna.bench; print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_resume_marks_trials_left_running_by_a_dead_process_as_failed(tmp_path, synthetic_root, kind):
    storage = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else str(tmp_path / "s.log")
    study, plan = prepare(str(synthetic_root), storage, "crash", settings=SETTINGS)
    run_search(study, plan, 1, device="cpu")
    study.ask()  # a trial whose process is killed: it stays RUNNING
    study.ask()
    again, _ = prepare(None, storage, "crash")
    states = [t.state for t in again.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert [t.user_attrs.get("fail_reason") for t in again.trials[1:]] == ["process died"] * 2


def test_total_counts_finished_trials_and_trials_counts_more(tmp_path, synthetic_root):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study, plan = prepare(str(synthetic_root), storage, "t", settings=SETTINGS)
    assert trials_to_run(study, 5, None) == 5 and trials_to_run(study, 5, 3) == 3
    run_search(study, plan, trials_to_run(study, None, 2), device="cpu")
    study.ask()  # left running, counted by nobody
    assert trials_to_run(study, 20, 2) == 0 and trials_to_run(study, 20, 4) == 2


def test_trials_left_in_the_checkpoint_match_the_study_on_resume(tmp_path, synthetic_root):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study, plan = prepare(str(synthetic_root), storage, "k", settings=SETTINGS)
    obj = run_search(study, plan, 2, device="cpu")
    obj.trials_trained = 3  # trained and checkpointed, killed before Optuna heard of it
    obj.save()
    resumed = run_search(study, plan, 1, device="cpu")
    assert resumed.trials_trained == 3 and len(study.trials) == 3


PLAN_SETTINGS = SearchSettings.from_options(
    spacing=2.0, depth=2, base_width=4, max_width=8, n_patch_sizes=2, steps_per_trial=3, lr=0.02, seed=1
)


def _plan(root, tmp_path):
    return SearchPlan.resolve(root, tmp_path / "run", PLAN_SETTINGS)


def test_build_objective_applies_the_settings(synthetic_root, tmp_path):
    plan = _plan(synthetic_root, tmp_path)
    obj = build_objective(plan, device="cpu")
    assert isinstance(obj, NASObjective)
    assert obj.settings.training.steps_per_trial == 3 and obj.trainer.lr == 0.02 and obj.trainer.seed == 1
    assert obj.evaluator.case_ids == plan.val_ids and obj.checkpoint == plan.checkpoint


def test_build_objective_refuses_a_missing_dataset(synthetic_root, tmp_path):
    plan = _plan(synthetic_root, tmp_path)
    plan.data = str(tmp_path / "gone")
    with pytest.raises(DataError, match="no longer exists"):
        build_objective(plan, device="cpu")


def test_build_objective_initialises_the_supernet_from_the_seed(synthetic_root, tmp_path):
    plan = _plan(synthetic_root, tmp_path)
    a, b = (
        build_objective(plan, device="cpu", checkpoint=False),
        build_objective(plan, device="cpu", checkpoint=False),
    )
    assert all(torch.equal(x, y) for x, y in zip(a.supernet.parameters(), b.supernet.parameters()))
    other = SearchPlan.resolve(
        synthetic_root, tmp_path / "run2", SearchSettings.from_dict({**PLAN_SETTINGS.to_dict(), "seed": 2})
    )
    c = build_objective(other, device="cpu", checkpoint=False)
    assert any(not torch.equal(x, y) for x, y in zip(a.supernet.parameters(), c.supernet.parameters()))
