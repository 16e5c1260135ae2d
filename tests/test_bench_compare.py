import csv
import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner

from ronas_optuna import SearchSettings
from ronas_optuna.bench.compare import BenchmarkConfig, fold_splits
from ronas_optuna.bench.handmade import nnunet_strides
from ronas_optuna.bench.stats import interval, paired
from ronas_optuna.cli import main
from ronas_optuna.data import DataError

IDS = [f"case_{i:03d}" for i in range(6)]


def test_folds_rotate_the_test_cases_and_never_leak_them():
    splits = fold_splits(BenchmarkConfig(data="x", folds=3), IDS)
    assert len(splits) == 3
    tests = [t for _, _, t in splits]
    assert sorted(c for t in tests for c in t) == IDS  # every case is held out exactly once
    for train, val, test in splits:
        assert set(train).isdisjoint(test) and set(val).isdisjoint(test) and set(train).isdisjoint(val)
        assert sorted(train + val + test) == IDS and train and val
    loo = fold_splits(BenchmarkConfig(data="x", folds=3), IDS[:3])
    assert [len(t) for _, _, t in loo] == [1, 1, 1]
    with pytest.raises(DataError, match="--folds 7"):
        fold_splits(BenchmarkConfig(data="x", folds=7), IDS)


def test_one_fold_keeps_the_configured_split():
    ((train, val, test),) = fold_splits(
        BenchmarkConfig(data="x", val_ids=["case_001"], test_ids=["case_002"]), IDS
    )
    assert val == ["case_001"] and test == ["case_002"] and "case_001" not in train


def test_one_fold_takes_explicit_training_cases_and_refuses_overlaps():
    cfg = BenchmarkConfig(data="x", train_ids=IDS[:2], val_ids=[IDS[2]], test_ids=[IDS[3]])
    ((train, val, test),) = fold_splits(cfg, IDS)
    assert train == IDS[:2] and val == [IDS[2]] and test == [IDS[3]]  # the other cases are unused
    with pytest.raises(DataError, match="overlap"):
        fold_splits(BenchmarkConfig(data="x", train_ids=IDS[:3], val_ids=[IDS[2]], test_ids=[IDS[3]]), IDS)
    with pytest.raises(DataError, match="no case named nope"):
        fold_splits(BenchmarkConfig(data="x", train_ids=["nope"], val_ids=[IDS[2]], test_ids=[IDS[3]]), IDS)


def test_a_reference_learning_curve_is_scored_outside_its_budget(synthetic_root, tmp_path):
    from ronas_optuna.bench.handmade import RECIPES, train_for_seconds
    from ronas_optuna.data import MSDDataset
    from ronas_optuna.network import RONASNet
    from ronas_optuna.space import SearchSpace

    cases = MSDDataset(synthetic_root, spacing=2.0, cache_dir=tmp_path / "c").load_all()
    space = SearchSpace.default(depth=2, base_width=4, max_width=8)
    net = RONASNet(space, space.sample(np.random.default_rng(0)), 1, 3)
    ticks = iter(range(10_000))  # a clock of one second per reading: steps are counted, not timed
    seen = []

    def monitor(n):
        seen.append(n.training)
        for _ in range(50):  # a slow monitor: 50 clock readings, none of them charged to the budget
            next(ticks)
        return 0.5

    _, steps, curve = train_for_seconds(
        net,
        cases,
        (8, 8, 8),
        16,
        batch_size=1,
        recipe=RECIPES["adam"],
        chunk=1,
        clock=lambda: float(next(ticks)),
        monitor=monitor,
        points=4,
    )
    assert len(curve) == 4 and [v for _, v in curve] == [0.5] * 4  # each quarter, the last at the end
    assert [s for s, _ in curve] == sorted(s for s, _ in curve) and curve[-1][0] == steps
    assert not any(seen) and steps >= 10  # scored in eval mode; the monitor took no training time


def test_a_reference_training_stopped_midway_goes_on_from_its_checkpoint(
    synthetic_root, tmp_path, monkeypatch
):
    from ronas_optuna.bench.handmade import RECIPES, train_for_seconds
    from ronas_optuna.data import MSDDataset
    from ronas_optuna.network import RONASNet
    from ronas_optuna.space import SearchSpace
    from ronas_optuna.trainer import PathTrainer

    cases = MSDDataset(synthetic_root, spacing=2.0, cache_dir=tmp_path / "c").load_all()
    space = SearchSpace.default(depth=2, base_width=4, max_width=8)
    arch = space.sample(np.random.default_rng(0))
    real = PathTrainer.train
    clock = {"s": 0.0, "stop_at": None, "calls": 0}  # one second per step: runs are comparable

    def train(self, net, params, patch, steps, **kw):
        if clock["stop_at"] is not None and clock["calls"] == clock["stop_at"]:
            raise KeyboardInterrupt
        clock["s"] += steps
        clock["calls"] += 1
        return real(self, net, params, patch, steps, **kw)

    monkeypatch.setattr(PathTrainer, "train", train)

    def run(tag="t", stop_at=None):
        clock.update(calls=0, stop_at=stop_at)
        torch.manual_seed(0)
        net = RONASNet(space, arch, 1, 3)
        kw = dict(batch_size=1, recipe=RECIPES["nnunet-sgd"], chunk=2, clock=lambda: clock["s"])
        out = train_for_seconds(
            net, cases, (8, 8, 8), 20, checkpoint=tmp_path / "ref.pt", tag=tag, save_every=6, **kw
        )
        return out, clock["calls"]

    (whole, steps, _), calls = run()
    assert calls == 10 and steps == 20 and not (tmp_path / "ref.pt").exists()  # removed when done
    with pytest.raises(KeyboardInterrupt):
        run(stop_at=5)  # killed after 10 s: checkpoints at 6 s (and none since)
    (resumed, steps, _), calls = run()
    assert steps == 20 and calls == 7  # steps 6 to 20
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    with pytest.raises(KeyboardInterrupt):
        run(stop_at=5)
    (_, steps, _), calls = run(tag="another")  # another training's checkpoint is not resumed
    assert steps == 20 and calls == 10


def test_intervals_and_paired_differences():
    iv = interval([0.5, 0.6, 0.7])
    assert iv.mean == pytest.approx(0.6) and iv.low < 0.6 < iv.high and iv.n == 3
    assert iv.high - iv.mean == pytest.approx(4.302653 * 0.1 / 3**0.5, rel=1e-5)  # t(0.975, 2)
    assert interval([0.4]).n == 1 and interval([float("nan")]).n == 0
    a = {(0, 0): 0.8, (0, 1): 0.7, (1, 0): 0.9}
    b = {(0, 0): 0.6, (0, 1): 0.5, (1, 0): 0.7, (2, 0): 0.1}
    d = paired(a, b)  # the unit is the fold: two folds, each difference 0.2
    assert d.n == 2 and d.mean == pytest.approx(0.2) and d.excludes_zero()
    assert not paired(a, {(0, 0): 0.9, (0, 1): 0.6, (1, 0): 0.8}).excludes_zero()


@pytest.mark.parametrize(
    "patch,expected",
    [
        ((32, 32, 32), [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]),
        ((32, 32, 8), [[1, 1, 1], [2, 2, 2], [2, 2, 1], [2, 2, 1]]),
    ],
)
def test_nnunet_strides_pool_while_the_map_stays_at_least_4(patch, expected):
    assert nnunet_strides(patch) == expected


def test_tiny_fold_run_with_the_handmade_reference(tmp_path, synthetic_root):
    pytest.importorskip("monai")
    storage = f"sqlite:///{tmp_path / 'f.db'}"
    args = [
        "benchmark",
        str(synthetic_root),
        "--samplers",
        "ronas,random",
        "--seeds",
        "1",
        "--folds",
        "2",
        "--trials",
        "2",
        "--timeout",
        "60",
        "--storage",
        storage,
        "--spacing",
        "2.0",
        "--depth",
        "2",
        "--base-width",
        "4",
        "--max-width",
        "8",
        "--steps-per-trial",
        "1",
        "--finetune-steps",
        "0",
        "--scratch-steps",
        "1",
        "--hpo-trials",
        "0",
        "--handmade",
        "--device",
        "cpu",
    ]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    with open(tmp_path / "f_benchmark" / "benchmark.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["sampler"], r["fold"]) for r in rows] == [
        ("ronas", "0"),
        ("random", "0"),
        ("dynunet", "0"),
        ("ronas", "1"),
        ("random", "1"),
        ("dynunet", "1"),
    ]
    assert all(0 <= float(r["test_dice"]) <= 1 for r in rows)
    md = (tmp_path / "f_benchmark" / "benchmark.md").read_text()
    assert "| ronas − dynunet | 2 |" in md and "| ronas − same arch alone | 2 |" in md
    assert {r["recipe"] for r in rows if r["sampler"] == "dynunet"} <= {"nnunet-sgd", "adam"}
    assert sorted(optuna.get_all_study_names(storage)) == [
        "bench-dynunet-fold0-seed0",
        "bench-dynunet-fold1-seed0",
        "bench-dynunet-recipe-fold0-seed0",
        "bench-dynunet-recipe-fold1-seed0",
        "bench-random-fold0-seed0",
        "bench-random-fold1-seed0",
        "bench-ronas-fold0-seed0",
        "bench-ronas-fold1-seed0",
    ]
    # Run again: every result is kept (same rows, nothing trained), and a finished study is
    # never replaced by one of other settings.
    before = {
        n: optuna.load_study(study_name=n, storage=storage).user_attrs
        for n in optuna.get_all_study_names(storage)
    }
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert again.output.count("(kept)") == 4
    with open(tmp_path / "f_benchmark" / "benchmark.csv") as f:
        assert list(csv.DictReader(f)) == rows
    after = {
        n: optuna.load_study(study_name=n, storage=storage).user_attrs
        for n in optuna.get_all_study_names(storage)
    }
    assert after == before
    other = [*args[: args.index("--trials")], "--trials", "3", *args[args.index("--trials") + 2 :]]
    res = CliRunner().invoke(main, other)
    assert res.exit_code == 1
    assert "study 'bench-ronas-fold0-seed0' holds a benchmark result with other settings" in res.output
    assert "Traceback" not in res.output
    assert (
        optuna.load_study(study_name="bench-ronas-fold0-seed0", storage=storage).user_attrs
        == before["bench-ronas-fold0-seed0"]
    )


def test_an_interrupted_study_is_run_again(tmp_path, synthetic_root):
    from ronas_optuna.bench.compare import _setup, finished_study, fold_splits
    from ronas_optuna.data.msd import MSDDataset

    storage = f"sqlite:///{tmp_path / 'i.db'}"
    cfg = BenchmarkConfig(data=str(synthetic_root), storage=storage, folds=2)
    ds = MSDDataset(cfg.data, spacing=2.0)
    setup = _setup(cfg, ds, 0, fold_splits(cfg, ds.case_ids)[0])
    name = setup.study_name("ronas", 0)
    optuna.create_study(study_name=name, storage=storage).set_user_attr("benchmark", {})
    assert finished_study(setup, storage, name) is None  # no result: deleted, to be run again
    assert name not in optuna.get_all_study_names(storage)
    st = optuna.create_study(study_name=name, storage=storage)
    st.set_user_attr("benchmark:key", setup.key())
    st.set_user_attr("benchmark:result", {"test_dice": 0.5})
    kept = finished_study(setup, storage, name)
    assert kept is not None and kept.user_attrs["benchmark:result"] == {"test_dice": 0.5}
    # a result kept by an earlier version, before a setting existed, is still these settings
    old = json.loads(setup.key())
    del old["settings"]["warmup_sampling"]
    st.set_user_attr("benchmark:key", json.dumps(old))
    assert finished_study(setup, storage, name) is not None
    old["settings"]["warmup_steps"] += 1  # but not one of other settings
    st.set_user_attr("benchmark:key", json.dumps(old))
    with pytest.raises(ValueError, match="holds a benchmark result with other settings"):
        finished_study(setup, storage, name)


def test_another_dynunet_recipe_keeps_the_searches_but_not_dynunets_rows(tmp_path, synthetic_root):
    from ronas_optuna.bench.compare import _setup, finished_study, fold_splits
    from ronas_optuna.data.msd import MSDDataset

    storage = f"sqlite:///{tmp_path / 'r.db'}"
    cfg = BenchmarkConfig(data=str(synthetic_root), storage=storage, folds=2, handmade_recipe="nnunet-sgd")
    ds = MSDDataset(cfg.data, spacing=2.0)
    split = fold_splits(cfg, ds.case_ids)[0]
    for method in ("ronas", "dynunet", "dynunet-recipe"):
        st = optuna.create_study(study_name=f"bench-{method}-fold0-seed0", storage=storage)
        st.set_user_attr("benchmark:key", _setup(cfg, ds, 0, split).key())
        st.set_user_attr("benchmark:result", {"test_dice": 0.5})
    auto = _setup(dataclasses.replace(cfg, handmade_recipe="auto"), ds, 0, split)
    assert finished_study(auto, storage, "bench-ronas-fold0-seed0", method="ronas") is not None
    for method in ("dynunet", "dynunet-recipe"):
        with pytest.raises(ValueError, match="holds a benchmark result with other settings"):
            finished_study(auto, storage, f"bench-{method}-fold0-seed0", method=method)


def test_a_kept_result_records_the_policy_it_ran_with(tmp_path, synthetic_root):
    from ronas_optuna.bench.compare import _setup, finished_study, fold_splits
    from ronas_optuna.controller import SEARCH_CONTROLLER
    from ronas_optuna.data.msd import MSDDataset

    storage = f"sqlite:///{tmp_path / 'p.db'}"
    cfg = BenchmarkConfig(data=str(synthetic_root), storage=storage, folds=2)
    ds = MSDDataset(cfg.data, spacing=2.0)
    setup = _setup(cfg, ds, 0, fold_splits(cfg, ds.case_ids)[0])
    key = json.loads(setup.key())
    assert key["policy"]["temperature"] == SEARCH_CONTROLLER.temperature  # "default", resolved
    st = optuna.create_study(study_name="bench-ronas-fold0-seed0", storage=storage)
    st.set_user_attr("benchmark:result", {"test_dice": 0.5})
    for policy, kept in ((key["policy"], True), (None, True), ({**key["policy"], "temperature": 3.0}, False)):
        stored = (
            {**key, "policy": policy}
            if policy is not None
            else {k: v for k, v in key.items() if k != "policy"}
        )
        st.set_user_attr("benchmark:key", json.dumps(stored))
        if kept:  # the same policy, or a key from before the policy was recorded
            assert finished_study(setup, storage, st.study_name) is not None
        else:  # a default changed since: not this benchmark's result
            with pytest.raises(ValueError, match="holds a benchmark result with other settings"):
                finished_study(setup, storage, st.study_name)


def test_benchmark_config_reuses_the_search_settings():
    cfg = BenchmarkConfig(data="x")
    assert cfg.settings == SearchSettings() and cfg.samplers == ["ronas", "tpe", "random", "gp"]


def test_the_dynunet_recipe_is_chosen_on_validation_cases_only(synthetic_root, tmp_path, monkeypatch):
    from ronas_optuna.bench import compare
    from ronas_optuna.data import MSDDataset
    from ronas_optuna.evaluator import DiceResult
    from ronas_optuna.storage import open_storage

    cfg = BenchmarkConfig(data=str(synthetic_root), folds=2, handmade=True, device="cpu")
    ds = MSDDataset(synthetic_root, spacing=2.0, cache_dir=tmp_path / "cache")
    setup = compare._setup(cfg, ds, 0, compare.fold_splits(cfg, ds.case_ids)[0])
    trained_on, scored_on = [], []

    def fake_train(setup, seed, seconds, recipe, case_ids, monitor=None, name=None):
        trained_on.append((recipe, list(case_ids)))
        return recipe, 5, 0.1, []  # the "network" is its recipe's name

    class FakeEvaluator:
        def __init__(self, cases, num_classes, device):
            scored_on.extend(c.case_id for c in cases)

        def evaluate(self, net, patch, overlap):
            return DiceResult.from_per_case([[{"nnunet-sgd": 0.7, "adam": 0.6}[net]]])

    monkeypatch.setattr(compare, "_train_dynunet", fake_train)
    monkeypatch.setattr(compare, "Evaluator", FakeEvaluator)
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}")
    recipe, scores = compare._handmade_recipe(setup, storage, 1.0)
    assert recipe == "nnunet-sgd" and scores == {"nnunet-sgd": 0.7, "adam": 0.6}
    assert {r for r, _ in trained_on} == {"nnunet-sgd", "adam"}
    assert all(ids == setup.train_ids for _, ids in trained_on)
    assert sorted(scored_on) == sorted(setup.val_ids) and not set(scored_on) & set(setup.test_ids)
    assert compare._handmade_recipe(setup, storage, 1.0) == (recipe, scores) and len(trained_on) == 2  # kept


@pytest.mark.parametrize(
    "field, counts, study, message",
    [
        (
            "only_folds",
            dict(folds=2, seeds=1),
            "bench-random-fold1-seed0",
            r"only_folds \[2\]: folds are 0 to 1",
        ),
        ("only_seeds", dict(folds=1, seeds=2), "bench-random-seed1", r"only_seeds \[2\]: seeds are 0 to 1"),
    ],
)
def test_only_folds_or_seeds_run_those_alone_and_reject_one_that_does_not_exist(
    tmp_path, synthetic_root, field, counts, study, message
):
    """One process per fold or per seed on one storage: each runs its own part only."""
    from ronas_optuna.bench.compare import run_benchmark
    from ronas_optuna.errors import SettingsError

    settings = SearchSettings.from_options(
        spacing=2.0, depth=2, base_width=4, max_width=8, steps_per_trial=1, warmup_steps=1, finetune_steps=0
    )
    storage = f"sqlite:///{tmp_path / 'f.db'}"
    cfg = dict(data=str(synthetic_root), samplers=["random"], trials=1, storage=storage, **counts)
    cfg.update(settings=settings, scratch_steps=0, hpo_trials=0, device="cpu")
    result = run_benchmark(BenchmarkConfig(**cfg, **{field: [1]}), echo=lambda m: None)
    assert [(r["sampler"], r["fold"], r["seed"]) for r in result.rows] == [
        ("random", counts["folds"] - 1, counts["seeds"] - 1)
    ]
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == [study]
    with pytest.raises(SettingsError, match=message):
        BenchmarkConfig(**cfg, **{field: [2]})  # at construction, before any data is read


def test_a_reference_kept_by_another_process_meanwhile_is_the_one_every_process_uses(tmp_path):
    """Two seeds run as two processes on one storage both need the fold's DynUNet recipe: the one
    that finishes second takes the first one's result instead of failing on the study's name."""
    from ronas_optuna.bench import compare
    from ronas_optuna.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'k.db'}")
    setup = SimpleNamespace(
        cfg=BenchmarkConfig(data="d", samplers=["ronas"], storage="sqlite://", folds=1),
        fold=0,
        study_name=lambda method, seed: f"bench-{method}-seed{seed}",
        key=lambda: key,
    )
    key = json.dumps({"settings": SearchSettings().to_dict()}, sort_keys=True)

    def other_process_first() -> dict:
        study = optuna.create_study(study_name="bench-ref-seed0", storage=storage)
        study.set_user_attr("benchmark:key", key)
        study.set_user_attr("benchmark:result", {"recipe": "adam"})
        return {"recipe": "nnunet-sgd"}

    assert compare._kept_row(setup, storage, "ref", 0, other_process_first) == {"recipe": "adam"}
    assert compare._kept_row(setup, storage, "ref", 0, lambda: {"recipe": "x"}) == {"recipe": "adam"}


def test_a_run_stopped_in_its_twin_gives_the_twin_the_same_budget_again(
    tmp_path, synthetic_root, monkeypatch
):
    from ronas_optuna.bench import compare
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
    setup = compare._setup(cfg, ds, 0, fold_splits(cfg, ds.case_ids)[0])
    setup.checkpoints = tmp_path
    asked = []

    def alone(objective, arch, seconds, seed, *, resume, **kw):
        asked.append((seconds, resume))
        if len(asked) == 1:
            raise KeyboardInterrupt  # the process is stopped while its twin trains
        return RONASNet(setup.space, arch, ds.in_channels, ds.num_classes).eval(), 3, []

    monkeypatch.setattr(compare, "alone_for_seconds", alone)
    monkeypatch.setattr(compare._Setup, "test_dice", lambda *a: (0.5, {"case": 0.5}))  # not what is tested
    with pytest.raises(KeyboardInterrupt):
        compare._run_study(setup, storage, "ronas", 0)
    trials = len(optuna.load_study(study_name="bench-ronas-fold0-seed0", storage=storage).trials)
    row, _, study, ran = compare._run_study(setup, storage, "ronas", 0)
    assert ran and len(study.trials) == trials  # the search and its fine-tuning were not run again
    assert asked[0] == asked[1]  # the budget, and so the twin's checkpoint tag, as the first time
    assert row["budget_s"] == round(asked[0][0], 1) and row["scratch_steps"] == 3
