"""bench.compare: ``ronas benchmark`` end to end."""

import csv

import optuna
import pytest
from click.testing import CliRunner

from ronas_optuna import SearchSettings
from ronas_optuna.bench.config import BenchmarkConfig
from ronas_optuna.cli import main


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


def test_benchmark_config_reuses_the_search_settings():
    cfg = BenchmarkConfig(data="x")
    assert cfg.settings == SearchSettings() and cfg.samplers == ["ronas", "tpe", "random", "gp"]


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


def test_a_row_another_process_is_computing_is_left_for_last_and_then_waited_for(
    tmp_path, synthetic_root, live_pid
):
    """The same command in two processes divides the work: seed 0's search is another live
    process's, so this one runs seed 1 first, then waits for seed 0's row instead of running it."""
    import socket
    import threading
    import time

    from ronas_optuna.bench.compare import run_benchmark
    from ronas_optuna.bench.fold import CLAIM

    settings = SearchSettings.from_options(
        spacing=2.0, depth=2, base_width=4, max_width=8, steps_per_trial=1, warmup_steps=1, finetune_steps=0
    )
    storage = f"sqlite:///{tmp_path / 'f.db'}"
    cfg = BenchmarkConfig(
        data=str(synthetic_root), samplers=["random"], trials=1, storage=storage, folds=1, seeds=2,
        settings=settings, scratch_steps=0, hpo_trials=0, device="cpu",
    )  # fmt: skip
    other = optuna.create_study(study_name="bench-random-seed0", storage=storage, direction="maximize")
    other.set_user_attr(CLAIM, {"host": socket.gethostname(), "pid": live_pid, "beat": time.time()})
    said: list[str] = []

    def other_process_finishes() -> None:  # once this process has done seed 1
        while not any("bench-random-seed1" in m for m in said):
            time.sleep(0.05)
        mine = optuna.load_study(study_name="bench-random-seed1", storage=storage).user_attrs
        other.set_user_attr("benchmark:key", mine["benchmark:key"])
        other.set_user_attr("benchmark:result", {**mine["benchmark:result"], "seed": 0, "test_dice": 0.5})

    threading.Thread(target=other_process_finishes, daemon=True).start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("ronas_optuna.bench.search_run.POLL_S", 0.05)
        result = run_benchmark(cfg, echo=said.append)
    assert [(r["seed"], r["test_dice"] == 0.5) for r in result.rows] == [(1, False), (0, True)]
    assert said[1] == f"  later: bench-random-seed0: {socket.gethostname()}:{live_pid} is running it"
    assert not other.trials  # nothing of seed 0 ran here


@pytest.mark.timeout(120)  # waiting on the first configuration's row before the second ran: a hang
def test_several_configurations_wait_for_another_process_only_after_all_have_run(
    tmp_path, synthetic_root, live_pid
):
    """Two configurations (two budgets, say) started in two processes: a row the other process is
    computing in the first configuration is waited for only after the second one has run, so
    neither process sits idle while work is left."""
    import socket
    import threading
    import time

    from ronas_optuna.bench.compare import run_benchmarks
    from ronas_optuna.bench.fold import CLAIM

    settings = SearchSettings.from_options(
        spacing=2.0, depth=2, base_width=4, max_width=8, steps_per_trial=1, warmup_steps=1, finetune_steps=0
    )
    common = dict(
        data=str(synthetic_root), samplers=["random"], trials=1, folds=1, seeds=1, settings=settings
    )
    common.update(scratch_steps=0, hpo_trials=0, device="cpu")
    first, second = (BenchmarkConfig(storage=f"sqlite:///{tmp_path / n}.db", **common) for n in ("a", "b"))
    other = optuna.create_study(study_name="bench-random-seed0", storage=first.storage, direction="maximize")
    other.set_user_attr(CLAIM, {"host": socket.gethostname(), "pid": live_pid, "beat": time.time()})
    said: list[tuple[str, str]] = []

    def other_process_finishes() -> None:  # once this process has run the second configuration
        while not any(tag == "b" and "best val" in m for tag, m in said):
            time.sleep(0.05)
        mine = optuna.load_study(study_name="bench-random-seed0", storage=second.storage).user_attrs
        other.set_user_attr("benchmark:key", mine["benchmark:key"])
        other.set_user_attr("benchmark:result", {**mine["benchmark:result"], "test_dice": 0.5})

    threading.Thread(target=other_process_finishes, daemon=True).start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("ronas_optuna.bench.search_run.POLL_S", 0.05)
        results = run_benchmarks(
            [(cfg, lambda m, t=t: said.append((t, m))) for cfg, t in ((first, "a"), (second, "b"))]
        )
    assert [[r["test_dice"] == 0.5 for r in res.rows] for res in results] == [[True], [False]]
    order = [
        (t, m.split(":")[0].strip()) for t, m in said if "later" in m or "seed 0" in m or "best val" in m
    ]
    assert order == [
        ("a", "later"),
        ("b", "bench-random-seed0"),
        ("a", "fold 0, seed 0"),
        ("a", "bench-random-seed0"),
    ]
    assert not other.trials and all(r.table_path.exists() for r in results)
