"""Benchmarks inside the package: the sampler comparison behind ``ronas benchmark``, a synthetic
reward landscape, and the timing wrapper they share. The scripts in the repository's top-level
``benchmarks/`` folder use these. Names are imported on first use (PEP 562)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .compare import README_SETTINGS, BenchmarkResult, run_benchmark, run_benchmarks
    from .config import BenchmarkConfig
    from .fold import split_three
    from .landscape import CostLandscape, Landscape
    from .references import train_from_scratch
    from .timing import TimedSampler

_EXPORTS = {
    "README_SETTINGS": "compare",
    "BenchmarkConfig": "config",
    "BenchmarkResult": "compare",
    "CostLandscape": "landscape",
    "Landscape": "landscape",
    "TimedSampler": "timing",
    "run_benchmark": "compare",
    "run_benchmarks": "compare",
    "split_three": "fold",
    "train_from_scratch": "references",
}

__all__ = [
    "README_SETTINGS",
    "BenchmarkConfig",
    "BenchmarkResult",
    "CostLandscape",
    "Landscape",
    "TimedSampler",
    "run_benchmark",
    "run_benchmarks",
    "split_three",
    "train_from_scratch",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
