"""A sampler wrapper that measures the seconds its inner sampler spends per trial."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


class TimedSampler(optuna.samplers.BaseSampler):
    """Delegates to ``inner`` and sums its seconds per trial number in :attr:`seconds`.

    The wrapped sampler stays reachable as ``inner``, so code that looks for a
    :class:`~ronas_optuna.RONASSampler` (for example :func:`~ronas_optuna.derive_best`'s policy
    candidate) finds it through the wrapper.
    """

    def __init__(self, inner: optuna.samplers.BaseSampler) -> None:
        self.inner = inner
        self.seconds: dict[int, float] = defaultdict(float)

    def _timed(self, number: int, fn: Callable[..., Any], *args: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds[number] += time.perf_counter() - t

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._timed(trial.number, self.inner.infer_relative_search_space, study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._timed(trial.number, self.inner.sample_relative, study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._timed(
            trial.number, self.inner.sample_independent, study, trial, param_name, param_distribution
        )

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._timed(trial.number, self.inner.before_trial, study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._timed(trial.number, self.inner.after_trial, study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
