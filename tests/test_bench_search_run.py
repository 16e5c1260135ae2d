"""bench.search_run: one benchmark search, resumed where it stopped."""

import optuna
import pytest

from ronas_optuna import SearchSettings
from ronas_optuna.bench import search_run
from ronas_optuna.bench.config import BenchmarkConfig
from ronas_optuna.bench.fold import FoldSetup, fold_splits, make_setup


def test_a_run_stopped_in_its_twin_gives_the_twin_the_same_budget_again(
    tmp_path, synthetic_root, monkeypatch
):
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
    setup.checkpoints = tmp_path
    asked = []

    def alone(objective, arch, seconds, seed, *, resume, **kw):
        asked.append((seconds, resume))
        if len(asked) == 1:
            raise KeyboardInterrupt  # the process is stopped while its twin trains
        return RONASNet(setup.space, arch, ds.in_channels, ds.num_classes).eval(), 3, []

    monkeypatch.setattr(search_run, "alone_for_seconds", alone)
    monkeypatch.setattr(FoldSetup, "test_dice", lambda *a: (0.5, {"case": 0.5}))  # not what is tested
    with pytest.raises(KeyboardInterrupt):
        search_run.run_search(setup, storage, "ronas", 0)
    trials = len(optuna.load_study(study_name="bench-ronas-fold0-seed0", storage=storage).trials)
    row, _, study, ran = search_run.run_search(setup, storage, "ronas", 0)
    assert ran and len(study.trials) == trials  # the search and its fine-tuning were not run again
    assert asked[0] == asked[1]  # the budget, and so the twin's checkpoint tag, as the first time
    assert row["budget_s"] == round(asked[0][0], 1) and row["scratch_steps"] == 3
