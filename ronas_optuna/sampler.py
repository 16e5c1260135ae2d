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
* Constraints (``trial.set_constraint(key, value)`` in the objective, or ``constraints_func``; a
  trial is feasible when every value is <= 0): an infeasible COMPLETE trial's reward is the lowest
  reward of the feasible COMPLETE trials numbered before it, less their spread times
  ``v / (1 + v)`` for its total violation ``v``: below every earlier feasible trial, lower the further
  out it is. (A memory budget of :class:`~ronas_optuna.NASObjective` is the objective's own penalty
  value instead.)

Multi-objective studies (``directions=[...]``, e.g. Dice and measured memory): a COMPLETE trial's
reward is its additive epsilon-indicator against the trials before it (see :func:`pareto_reward`):
how far, in rank-normalised objectives, it advances the front of the earlier trials (> 0) or falls
behind it (<= 0); an infeasible trial earns ``-1 - v / (1 + v)`` and only feasible trials
make the front that others are compared with. Every member of the front earns a positive reward
whatever its trade-off, so the policy spreads over the front instead of collapsing on one weighting
of the objectives (as a fixed or randomly drawn scalarisation would, since the policy does not see
the weight); ranks make the reward blind to the objectives' units and scales (GB, ms, Dice).
``failure_reward`` is then in the reward's own units, [-1, 1].
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

import numpy as np
import torch
from optuna._experimental import warn_experimental_argument
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.samplers._base import _process_constraints_after_trial
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from .attrs import ATTR_NO_CREDIT, ATTR_PHASE, CONSTRAINTS_KEY, PHASES_FINETUNE
from .controller import Controller, ControllerConfig
from .space import SearchSpace

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: A reward that reads earlier trials waits for those still running among the last this many.
REWARD_WAIT_WINDOW = 50
#: Trial system attr: the choice indices the policy drew for the trial.
DRAWN_ATTR = "ronas:drawn"
#: Study system attr: the controller after learning trials ``0..upto`` in order (see
#: ``snapshot_every``).
SNAPSHOT_ATTR = "ronas:controller"
#: Characters of base64 per snapshot attr (``SNAPSHOT_ATTR:0``, ``:1``, ...): every attr stays
#: below MySQL's 64 KiB TEXT column that Optuna's RDB storage keeps attrs in.
SNAPSHOT_CHUNK = 48_000
#: Study system attr: the :class:`ControllerConfig` the study's policy was started with.
CONFIG_ATTR = "ronas:controller_config"


def snapshot_state(head: Mapping[str, Any], attrs: Mapping[str, Any]) -> bytes | None:
    """The controller state a snapshot ``head`` names: its chunks joined and checked against its
    digest (``None`` when a chunk is missing or belongs to another snapshot); a snapshot of the
    earlier one-attr format holds its ``state`` itself."""
    if "state" in head:
        return base64.b64decode(head["state"])
    parts = [attrs.get(f"{SNAPSHOT_ATTR}:{i}") for i in range(int(head.get("chunks", 0)))]
    if not parts or not all(isinstance(p, str) for p in parts):
        return None
    raw = base64.b64decode("".join(parts))  # type: ignore[arg-type]
    return raw if hashlib.sha256(raw).hexdigest() == head.get("sha256") else None


class RONASSampler(BaseSampler):
    """Sampler that draws architectures from an LSTM policy trained with REINFORCE.

    Args:
        search_space: The decisions the controller owns: a :class:`SearchSpace` or a mapping of
            names to ``CategoricalDistribution``. ``None`` infers them from the study: the
            categorical parameters of the first completed trial (earlier trials are sampled by
            ``independent_sampler``).
        seed: Seeds the controller's initial weights and each trial's draw (with the trial
            number). ``None`` picks a random seed (runs are then not reproducible).
        controller_config: Controller hyper-parameters. The first sampler of a study stores
            them with it (study system attr :data:`CONFIG_ATTR`); a sampler given none continues
            a study with the stored ones, so a study resumed by a version with other defaults
            keeps its policy. One given a config that differs from the stored one uses its own
            and warns (the policy is then not the one that ran).
        independent_sampler: Samples parameters outside the controller's space (a learning rate,
            say; each name is named once in a warning). The default is Optuna's univariate TPE
            with its random numbers keyed by ``(seed, trial number, parameter name)``
            (:class:`TrialKeyedTPESampler`), so a resumed study proposes what an uninterrupted run
            with the same seed would for the whole trial (with ``seed=None`` the seed is drawn
            once per sampler instance); :class:`TrialKeyedRandomSampler` draws them uniformly.
        failure_reward: Reward for FAIL trials and non-finite values, in the objective's units
            (negated like the values in a ``minimize`` study); ``None`` skips them.
        pruned_reward: Reward for PRUNED trials: ``"last"`` intermediate value, a number in the
            objective's units (negated in a ``minimize`` study), or ``None`` to skip them. In a
            multi-objective study (no intermediate values there) a number is the reward itself, on
            the scale of :func:`pareto_reward` (-1 to 1), and ``"last"`` skips them.
        constraints_func: Computes a finished trial's constraint values (<= 0: feasible), as
            Optuna's samplers take it; they are stored with the trial. Constraints the objective
            sets with ``trial.set_constraint`` are read without it. Infeasible trials earn less
            than every earlier feasible one (see the module's rewards).
        learn_from_enqueued: Whether trials fixed by ``study.enqueue_trial`` (a warm start, a
            hand-made architecture) teach the policy like drawn ones (off-policy REINFORCE on the
            enqueued choices) or are only fed to the LSTM, masked out of the update.
        snapshot_every: Fast join. Every this many trials learned in trial-number order, the
            controller's state is stored with the study (study system attr
            :data:`SNAPSHOT_ATTR`, keyed by the last trial it learned from, the seed, the config
            and the space); a process that joins the study loads it and replays only the trials
            after it, with a policy bit-equal to a full replay. ``0``: neither write nor read.
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
        constraints_func: Callable[[FrozenTrial], Sequence[float]] | None = None,
        learn_from_enqueued: bool = True,
        snapshot_every: int = 100,
    ) -> None:
        self._seed = int(np.random.SeedSequence().generate_state(1)[0] % 2**31) if seed is None else int(seed)
        self._own_config = controller_config or ControllerConfig()
        self._config_given = controller_config is not None
        self._config = self._own_config
        self._independent = independent_sampler or TrialKeyedTPESampler(self._seed)
        self._independent_given = independent_sampler is not None
        if failure_reward is not None and not math.isfinite(failure_reward):
            raise ValueError(f"failure_reward must be a finite number or None, got {failure_reward!r}")
        self._failure_reward = failure_reward
        if not (pruned_reward is None or pruned_reward == "last" or isinstance(pruned_reward, float | int)):
            raise ValueError(f"pruned_reward must be 'last', a number or None, got {pruned_reward!r}")
        self._pruned_reward = pruned_reward
        if constraints_func is not None and not callable(constraints_func):
            raise ValueError(f"constraints_func must be callable, got {constraints_func!r}")
        if constraints_func is not None:
            warn_experimental_argument("constraints_func")
        if self._own_config.pareto_scale != "rank":
            warn_experimental_argument("controller_config.pareto_scale")
        self._constraints_func = constraints_func
        self._learn_from_enqueued = bool(learn_from_enqueued)
        if snapshot_every < 0:
            raise ValueError(f"snapshot_every must be >= 0, got {snapshot_every}")
        self._snapshot_every = snapshot_every
        self._fixed_space = self._to_distributions(search_space) if search_space is not None else None
        self._lock = threading.RLock()
        self._study_key: tuple[int, int] | None = None
        self._space: dict[str, CategoricalDistribution] | None = None
        self._controller: Controller | None = None
        self._learned: set[int] = set()
        self._prefix = -1  # trials 0..prefix were learned, in that order (-2: the order broke)
        self._snapshot_upto = -1
        self._draws: dict[int, list[int]] = {}
        self._warned: set[str] = set()
        #: ``(trial number, policy entropy in nats)`` of each architecture this instance drew.
        self.entropy_history: list[tuple[int, float]] = []

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the lock, so the sampler pickles and deep-copies (Optuna's recipe for
        resuming a study with a saved sampler: ``pickle.dump(study.sampler, f)``)."""
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

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
            self._config = self._own_config
            self._learned = set()
            self._prefix = -1
            self._snapshot_upto = -1
            self._draws = {}
            self.entropy_history = []

    def _ensure_controller(self, study: Study) -> Controller | None:
        if self._space is None:
            complete = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
            for t in complete:
                cats = {n: d for n, d in t.distributions.items() if isinstance(d, CategoricalDistribution)}
                if cats:
                    self._space = cats
                    break
            if self._space is None and any(t.distributions for t in complete):
                self._warn_once(
                    "",
                    "RONASSampler: the completed trials ask no categorical parameter, so the controller "
                    "has no decision to learn and every parameter is sampled by the independent sampler",
                )
        if self._space is not None and self._controller is None:
            attrs = study._storage.get_study_system_attrs(study._study_id)  # read once: it holds the snapshot
            self._config = self._study_config(study, attrs.get(CONFIG_ATTR))
            self._controller = Controller(
                {n: len(d.choices) for n, d in self._space.items()}, self._config, seed=self._seed
            )
            self._load_snapshot(attrs.get(SNAPSHOT_ATTR), attrs)
        return self._controller

    def _study_config(self, study: Study, stored: Any) -> ControllerConfig:
        """The config the study's policy was started with (``stored`` by its first sampler)."""
        if not isinstance(stored, dict):
            study._storage.set_study_system_attr(study._study_id, CONFIG_ATTR, asdict(self._own_config))
            return self._own_config
        known = {f.name for f in fields(ControllerConfig)}
        theirs = ControllerConfig(**{k: v for k, v in stored.items() if k in known})
        if theirs == self._own_config or not self._config_given:
            return theirs
        ours = asdict(self._own_config)
        diff = ", ".join(
            f"{k}={v!r} (study: {stored.get(k)!r})" for k, v in ours.items() if stored.get(k) != v
        )
        warnings.warn(
            f"RONASSampler: study {study.study_name!r} was started with another ControllerConfig; "
            f"using this sampler's ({diff}), so its policy is not the one that ran",
            stacklevel=4,
        )
        return self._own_config

    # ------------------------------------------------------------------ fast join
    def _snapshot_key(self) -> str:
        assert self._space is not None
        space = [[n, [repr(c) for c in d.choices]] for n, d in self._space.items()]
        # (learn_from_enqueued only when off, so that snapshots made before the option still load)
        extra = [] if self._learn_from_enqueued else ["enqueued-masked"]
        text = json.dumps([self._seed, asdict(self._config), space, Controller.learning_version, *extra])
        return hashlib.sha256(text.encode()).hexdigest()

    def _load_snapshot(self, snap: Any, attrs: Mapping[str, Any]) -> None:
        """Start from the study's controller snapshot, when it was made by this configuration."""
        if self._snapshot_every == 0 or self._learned:
            return
        if not isinstance(snap, dict) or snap.get("key") != self._snapshot_key():
            return
        assert self._controller is not None
        state = snapshot_state(snap, attrs)
        if state is None:  # a snapshot being rewritten as it was read: replay instead
            return
        self._controller.load_state_bytes(state)
        upto = int(snap["upto"])
        self._learned = set(range(upto + 1))
        self._prefix = self._snapshot_upto = upto

    def _after_learning(self, number: int) -> None:
        """Track the prefix of trials learned in trial-number order."""
        if self._prefix == -2:
            return
        self._prefix = number if number == self._prefix + 1 else -2  # -2: a replay would differ

    def _maybe_snapshot(self, study: Study, trials: Sequence[FrozenTrial]) -> None:
        """Store the controller when its in-order prefix has grown by ``snapshot_every`` trials
        since the last snapshot and all of them are finished in the storage (``trials``)."""
        k, every = self._prefix, self._snapshot_every
        if not every or k < 0 or (k + 1) // every <= (self._snapshot_upto + 1) // every:
            return
        if sum(t.number <= k for t in trials) != k + 1 or self._controller is None:
            return
        raw = self._controller.state_bytes()
        text = base64.b64encode(raw).decode()
        chunks = [text[i : i + SNAPSHOT_CHUNK] for i in range(0, len(text), SNAPSHOT_CHUNK)]
        for i, chunk in enumerate(chunks):  # the chunks first, the head that names them last
            study._storage.set_study_system_attr(study._study_id, f"{SNAPSHOT_ATTR}:{i}", chunk)
        value: dict[str, Any] = {
            "upto": k,
            "key": self._snapshot_key(),
            "chunks": len(chunks),
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
        study._storage.set_study_system_attr(study._study_id, SNAPSHOT_ATTR, value)
        self._snapshot_upto = k

    def _reward(
        self, study: Study, state: TrialState, values: Sequence[float] | None, trial: FrozenTrial
    ) -> float | None:
        if study._is_multi_objective():
            return self._pareto_reward(study, state, values, trial)
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        if state == TrialState.COMPLETE and values is not None and math.isfinite(values[0]):
            violation = _violation(trial)
            if violation > 0:
                return self._infeasible_reward(study, trial, sign * float(values[0]), violation)
            if self._config.repeat_reward == "mean":
                return sign * self._mean_of_repeats(study, trial, float(values[0]))
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

    def _infeasible_reward(self, study: Study, trial: FrozenTrial, own: float, violation: float) -> float:
        """Below every feasible COMPLETE trial numbered before ``trial`` (``own``: its signed value,
        the reference when there is none), by their spread times ``violation / (1 + violation)``."""
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        earlier = [
            sign * t.values[0]
            for t in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
            if t.number < trial.number
            and t.values is not None
            and math.isfinite(t.values[0])
            and _violation(t) <= 0
        ]
        floor = min(earlier) if earlier else own
        spread = (max(earlier) - min(earlier)) if len(earlier) > 1 else 0.0
        scale = spread or abs(floor) or 1.0
        return floor - scale * violation / (1.0 + violation)

    def _mean_of_repeats(self, study: Study, trial: FrozenTrial, value: float) -> float:
        """``value`` averaged with the earlier-numbered COMPLETE trials of the same architecture."""
        names = list(self._space or {})
        key = [trial.params.get(n) for n in names]
        same = [
            t.values[0]
            for t in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
            if t.number < trial.number
            and t.values is not None
            and math.isfinite(t.values[0])
            and [t.params.get(n) for n in names] == key
        ]
        return (value + sum(same)) / (1 + len(same))

    def _pareto_reward(
        self, study: Study, state: TrialState, values: Sequence[float] | None, trial: FrozenTrial
    ) -> float | None:
        """A multi-objective trial's reward against the COMPLETE trials numbered before it."""
        if state == TrialState.PRUNED:
            pruned = self._pruned_reward
            return float(pruned) if isinstance(pruned, int | float) else None
        if state != TrialState.COMPLETE or values is None or not all(math.isfinite(v) for v in values):
            return self._failure_reward
        violation = _violation(trial)
        if violation > 0:
            return -1.0 - violation / (1.0 + violation)
        signs = np.array([1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions])
        done = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
        earlier = [
            t.values
            for t in done
            if t.number < trial.number
            and t.values is not None
            and all(math.isfinite(v) for v in t.values)
            and _violation(t) <= 0
        ]
        if not earlier:
            return None  # nothing to compare with: the first trial teaches nothing
        mine, theirs = signs * np.asarray(values, float), signs * np.asarray(earlier, float)
        return pareto_reward(mine, theirs, scale=self._config.pareto_scale)

    def _learn(self, study: Study, trial: FrozenTrial, reward: float | None) -> None:
        """Learn from a finished trial (see :meth:`_credit`) and mark it learned."""
        self._learned.add(trial.number)
        try:
            self._credit(trial, reward)
        finally:
            self._after_learning(trial.number)

    def _credit(self, trial: FrozenTrial, reward: float | None) -> None:
        """Credit ``reward`` to the decisions the policy made in ``trial``.

        A decision counts when the objective asked for it with the controller's distribution
        (a value ``enqueue_trial`` fixed counts too with ``learn_from_enqueued``: a warm start then
        teaches the policy as a drawn trial would); the others are fed to the LSTM as they were
        (the value used, or the policy's draw for a decision never asked) but masked out of the
        log-probability. A trial with no counted decision teaches nothing, and so does one with
        the user attr :data:`~ronas_optuna.attrs.ATTR_NO_CREDIT` (the search's fine-tuning trial).
        """
        ctrl = self._controller
        if reward is None or ctrl is None or self._space is None or _no_credit(trial):
            return
        fixed = trial.system_attrs.get("fixed_params") or {}
        drawn = trial.system_attrs.get(DRAWN_ATTR)
        idx, mask = [], []
        for k, (name, dist) in enumerate(self._space.items()):
            taken = name in trial.params and trial.distributions.get(name) == dist
            if taken:
                idx.append(dist.choices.index(trial.params[name]))
                mask.append(self._learn_from_enqueued or name not in fixed)
            elif drawn is not None:
                idx.append(int(drawn[k]))
                mask.append(False)
            else:
                return  # a trial from before the controller existed, sampled independently
        if any(mask):
            ctrl.observe(idx, reward, mask=mask)

    def _catch_up(self, study: Study, *, exclude: int | None = None) -> None:
        """Learn, in trial-number order, from finished trials not learned from yet."""
        if self._ensure_controller(study) is None:
            return
        finished = study._get_trials(deepcopy=False, states=_FINISHED, use_cache=True)
        todo = [t for t in finished if t.number not in self._learned and t.number != exclude]
        running: list[int] | None = None  # read once, when a reward needs it
        for t in sorted(todo, key=lambda t: t.number):
            if running is None and self._reads_history(study, t):
                running = _running_numbers(study)
            if not self._reward_ready(study, t, running or []):
                break  # and every later one: their rewards wait for the earlier trials
            self._learn(study, t, self._reward(study, t.state, t.values, t))
        self._maybe_snapshot(study, finished)

    def _reward_ready(self, study: Study, trial: FrozenTrial, running: Sequence[int]) -> bool:
        """Whether ``trial``'s reward can be computed as every worker and every replay would: a
        reward that reads earlier trials (multi-objective, constraints, ``repeat_reward="mean"``)
        waits while a trial numbered before it, within :data:`REWARD_WAIT_WINDOW`, still runs (a
        trial older than that is taken for a crashed worker's). The others never wait."""
        low = trial.number - REWARD_WAIT_WINDOW
        return not self._reads_history(study, trial) or not any(low <= n < trial.number for n in running)

    def _reads_history(self, study: Study, trial: FrozenTrial) -> bool:
        return study._is_multi_objective() or self._config.repeat_reward == "mean" or _violation(trial) > 0

    def _generator(self, trial_number: int) -> torch.Generator:
        digest = hashlib.sha256(f"{self._seed}:{trial_number}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % 2**63)

    # ------------------------------------------------------------------ BaseSampler API
    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """Empty: every parameter goes through :meth:`sample_independent`, which sees the
        distribution the objective actually asks for (so conditional and mismatched decisions
        need no special case)."""
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """Optuna never asks (the relative space is empty); a direct call gets what
        :meth:`sample_independent` would give for each parameter."""
        return {n: self.sample_independent(study, trial, n, d) for n, d in search_space.items()}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """A controller decision: the trial's architecture draw (made once per trial, at its
        first decision, from ``(seed, trial number)``); anything else: the independent sampler."""
        with self._lock:
            self._bind(study)
            if self._ensure_controller(study) is not None and self._space is not None:
                dist = self._space.get(param_name)
                if dist is not None and dist == param_distribution:
                    k = list(self._space).index(param_name)
                    return dist.choices[self._draw(study, trial)[k]]
                if dist is not None:
                    self._warn_once(
                        param_name,
                        f"RONASSampler: parameter {param_name!r} is asked with {param_distribution}, "
                        f"not the controller's {dist}; it is sampled independently",
                    )
                elif not self._independent_given:
                    self._warn_once(
                        param_name,
                        f"RONASSampler: parameter {param_name!r} is not a controller decision; it is "
                        "sampled by univariate TPE (give independent_sampler=... to choose another)",
                    )
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)

    def _draw(self, study: Study, trial: FrozenTrial) -> list[int]:
        """The policy's architecture for ``trial``, drawn once after catching up on the study.

        The indices are stored with the trial (system attr :data:`DRAWN_ATTR`), so decisions the
        objective did not ask for can be replayed, masked, when the policy learns from it.
        """
        if trial.number not in self._draws:
            self._catch_up(study, exclude=trial.number)
            ctrl = self._controller
            assert ctrl is not None
            if trial.number < ctrl.config.startup_trials:  # a random start, learned from all the same
                idx = ctrl.sample_uniform(self._generator(trial.number))
            else:
                idx = ctrl.sample(self._generator(trial.number))
                self.entropy_history.append((trial.number, ctrl.last_entropy))
            study._storage.set_trial_system_attr(trial._trial_id, DRAWN_ATTR, idx)
            self._draws[trial.number] = idx
        return self._draws[trial.number]

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
        if self._constraints_func is not None and state in (TrialState.COMPLETE, TrialState.PRUNED):
            _process_constraints_after_trial(self._constraints_func, study, trial, state)
            trial = study._storage.get_trial(trial._trial_id)  # with the values just stored
        with self._lock:
            self._bind(study)
            # No storage read here: trials finished elsewhere are caught up before the next sample.
            if trial.number not in self._learned and self._ensure_controller(study) is not None:
                if DRAWN_ATTR not in trial.system_attrs and trial.number in self._draws:
                    trial.system_attrs[DRAWN_ATTR] = self._draws[trial.number]  # a stale copy
                running = _running_numbers(study) if self._reads_history(study, trial) else []
                if self._reward_ready(study, trial, running):  # else a later catch-up learns it
                    self._learn(study, trial, self._reward(study, state, values, trial))
            self._draws.pop(trial.number, None)

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


def _running_numbers(study: Study) -> list[int]:
    """The numbers of the study's trials that are running now (read from the storage)."""
    running = study._get_trials(deepcopy=False, states=(TrialState.RUNNING,), use_cache=False)
    return [t.number for t in running]


def _no_credit(trial: FrozenTrial) -> bool:
    """Whether the policy must not learn from ``trial``: marked so, or a search's fine-tuning trial
    of a version that did not mark it."""
    attrs = trial.user_attrs
    return bool(attrs.get(ATTR_NO_CREDIT)) or attrs.get(ATTR_PHASE) in PHASES_FINETUNE


def _violation(trial: FrozenTrial) -> float:
    """The trial's total constraint violation (sum of its positive constraint values; 0: feasible
    or unconstrained), from ``set_constraint`` or ``constraints_func`` alike."""
    values = getattr(trial, "constraints", None)  # Optuna >= 5: a dict of every constraint
    if values is None:
        values = trial.system_attrs.get(CONSTRAINTS_KEY) or ()
    items = values.values() if isinstance(values, Mapping) else values
    return float(sum(v for v in items if v is not None and v > 0))


def pareto_reward(value: np.ndarray, earlier: np.ndarray, *, scale: str = "rank") -> float:
    """The additive epsilon-indicator of ``value`` against the front of ``earlier``, all maximised.

    Each objective is put on [0, 1] over ``earlier`` and ``value`` together: by its mid-rank
    (``scale="rank"``) or min-max normalised (``scale="value"``). The reward is
    ``min over earlier e of max over objectives i of (u_i(value) - u_i(e))``: positive when no
    earlier point weakly dominates ``value`` (the smallest lead it keeps over any of them), zero or
    negative when one does (how far it would have to move to leave that one's
    shadow). Only the earlier front matters: a dominated earlier point never sets the minimum.

    Args:
        value: The trial's objective values, shape ``(m,)``, signed so that larger is better.
        earlier: The earlier trials' values, shape ``(n, m)``, ``n >= 1``, signed the same way.
        scale: ``"rank"`` or ``"value"`` (see ``ControllerConfig.pareto_scale``).

    Returns:
        A reward in [-1, 1].
    """
    points = np.vstack([earlier, value[None, :]])
    if scale == "value":
        low, high = points.min(axis=0), points.max(axis=0)
        u = (points - low) / np.where(high > low, high - low, 1.0)
        return float((u[-1][None, :] - u[:-1]).max(axis=1).min())
    n = len(points)
    ranks = np.empty_like(points)
    for i in range(points.shape[1]):  # mid-ranks: ties share the mean of their ranks
        order = np.sort(points[:, i])
        below = np.searchsorted(order, points[:, i], side="left")
        equal = np.searchsorted(order, points[:, i], side="right") - below
        ranks[:, i] = (below + (equal - 1) / 2) / max(n - 1, 1)
    lead = (ranks[-1][None, :] - ranks[:-1]).max(axis=1)
    return float(lead.min())


class TrialKeyedRandomSampler(RandomSampler):
    """Uniform independent sampling from a stream keyed by ``(seed, trial number, parameter)``."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self._base_seed = seed

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        keyed = RandomSampler(seed=_trial_key(self._base_seed, trial, param_name))
        return keyed.sample_independent(study, trial, param_name, param_distribution)


def _trial_key(seed: int, trial: FrozenTrial, param_name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{trial.number}:{param_name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class TrialKeyedTPESampler(TPESampler):
    """Optuna's univariate TPE whose random numbers (its start-up draws and its candidates) come
    from a stream keyed by ``(seed, trial number, parameter)``: the same history gives the same
    proposal, however often the study was interrupted."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self._base_seed = seed
        self._random_sampler = TrialKeyedRandomSampler(seed)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        self._rng.rng.seed(_trial_key(self._base_seed, trial, param_name))
        return super().sample_independent(study, trial, param_name, param_distribution)
