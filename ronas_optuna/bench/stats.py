"""Means with 95% confidence intervals, and paired differences, for benchmark rows.

The protocol for real data: the unit of analysis is the test volume (a fold of a leave-one-out
benchmark), never a seed. Seeds of one fold share their test volume, so they are averaged within the
fold first and the interval is a Student-t interval over the folds' means (:func:`clustered`,
:func:`paired`); :func:`hierarchical_bootstrap` resamples folds, then seeds within them. Say "better"
only where the interval excludes 0 (:func:`verdict`). :func:`interval` is for values that are
independent units themselves (seeds of a synthetic landscape or of a public benchmark table).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """Mean and two-sided 95% Student-t interval of ``n`` values."""

    mean: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:.4f} (n=1)"
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


def interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of the finite ``values`` with its t-interval (a point when fewer than two)."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    m = float(v.mean())
    if len(v) < 2:
        return Interval(m, m, m, 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return Interval(m, m - half, m + half, len(v))


#: Benchmark results keyed by ``(fold, seed)``.
Keyed = Mapping[tuple[int, int], float]


def fold_means(values: Keyed) -> dict[int, float]:
    """Each fold's mean over its seeds (finite values only; a fold with none is left out)."""
    by: dict[int, list[float]] = defaultdict(list)
    for (fold, _), v in values.items():
        if math.isfinite(v):
            by[fold].append(v)
    return {fold: float(np.mean(vs)) for fold, vs in sorted(by.items())}


def clustered(values: Keyed, confidence: float = 0.95) -> Interval:
    """Mean over folds of the seeds' mean within each fold, with a t-interval over the folds
    (``n`` is the number of folds: the test volumes, not the runs)."""
    return interval(list(fold_means(values).values()), confidence)


def paired(a: Keyed, b: Keyed, confidence: float = 0.95) -> Interval:
    """``a - b`` on the (fold, seed) keys both have, clustered by fold (see :func:`clustered`)."""
    return clustered({k: a[k] - b[k] for k in set(a) & set(b)}, confidence)


def hierarchical_bootstrap(
    values: Keyed, *, n_boot: int = 10_000, seed: int = 0, confidence: float = 0.95
) -> Interval:
    """Percentile interval of the mean of fold means, resampling folds with replacement and then
    the seeds of each drawn fold with replacement."""
    by: dict[int, list[float]] = defaultdict(list)
    for (fold, _), v in values.items():
        if math.isfinite(v):
            by[fold].append(v)
    groups = [np.asarray(vs) for _, vs in sorted(by.items())]
    if not groups:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(np.mean([g.mean() for g in groups]))
    if len(groups) < 2:
        return Interval(mean, mean, mean, len(groups))
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for i in range(n_boot):
        picked = rng.integers(len(groups), size=len(groups))
        draws[i] = np.mean([rng.choice(groups[j], size=len(groups[j])).mean() for j in picked])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(mean, float(low), float(high), len(groups))


def verdict(iv: Interval) -> str:
    """ "better"/"worse" only where the interval of a difference excludes 0, from two units up."""
    if iv.n > 1 and iv.excludes_zero():
        return "better" if iv.low > 0 else "worse"
    return "no difference shown"


def seed_table(
    rows: list[dict[str, Any]],
    key: str,
    budgets: list[int],
    *,
    first: str = "ronas",
    digits: int = 3,
    lower_is_better: bool = False,
) -> str:
    """Markdown: ``key`` per sampler and budget (mean and 95% interval over seeds), then ``first``
    minus each other sampler, paired by seed, with its verdict for ``first``. For benchmarks whose
    runs are independent seeds (no shared test volume): rows carry ``sampler``, ``seed``, ``budget``."""
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    lines = ["| trials | " + " | ".join(samplers) + " |", "|---:|" + "---:|" * len(samplers)]
    for b in budgets:
        cells = []
        for s in samplers:
            iv = interval([r[key] for r in rows if r["sampler"] == s and r["budget"] == b])
            cells.append(
                "–" if iv.n == 0 else f"{iv.mean:.{digits}f} [{iv.low:.{digits}f}, {iv.high:.{digits}f}]"
            )
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"| trials | {first} − | seeds | {key} difference [95% CI] | verdict for {first} |",
        "|---:|---|---:|---:|---|",
    ]
    for b in budgets:
        for s in samplers:
            if s != first:
                d, v = seed_difference(rows, key, b, first, s, lower_is_better=lower_is_better)
                if d.n:
                    lines.append(f"| {b} | {s} | {d.n} | {d} | {v} |")
    return "\n".join(lines) + "\n"


def seed_difference(
    rows: list[dict[str, Any]],
    key: str,
    budget: int,
    first: str,
    other: str,
    *,
    lower_is_better: bool = False,
) -> tuple[Interval, str]:
    """``first``'s ``key`` minus ``other``'s at ``budget``, paired by seed (95% interval), and the
    verdict for ``first`` (with ``lower_is_better``, a negative difference is "better")."""

    def by_seed(sampler: str) -> dict[int, float]:
        return {r["seed"]: r[key] for r in rows if r["sampler"] == sampler and r["budget"] == budget}

    mine, theirs = by_seed(first), by_seed(other)
    d = interval([mine[k] - theirs[k] for k in sorted(set(mine) & set(theirs))])
    v = verdict(d)
    if lower_is_better:
        v = {"better": "worse", "worse": "better"}.get(v, v)
    return d, v


#: The power the minimum detectable difference is stated at (two-sided test at 5%).
POWER = 0.8


@dataclass(frozen=True)
class Difference:
    """Mean of a paired difference over a subjects × seeds matrix, its 95% bootstrap interval
    and standard error."""

    mean: float
    low: float
    high: float
    subjects: int
    seeds: int
    se: float

    @property
    def mdd(self) -> float:
        """Minimum detectable difference: the true difference this design finds with probability
        :data:`POWER` by a two-sided 5% test, ``(z_0.975 + z_power) × se``."""
        return float((stats.norm.ppf(0.975) + stats.norm.ppf(POWER)) * self.se)

    def __str__(self) -> str:
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def crossed_bootstrap(
    values: Mapping[tuple[Hashable, Hashable], float],
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Difference:
    """The mean of ``values`` keyed ``(subject, seed)`` with a percentile interval that resamples
    subjects and seeds independently, with replacement (the two-way bootstrap for a crossed design:
    every seed's search is tested on every subject). Only subjects that have a finite value for
    every seed present take part, so the matrix is complete."""
    subjects = sorted({k[0] for k in values}, key=str)
    seeds = sorted({k[1] for k in values}, key=str)
    full = [s for s in subjects if all(math.isfinite(values.get((s, r), math.nan)) for r in seeds)]
    if not full or not seeds:
        return Difference(math.nan, math.nan, math.nan, 0, 0, math.nan)
    m = np.array([[values[(s, r)] for r in seeds] for s in full])
    mean = float(m.mean())
    rng = np.random.default_rng(seed)
    n_s, n_r = m.shape
    ws = np.stack([np.bincount(rng.integers(n_s, size=n_s), minlength=n_s) for _ in range(n_boot)])
    wr = np.stack([np.bincount(rng.integers(n_r, size=n_r), minlength=n_r) for _ in range(n_boot)])
    draws = np.einsum("bs,sr,br->b", ws, m, wr) / (n_s * n_r)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Difference(mean, float(low), float(high), n_s, n_r, float(draws.std()))


def margin_verdict(d: Difference, margin: float) -> str:
    """The pre-registered reading of a difference ``a - b`` (higher is better): ``better`` where
    the interval lies above 0, ``worse`` where it lies below 0, ``non-inferior`` where it lies
    above ``-margin`` only, else ``no difference shown``."""
    if not math.isfinite(d.low) or d.subjects * d.seeds < 2:
        return "no difference shown"
    if d.low > 0:
        return "better"
    if d.high < 0:
        return "worse"
    if d.low > -margin:
        return "non-inferior"
    return "no difference shown"


def tau_difference(
    a: Sequence[float],
    b: Sequence[float],
    reference: Sequence[float],
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """Kendall's τ of ``a`` with ``reference`` minus that of ``b``, with a percentile interval
    from a paired bootstrap over the items (architectures): each draw resamples the items once and
    computes both τ on the same draw. Draws with a constant column (τ undefined) are skipped."""
    x, y, r = (np.asarray(v, dtype=float) for v in (a, b, reference))
    if not len(x) == len(y) == len(r) or len(r) < 3:
        raise ValueError(f"need three or more items scored three ways, got {len(x)}, {len(y)}, {len(r)}")
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        i = rng.integers(len(r), size=len(r))
        ta, tb = stats.kendalltau(x[i], r[i])[0], stats.kendalltau(y[i], r[i])[0]
        if math.isfinite(ta) and math.isfinite(tb):
            draws.append(ta - tb)
    mean = float(stats.kendalltau(x, r)[0] - stats.kendalltau(y, r)[0])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(mean, float(low), float(high), len(r))
