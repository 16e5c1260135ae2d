"""bench.search_run: one benchmark search, resumed where it stopped."""

import optuna
import pytest

from ronas_optuna import SearchSettings
from ronas_optuna.bench import search_run
from ronas_optuna.bench.config import BenchmarkConfig
from ronas_optuna.bench.fold import DERIVED, FoldSetup, fold_splits, make_setup

NAME = "bench-ronas-fold0-seed0"


@pytest.fixture
def stopped(tmp_path, synthetic_root, monkeypatch):
    """A tiny benchmark search (2 trials, 2 fine-tuning steps) stopped while its twin trains; the
    twin's training (``alone_for_seconds``) records what it was asked and trains nothing."""
    from ronas_optuna.data.msd import MSDDataset
    from ronas_optuna.network import RONASNet

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
    assert row["budget_s"] == asked[0][1] and row["scratch_steps"] == 3


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
