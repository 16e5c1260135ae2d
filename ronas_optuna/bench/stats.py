"""Means with 95% confidence intervals, and paired differences, for benchmark rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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


def paired(a: dict[tuple[int, int], float], b: dict[tuple[int, int], float]) -> Interval:
    """Interval of ``a - b`` over the (fold, seed) keys both have."""
    keys = sorted(set(a) & set(b))
    return interval([a[k] - b[k] for k in keys])
