"""``RONASSampler``: the reinforcement-learning controller as an Optuna sampler.

Design: the controller's state is a deterministic function of the study's finished trials.
Every sampler instance learns from its own trials as they finish (``after_trial``) and, before it
samples, replays ("catches up on") the finished trials it has not learned from yet, in trial-number
order. In a sequential study the learning order is therefore the trial-number order, however often
the study was interrupted and resumed; with parallel workers it is the order in which trials finish.
A new process that loads the study therefore continues with the learned policy, several processes
on one storage each learn from every finished trial, and nothing is pickled. Each trial's
randomness is drawn from ``(seed, trial.number)``, so a study resumed after an interruption proposes
exactly what an uninterrupted run with the same seed would, and parallel workers do not propose
duplicates.

Rewards (documented behaviour):

* COMPLETE with a finite value: the value, negated for ``minimize`` studies.
* COMPLETE with NaN/inf and FAIL: ``failure_reward`` (default ``None``: not learned from, the baseline
  untouched).
* PRUNED: ``pruned_reward``; ``"last"`` (default) uses the last reported intermediate value, ``None``
  skips the trial.
* Constraint violations (e.g. over a memory budget): the objective returns the penalty value itself
  (see :class:`~ronas_optuna.NASObjective`), so the reward needs no special case.

Multi-objective studies are refused with a ``ValueError``.
"""

from __future__ import annotations

import hashlib
import math
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from .controller import Controller, ControllerConfig
from .space import SearchSpace

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class RONASSampler(BaseSampler):
    """Sampler that draws architectures from an LSTM policy trained with REINFORCE.

    Args:
        search_space: The decisions the controller owns: a :class:`SearchSpace` or a mapping of
            names to ``CategoricalDistribution``. ``None`` infers them from the study: the
            categorical parameters of the first completed trial (earlier trials are sampled by
            ``independent_sampler``).
        seed: Seeds the controller's initial weights and each trial's draw (with the trial
            number). ``None`` picks a random seed (runs are then not reproducible).
        controller_config: Controller hyper-parameters.
        independent_sampler: Samples parameters outside the controller's space (a learning rate,
            say). The default draws each such parameter uniformly from a stream keyed by
            ``(seed, trial number, parameter name)``, so a resumed study and parallel workers with
            the same seed reproduce an uninterrupted run for the whole trial (with ``seed=None``
            the seed is drawn once per sampler instance).
        failure_reward: Reward for FAIL trials and non-finite values, in the objective's units
            (negated like the values in a ``minimize`` study); ``None`` skips them.
        pruned_reward: Reward for PRUNED trials: ``"last"`` intermediate value, a number in the
            objective's units (negated in a ``minimize`` study), or ``None`` to skip them.
    """

    def __init__(
        self,
        search_space: SearchSpace | Mapping[str, BaseDistribution] | None = None,
        *,
        seed: int | None = None,
        controller_config: ControllerConfig | None = None,
        independent_sampler: BaseSampler | None = None,
        failure_reward: float | None = None,
        pruned_reward: float | str | None = "last",
    ) -> None:
        self._seed = int(np.random.SeedSequence().generate_state(1)[0] % 2**31) if seed is None else int(seed)
        self._config = controller_config or ControllerConfig()
        self._independent = independent_sampler or _TrialKeyedRandomSampler(self._seed)
        self._failure_reward = failure_reward
        if not (pruned_reward is None or pruned_reward == "last" or isinstance(pruned_reward, float | int)):
            raise ValueError(f"pruned_reward must be 'last', a number or None, got {pruned_reward!r}")
        self._pruned_reward = pruned_reward
        self._fixed_space = self._to_distributions(search_space) if search_space is not None else None
        self._lock = threading.RLock()
        self._study_key: tuple[int, int] | None = None
        self._space: dict[str, CategoricalDistribution] | None = None
        self._controller: Controller | None = None
        self._learned: set[int] = set()
        #: ``(trial number, policy entropy in nats)`` of each architecture this instance drew.
        self.entropy_history: list[tuple[int, float]] = []

    @staticmethod
    def _to_distributions(
        space: SearchSpace | Mapping[str, BaseDistribution],
    ) -> dict[str, CategoricalDistribution]:
        if isinstance(space, SearchSpace):
            return space.distributions()
        out = {}
        for name, d in space.items():
            if not isinstance(d, CategoricalDistribution):
                raise ValueError(
                    f"search_space[{name!r}] must be a CategoricalDistribution, got {type(d).__name__}"
                )
            out[name] = d
        if not out:
            raise ValueError("search_space is empty")
        return out

    # ------------------------------------------------------------------ state
    @property
    def controller(self) -> Controller | None:
        """The controller (``None`` until the space is known)."""
        return self._controller

    def _bind(self, study: Study) -> None:
        """Reset state when the sampler meets another study."""
        key = (id(study._storage), study._study_id)
        if key != self._study_key:
            self._study_key = key
            self._space = dict(self._fixed_space) if self._fixed_space is not None else None
            self._controller = None
            self._learned = set()
            self.entropy_history = []

    def _ensure_controller(self, study: Study) -> Controller | None:
        if self._space is None:
            for t in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True):
                cats = {n: d for n, d in t.distributions.items() if isinstance(d, CategoricalDistribution)}
                if cats:
                    self._space = cats
                    break
        if self._space is not None and self._controller is None:
            self._controller = Controller(
                {n: len(d.choices) for n, d in self._space.items()}, self._config, seed=self._seed
            )
        return self._controller

    @staticmethod
    def _check_single_objective(study: Study) -> None:
        if study._is_multi_objective():
            raise ValueError(
                "RONASSampler supports single-objective studies only; scalarise the objectives "
                "(e.g. Dice minus a cost penalty) or use a multi-objective sampler"
            )

    def _reward(
        self, study: Study, state: TrialState, values: Sequence[float] | None, trial: FrozenTrial
    ) -> float | None:
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        if state == TrialState.COMPLETE and values is not None and math.isfinite(values[0]):
            return sign * float(values[0])
        if state == TrialState.PRUNED:
            if self._pruned_reward == "last":
                iv = trial.intermediate_values
                if iv:
                    v = iv[max(iv)]
                    if math.isfinite(v):
                        return sign * float(v)
                    return None if self._failure_reward is None else sign * self._failure_reward
                return None
            return None if self._pruned_reward is None else sign * float(self._pruned_reward)
        return None if self._failure_reward is None else sign * self._failure_reward

    def _learn(
        self,
        trial: FrozenTrial,
        reward: float | None,
    ) -> None:
        self._learned.add(trial.number)
        ctrl = self._controller
        if reward is None or ctrl is None or self._space is None:
            return
        idx = []
        for name, dist in self._space.items():
            if name not in trial.params or trial.params[name] not in dist.choices:
                return  # the trial did not take this space's decisions: nothing to learn
            idx.append(dist.choices.index(trial.params[name]))
        ctrl.observe(idx, reward)

    def _catch_up(self, study: Study, *, exclude: int | None = None) -> None:
        """Learn, in trial-number order, from finished trials not learned from yet."""
        if self._ensure_controller(study) is None:
            return
        todo = [
            t
            for t in study._get_trials(deepcopy=False, states=_FINISHED, use_cache=True)
            if t.number not in self._learned and t.number != exclude
        ]
        for t in sorted(todo, key=lambda t: t.number):
            self._learn(t, self._reward(study, t.state, t.values, t))

    def _generator(self, trial_number: int) -> torch.Generator:
        digest = hashlib.sha256(f"{self._seed}:{trial_number}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % 2**63)

    # ------------------------------------------------------------------ BaseSampler API
    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        self._check_single_objective(study)
        with self._lock:
            self._bind(study)
            self._ensure_controller(study)
            return dict(self._space) if self._space is not None else {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self._check_single_objective(study)
        if not search_space:
            return {}
        with self._lock:
            self._bind(study)
            self._catch_up(study, exclude=trial.number)
            params: dict[str, Any] = {}
            ctrl = self._controller
            if ctrl is not None and self._space is not None:
                choice_idx = ctrl.sample(self._generator(trial.number))
                self.entropy_history.append((trial.number, ctrl.last_entropy))
                for (name, dist), i in zip(self._space.items(), choice_idx):
                    if name in search_space and search_space[name] == dist:
                        params[name] = dist.choices[i]
            for name, other in search_space.items():
                if name not in params:
                    params[name] = self._independent.sample_independent(study, trial, name, other)
            return params

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        self._check_single_objective(study)
        with self._lock:
            self._bind(study)
            if self._space is not None and param_name in self._space and trial.number > 0:
                warnings.warn(
                    f"RONASSampler: parameter {param_name!r} of trial {trial.number} was sampled "
                    "independently (its distribution differs from the controller's)",
                    stacklevel=2,
                )
            return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._independent.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._independent.after_trial(study, trial, state, values)
        if study._is_multi_objective():
            return
        with self._lock:
            self._bind(study)
            # No storage read here: trials finished elsewhere are caught up before the next sample.
            if trial.number not in self._learned and self._ensure_controller(study) is not None:
                self._learn(trial, self._reward(study, state, values, trial))

    def reseed_rng(self) -> None:
        self._independent.reseed_rng()

    # ------------------------------------------------------------------ extras
    def most_likely_params(self, study: Study) -> dict[str, Any] | None:
        """The policy's greedy (most likely) architecture after learning from ``study``."""
        with self._lock:
            self._bind(study)
            self._catch_up(study)
            if self._controller is None or self._space is None:
                return None
            idx = self._controller.most_likely()
            return {n: d.choices[i] for (n, d), i in zip(self._space.items(), idx)}


class _TrialKeyedRandomSampler(RandomSampler):
    """Uniform independent sampling from a stream keyed by ``(seed, trial number, parameter)``."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self._base_seed = seed

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        digest = hashlib.sha256(f"{self._base_seed}:{trial.number}:{param_name}".encode()).digest()
        keyed = RandomSampler(seed=int.from_bytes(digest[:4], "little"))
        return keyed.sample_independent(study, trial, param_name, param_distribution)
