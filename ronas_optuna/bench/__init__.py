"""Benchmarks inside the package: the sampler comparison behind ``ronas benchmark``, a synthetic
reward landscape, and the timing wrapper they share. The scripts in the repository's top-level
``benchmarks/`` folder use these."""

from .compare import (
    README_SETTINGS,
    BenchmarkConfig,
    BenchmarkResult,
    run_benchmark,
    split_three,
    train_from_scratch,
)
from .landscape import Landscape
from .timing import TimedSampler

__all__ = [
    "README_SETTINGS",
    "BenchmarkConfig",
    "BenchmarkResult",
    "Landscape",
    "TimedSampler",
    "run_benchmark",
    "split_three",
    "train_from_scratch",
]
