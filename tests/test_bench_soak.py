import pytest

from ronas_optuna.bench.soak import BenchmarkSoakReport, SoakReport, benchmark_soak, kill_soak


@pytest.mark.slow
def test_a_search_killed_with_sigkill_loses_nothing(tmp_path):
    # the journal storage's clean-up is in test_runner; benchmarks/kill_soak.py --storage journal soaks it
    report = kill_soak(tmp_path, kills=2, seed=1, storage="sqlite", delay=(9.0, 16.0))
    assert report.kills == 2 and report.complete >= 5
    assert report.ok, str(report)


@pytest.mark.slow
def test_the_soak_with_a_truncated_checkpoint_a_torn_journal_line_and_an_export_loses_nothing(tmp_path):
    report = kill_soak(tmp_path, kills=2, seed=2, storage="journal", delay=(10.0, 16.0), faults=True)
    assert report.generations_used >= 1 and report.torn_lines_cut >= 1 and report.exports == 1
    assert report.ok, str(report)


@pytest.mark.slow
def test_the_soak_of_a_data_parallel_search_with_a_rank_killed_loses_nothing_and_ends_in_one_line(tmp_path):
    # mid-search: a kill in a slow start-up failed once in CI, unexplained (see the closing note)
    report = kill_soak(
        tmp_path, kills=1, seed=3, storage="sqlite", delay=(2.0, 6.0), ranks=2, mid_search=True
    )
    assert report.kills == 1 and report.ranks == 2 and report.complete >= 3
    assert report.ok, str(report)


def test_the_report_fails_on_any_loss():
    assert SoakReport(max_gap=1).ok
    for bad in (
        SoakReport(complete_lost=1),
        SoakReport(running_left=1),
        SoakReport(bad_checkpoints=1),
        SoakReport(max_gap=2),
        SoakReport(temp_files=1),
        SoakReport(exports_failed=1),
        SoakReport(ranks=2, noisy_exits=1),
        SoakReport(ranks=2, max_exit_s=61.0),
        SoakReport(faults=True, generations_used=0, exports=1),
        SoakReport(faults=True, generations_used=1, exports=1, max_gap=3),
    ):
        assert not bad.ok and str(bad).endswith("FAIL")
    # a broken newest generation puts the previous one a trial further behind
    assert SoakReport(faults=True, generations_used=1, exports=1, max_gap=2).ok


@pytest.mark.slow
def test_the_soak_of_a_killed_benchmark_loses_at_most_the_trial_each_kill_hit(tmp_path):
    # a SIGKILL mid-search, the same command again: the kept trials go on, the interrupted one is
    # run again, and the result keeps every search trial and the fine-tuning
    report = benchmark_soak(tmp_path, kills=1, seed=4, trials=30, delay=(0.5, 3.0))
    assert report.kills == 1 and report.hit["start-up"] == 0  # mid-search: a trial or a checkpoint write
    assert report.ok, str(report)


def test_the_benchmark_soak_report_fails_on_any_loss():
    good = dict(trials_planned=5, kills=2, interrupted=2, max_gap=1, searched=5, result_kept=True)
    assert BenchmarkSoakReport(**good).ok
    for bad in (
        dict(complete_lost=1),
        dict(running_left=1),
        dict(interrupted=3),
        dict(bad_checkpoints=1),
        dict(max_gap=2),
        dict(searched=4),
        dict(result_kept=False),
        dict(checkpoint_left=True),
    ):
        report = BenchmarkSoakReport(**{**good, **bad})
        assert not report.ok and str(report).endswith("FAIL"), bad
