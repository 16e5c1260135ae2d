"""bench.search_run: one benchmark search, resumed where it stopped."""

import socket
import threading
import time

import optuna
import pytest
import torch
from optuna.trial import TrialState

from ronas_optuna import SearchSettings
from ronas_optuna.bench import search_run
from ronas_optuna.bench.config import BenchmarkConfig
from ronas_optuna.bench.fold import CLAIM, DERIVED, FoldSetup, fold_splits, keep_result, make_setup

from conftest import TEST_S_PER_UNIT

NAME = "bench-ronas-fold0-seed0"


def _tiny_setup(tmp_path, synthetic_root):
    """A benchmark fold of 2 trials and 2 fine-tuning steps, its storage and dataset."""
    from ronas_optuna.data.msd import MSDDataset

    settings = SearchSettings.from_options(
        spacing=2.0,
        depth=2,
        base_width=4,
        max_width=8,
        max_patch_voxels=4096,
        steps_per_trial=1,
        warmup_steps=1,
        finetune_steps=2,
    )
    storage = f"sqlite:///{tmp_path / 't.db'}"
    cfg = BenchmarkConfig(data=str(synthetic_root), storage=storage, folds=2, trials=2, settings=settings)
    ds = MSDDataset(cfg.data, spacing=2.0, cache_dir=tmp_path / "c")
    setup = make_setup(cfg, ds, 0, fold_splits(cfg, ds.case_ids)[0])
    setup.checkpoints = tmp_path / "checkpoints"
    setup.checkpoints.mkdir()
    return setup, storage, ds


@pytest.fixture
def stopped(tmp_path, synthetic_root, monkeypatch):
    """A tiny benchmark search stopped while its twin trains; the twin's training
    (``alone_for_seconds``) records what it was asked and trains nothing."""
    from ronas_optuna.network import RONASNet

    setup, storage, ds = _tiny_setup(tmp_path, synthetic_root)
    asked = []

    def alone(objective, arch, seconds, seed, *, resume, **kw):
        asked.append((arch.code, seconds, resume["tag"]))
        if len(asked) == 1:
            raise KeyboardInterrupt  # the process is stopped while its twin trains
        return RONASNet(setup.space, arch, ds.in_channels, ds.num_classes).eval(), 3, []

    monkeypatch.setattr(search_run, "alone_for_seconds", alone)
    monkeypatch.setattr(FoldSetup, "test_dice", lambda *a: (0.5, {"case": 0.5}))  # not what is tested
    with pytest.raises(KeyboardInterrupt):
        search_run.run_search(setup, storage, "ronas", 0)
    return setup, storage, asked


def test_a_run_stopped_in_its_twin_gives_the_twin_the_same_budget_again(stopped, monkeypatch):
    setup, storage, asked = stopped
    trials = len(optuna.load_study(study_name=NAME, storage=storage).trials)
    assert any(setup.checkpoints.iterdir())  # the search's supernet checkpoint is still there
    built = []
    objective = FoldSetup.objective
    monkeypatch.setattr(
        FoldSetup,
        "objective",
        lambda self, seed, ckpt=None: built.append(ckpt) or objective(self, seed, ckpt),
    )
    row, _, study, ran = search_run.run_search(setup, storage, "ronas", 0)
    assert ran and len(study.trials) == trials  # the search and its fine-tuning were not run again
    assert built == [None]  # the twin's objective does not load the supernet it does not use
    assert asked[0] == asked[1]  # the budget, and so the twin's checkpoint tag, as the first time
    assert row["budget_units"] == asked[0][1] and row["scratch_steps"] == 3
    assert row["budget_units"] == pytest.approx(row["budget_s"] / TEST_S_PER_UNIT, abs=1e-2)
    assert row["machine"] == {
        "cpu": "test machine",
        "threads": torch.get_num_threads(),
        "s_per_unit": 0.5,
        "calibrated": True,
    }


def test_a_search_restored_from_its_derived_record_trains_only_its_twin(stopped, tmp_path):
    setup, storage, asked = stopped
    attrs = optuna.load_study(study_name=NAME, storage=storage).user_attrs
    assert set(attrs[DERIVED]) >= {
        "arch",
        "patch_size",
        "budget_s",
        "test_dice_cases",
        "before_finetune_test_dice",
    }
    # another machine: a fresh storage holding only the study's attributes (no trials, no checkpoint)
    for path in setup.checkpoints.iterdir():
        path.unlink()
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    study = optuna.create_study(study_name=NAME, storage=fresh, direction="maximize")
    for key in ("benchmark", "benchmark:key", DERIVED):
        study.set_user_attr(key, attrs[key])
    row, curve, study, ran = search_run.run_search(setup, fresh, "ronas", 0)
    assert ran and study.trials == []  # nothing searched again
    assert asked[1] == asked[0]  # the same architecture, budget and checkpoint tag
    assert row["arch"] == attrs[DERIVED]["arch"] and row["scratch_steps"] == 3
    assert row["test_dice_cases"] == attrs[DERIVED]["test_dice_cases"]
    assert study.user_attrs["benchmark:result"] == row and curve == {"best": [], "time": []}


def _claimed(setup, storage, pid):
    study = optuna.create_study(study_name=NAME, storage=storage, direction="maximize")
    study.set_user_attr(CLAIM, {"host": socket.gethostname(), "pid": pid, "beat": time.time()})
    study.set_user_attr("benchmark:key", setup.key())
    return study


def test_a_search_another_live_process_runs_is_waited_for_and_its_running_trial_left_alone(
    tmp_path, synthetic_root, live_pid, capsys
):
    """Two processes reaching one search (the first moved on to a fold the second is running):
    the second waits for its result; it neither fails the first one's running trial nor trains."""
    setup, storage, _ = _tiny_setup(tmp_path, synthetic_root)
    study = _claimed(setup, storage, live_pid)
    running = study.ask()  # the other process's trial, in progress
    seen = []

    def finishes() -> None:
        time.sleep(0.5)  # while this process waits
        seen.append(study.trials[running.number].state)
        study.tell(running, 0.6)
        keep_result(study, setup, {"test_dice": 0.7})

    threading.Thread(target=finishes).start()
    row, _, _, ran = search_run.run_search(setup, storage, "ronas", 0, poll_s=0.1)
    assert row == {"test_dice": 0.7} and not ran
    assert seen == [TrialState.RUNNING]  # not failed as interrupted
    out = capsys.readouterr().out
    assert f"waiting for {NAME}: {socket.gethostname()}:{live_pid} is running it" in out


def test_an_unfinished_search_claimed_by_two_processes_at_once_is_resumed_by_the_last_only(
    tmp_path, synthetic_root, live_pid, monkeypatch
):
    """Both found it unclaimed; the claim read back after the settling wait decides. The process
    whose claim was overwritten returns without touching the trials."""
    setup, storage, _ = _tiny_setup(tmp_path, synthetic_root)
    study = _claimed(setup, storage, -1)  # a gone process's
    running = study.ask()
    overwrite = {"host": socket.gethostname(), "pid": live_pid, "beat": time.time()}
    monkeypatch.setattr(search_run.time, "sleep", lambda s: study.set_user_attr(CLAIM, overwrite))
    assert search_run._open_study(setup, storage, NAME, study, None, None) is None
    assert study.trials[running.number].state == TrialState.RUNNING
    monkeypatch.setattr(search_run.time, "sleep", lambda s: None)  # no one else this time
    resumed = search_run._open_study(setup, storage, NAME, study, optuna.samplers.RandomSampler(), None)
    assert resumed is not None and resumed.user_attrs[CLAIM]["pid"] != live_pid
    assert resumed.trials[running.number].state == TrialState.FAIL  # the gone process's interrupted trial
