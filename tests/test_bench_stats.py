"""The evaluation protocol: intervals whose unit is the test volume (fold), computed by hand."""

from __future__ import annotations

import math

import pytest

from ronas_optuna.bench.stats import (
    Difference,
    clustered,
    crossed_bootstrap,
    fold_means,
    hierarchical_bootstrap,
    interval,
    margin_verdict,
    paired,
    verdict,
)

# 2 folds (test volumes) x 2 seeds: fold means 0.7 and 0.8
TABLE = {(0, 0): 0.8, (0, 1): 0.6, (1, 0): 0.9, (1, 1): 0.7}


def test_the_interval_is_over_fold_means_not_over_runs():
    assert fold_means(TABLE) == pytest.approx({0: 0.7, 1: 0.8})
    iv = clustered(TABLE)
    # mean 0.75; sd of (0.7, 0.8) = 0.0707107; t(0.975, 1) = 12.7062; half = 12.7062 * 0.0707107 / sqrt(2)
    half = 12.706205 * (0.1 / math.sqrt(2)) / math.sqrt(2)
    assert iv.n == 2 and iv.mean == pytest.approx(0.75)
    assert (iv.low, iv.high) == pytest.approx((0.75 - half, 0.75 + half), rel=1e-5)
    runs = interval(list(TABLE.values()))  # the old unit: 4 runs as if independent
    assert runs.n == 4 and runs.high - runs.low < iv.high - iv.low


def test_paired_differences_average_seeds_within_a_fold_first():
    b = {(0, 0): 0.7, (0, 1): 0.6, (1, 0): 0.7, (1, 1): 0.7, (2, 0): 0.5}
    d = paired(TABLE, b)  # differences 0.1, 0.0 | 0.2, 0.0 -> fold means 0.05, 0.1; fold 2 unmatched
    assert d.n == 2 and d.mean == pytest.approx(0.075)
    assert verdict(d) == "no difference shown"
    assert verdict(paired({(0, 0): 0.9, (1, 0): 0.8}, {(0, 0): 0.7, (1, 0): 0.6})) == "better"
    assert verdict(paired({(0, 0): 0.9, (0, 1): 0.8}, {(0, 0): 0.7, (0, 1): 0.6})) == "no difference shown"


def test_the_hierarchical_bootstrap_resamples_folds_then_seeds():
    iv = hierarchical_bootstrap(TABLE, n_boot=4000, seed=1)
    assert iv.n == 2 and iv.mean == pytest.approx(0.75)
    # the extremes: both draws the worse fold's worse seed (0.6) or the better fold's better seed (0.9)
    assert 0.6 <= iv.low < 0.75 < iv.high <= 0.9
    one_fold = hierarchical_bootstrap({(0, 0): 0.8, (0, 1): 0.6})
    assert one_fold.n == 1 and one_fold.low == one_fold.high == pytest.approx(0.7)


def test_seed_table_pairs_by_seed_and_flips_the_verdict_when_lower_is_better():
    from ronas_optuna.bench.stats import seed_table

    rows = [
        {"sampler": s, "seed": k, "budget": 10, "regret": v}
        for s, vals in (("ronas", [0.1, 0.2, 0.3]), ("tpe", [0.5, 0.7, 0.6]))
        for k, v in enumerate(vals)
    ]
    md = seed_table(rows, "regret", [10], lower_is_better=True)
    assert "| 10 | 0.200 [-0.048, 0.448] | 0.600 [0.352, 0.848] |" in md
    line = next(x for x in md.splitlines() if x.startswith("| 10 | tpe |"))
    assert "| 3 | -0.4000 [" in line and line.endswith("| better |")  # lower regret: better
    assert seed_table(rows, "regret", [10]).splitlines()[-1].endswith("| worse |")


def test_seed_difference_pairs_only_the_seeds_both_samplers_have():
    from ronas_optuna.bench.stats import seed_difference

    rows = [
        {"sampler": "ronas", "seed": 0, "budget": 5, "regret": 0.1},
        {"sampler": "ronas", "seed": 1, "budget": 5, "regret": 0.3},
        {"sampler": "ronas", "seed": 2, "budget": 5, "regret": 9.0},  # no partner: left out
        {"sampler": "tpe", "seed": 0, "budget": 5, "regret": 0.4},
        {"sampler": "tpe", "seed": 1, "budget": 5, "regret": 0.4},
        {"sampler": "tpe", "seed": 0, "budget": 7, "regret": 0.0},  # another budget: left out
    ]
    d, v = seed_difference(rows, "regret", 5, "ronas", "tpe", lower_is_better=True)
    # differences -0.3 and -0.1: mean -0.2, sd 0.1414, t(0.975, 1) = 12.706
    assert d.n == 2 and d.mean == pytest.approx(-0.2)
    assert d.high - d.mean == pytest.approx(12.706 * 0.14142 / math.sqrt(2), rel=1e-3)
    assert v == "no difference shown"
    empty, _ = seed_difference(rows, "regret", 7, "ronas", "tpe")
    assert empty.n == 0


@pytest.mark.parametrize(
    "values",
    [
        {("a", 0): 0.0, ("b", 0): 1.0},  # two subjects, one seed
        {("a", 0): 0.0, ("a", 1): 1.0},  # one subject, two seeds
        {("a", 0): 0.0, ("a", 1): 0.0, ("b", 0): 1.0, ("b", 1): 1.0},  # a subject effect only
    ],
)
def test_the_crossed_bootstrap_resamples_subjects_and_seeds_independently(values):
    # By hand: the resampled mean of two values {0, 1} is 0, 0.5 or 1 with probabilities 1/4, 1/2,
    # 1/4, so the 95% percentile interval is [0, 1] and the standard error sqrt(1/8) = 0.3536.
    d = crossed_bootstrap(values, n_boot=20_000)
    assert d.mean == 0.5 and (d.low, d.high) == (0.0, 1.0)
    assert d.se == pytest.approx(math.sqrt(1 / 8), abs=0.005)
    # MDD = (z_0.975 + z_0.8) * se = (1.95996 + 0.84162) * 0.35355 = 0.99051
    assert d.mdd == pytest.approx(2.80158 * d.se, abs=1e-4)
    assert d.subjects * d.seeds == len(values)


def test_the_crossed_bootstrap_keeps_only_subjects_with_every_seed():
    values = {("a", 0): 0.2, ("a", 1): 0.2, ("b", 0): 0.2, ("b", 1): float("nan"), ("c", 0): 0.2}
    d = crossed_bootstrap(values, n_boot=100)
    assert (d.subjects, d.seeds) == (1, 2)  # b's second seed is not finite, c lacks it
    assert d.mean == pytest.approx(0.2) and d.low == pytest.approx(0.2) and d.se == pytest.approx(0.0)
    assert math.isnan(crossed_bootstrap({}).mean)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.001, 0.02, "better"),
        (-0.03, -0.001, "worse"),
        (-0.009, 0.02, "non-inferior"),  # lower bound above -margin, interval includes 0
        (-0.011, 0.02, "no difference shown"),
    ],
)
def test_the_margin_verdict_reads_the_interval_against_zero_and_the_margin(low, high, expected):
    d = Difference((low + high) / 2, low, high, subjects=24, seeds=3, se=0.01)
    assert margin_verdict(d, margin=0.01) == expected


def test_the_tau_difference_is_computed_by_hand_and_paired_over_items():
    from ronas_optuna.bench.stats import tau_difference

    reference = [1.0, 2.0, 3.0, 4.0]
    same = [10.0, 20.0, 30.0, 40.0]  # τ = 1
    one_swap = [20.0, 10.0, 30.0, 40.0]  # 5 concordant pairs, 1 discordant: τ = (5 - 1) / 6
    d = tau_difference(same, one_swap, reference, n_boot=200)
    assert d.mean == pytest.approx(1 - 4 / 6) and d.n == 4
    assert -1e-12 <= d.low <= d.high  # a swap can only lose agreement, in every draw
    # one ranking against itself: exactly 0 in every draw
    z = tau_difference(one_swap, one_swap, reference, n_boot=200)
    assert (z.mean, z.low, z.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="three or more items"):
        tau_difference([1.0, 2.0], [1.0, 2.0], [1.0, 2.0])


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
