"""One NAS trial: draw an architecture, train the shared weights along it, validate, report.

The trial logic only: training is :class:`~ronas_optuna.trainer.PathTrainer`'s and validation
:class:`~ronas_optuna.evaluator.Evaluator`'s. The supernet and its Adam state persist across trials
(and, through atomic checkpoints, across processes). A failing trial (non-finite loss, CUDA
out-of-memory, a bad case) returns NaN, which Optuna records as FAIL; its reason is in the
``fail_reason`` user attr, the weights and optimizer state along its path are restored to what they
were before it, and the study goes on.

Cost: each trial's architecture is measured once per process (:mod:`~ronas_optuna.measure`): a
training step's peak memory (``memory_gb``, CUDA peak or the CPU count), forward FLOPs per patch and,
when latency is an objective, inference latency. With ``objectives="dice,memory"`` (or
``"dice,latency"``) a trial returns ``(Dice, cost)`` for a two-direction study.

Memory budget (the paper's resource awareness): when ``memory_budget_gb`` is set, an architecture
whose measured training-step memory exceeds it is not trained. The trial completes with the value
``budget_penalty`` (default 0.0, the Dice of a network that finds nothing), the excess in GB is
stored as Optuna's constraint (``trial.set_constraint("memory_gb", ...)`` on Optuna 5, which TPE and
GP read; :func:`constraints_func` for older versions), so the RL controller receives the penalty as
its reward and learns to stay inside the budget.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import torch

from .attrs import (
    ATTR_ANCHOR,
    ATTR_ANCHOR_FAIL,
    ATTR_ARCH,
    ATTR_DICE_PER_CLASS,
    ATTR_FAIL,
    ATTR_PEAK_MEMORY,
    ATTR_PHASE,
    ATTR_RESUMED,
    ATTR_SECONDS,
    ATTR_STEPS,
    ATTR_TIME,
    ATTR_TRAIN_LOSS,
    PHASES_FINETUNE,
)
from .data.msd import MSDDataset, PreprocessedCase
from .data.patches import foreground_locations
from .errors import DataError, SettingsError, WriteError
from .evaluator import DiceResult, Evaluator
from .measure import Cost, CostCache, measure, record_budget, record_cost
from .network import architecture_flops
from .pathwork import PathWork, Work
from .search_state import FinetuneProgress, SearchCheckpoint, SearchState, best_after
from .settings import SearchSettings
from .space import Architecture
from .supernet import Supernet, SupernetPath
from .trainer import PathTrainer, TrialFailure, resolve_device, trial_failed

if TYPE_CHECKING:
    from .team import Team

log = logging.getLogger(__name__)
#: Patch-stream offset of the warm-up steps, far from every trial's.
_WARMUP_STREAM = 2**40
#: Patch-stream offset of the anchoring steps (``anchor_every``), far from the trials' and the warm-up's.
_ANCHOR_STREAM = 2**41

#: ``hook(trial, arch, value, net, patch)``: called at the end of each successful trial with the
#: architecture's path on the supernet and its patch size (see ``NASObjective.hooks``).
TrialHook = Callable[[optuna.Trial, Architecture, float, SupernetPath, tuple[int, int, int]], None]

__all__ = ["NASObjective", "TrialFailure", "TrialHook", "trial_failed"]


class NASObjective:
    """The search objective: callable on an Optuna trial, returns validation Dice.

    Build it with :meth:`build` from a dataset and :class:`~ronas_optuna.SearchSettings`; the
    constructor takes the parts.

    Args:
        supernet: The shared weights (its space defines the architecture).
        trainer: Trains ``supernet``'s parameters on the training cases.
        evaluator: Scores paths on the validation cases; the same for every trial and sampler.
        settings: What the search trains and how (:class:`~ronas_optuna.SearchSettings`): its
            ``training`` group (steps per trial, warm-up, learning-rate schedule, distillation,
            checkpoint interval), ``finetune`` (the in-supernet fine-tuning that ends the search)
            and ``objectives`` (the reward's cases and overlap, the memory budget, the study's
            objectives); each field's help says what it does. ``space``, ``data`` and the
            optimizer's rate are :meth:`build`'s: the supernet, cases and trainer given here were
            built with them (the trainer holds the batch, learning rate and seed).
        dataset: Where the cases come from; an exported model keeps its preprocessing and labels.
        patch_size: Patch size when the space has no ``patch`` decision.
        checkpoint: Supernet checkpoint path; loaded at start when it exists, written atomically
            every ``settings.training.checkpoint_every`` trials and by :meth:`save`.
        budget_penalty: Value returned for an over-budget architecture.
        prune_checks: Intermediate validations per trial reported to the pruner (0: none).
        finetune_cases: What the fine-tuning trial trains on (default: the training cases; the
            ``train+val`` setting gives training and validation cases).

    Each trial is scored on the evaluator's first ``settings.objectives.reward_cases`` cases (a
    fixed subset, so validation stays a small share of a trial on large datasets); export scores
    all of them.
    Before the first trial, ``settings.training.warmup_steps`` steps train along random architectures
    (uniform as in ENAS/SPOS, or FairNAS-fair rounds), once, recorded in the checkpoint. The
    learning-rate schedule spans ``warmup_steps + planned_trials * steps_per_trial +
    finetune_steps`` steps, where :attr:`planned_trials` is set by whoever runs the study (unknown:
    constant). After every ``settings.training.anchor_every``-th trial the anchor path (the best
    trial's, or the DynUNet-like member) trains ``steps_per_trial`` more steps (:meth:`anchor_after`);
    those steps take no place of their own in the schedule. A trial enqueued with the user attr
    ``steps`` trains that many steps instead of ``steps_per_trial`` (and is not pruned when its
    ``phase`` is ``"finetune"``). The fine-tuning trial writes a checkpoint every
    ``settings.finetune.checkpoint_steps`` steps; the next fine-tuning trial of the same path and
    length after a stopped run goes on from the last one (:meth:`_finetune`).
    """

    def __init__(
        self,
        supernet: Supernet,
        trainer: PathTrainer,
        evaluator: Evaluator,
        *,
        settings: SearchSettings | None = None,
        dataset: MSDDataset | None = None,
        patch_size: Sequence[int] | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        budget_penalty: float = 0.0,
        prune_checks: int = 0,
        finetune_cases: Sequence[PreprocessedCase] | None = None,
    ) -> None:
        self._settings = settings or SearchSettings()
        self.patch_size: tuple[int, int, int] | None = None
        if patch_size is not None:
            if len(patch_size) != 3:
                raise SettingsError(f"patch_size must have 3 sizes (z, y, x), got {tuple(patch_size)}")
            self.patch_size = (int(patch_size[0]), int(patch_size[1]), int(patch_size[2]))
        if "patch" not in supernet.space and self.patch_size is None:
            raise SettingsError("give patch_size, or add a 'patch' decision to the search space")
        t = self._settings.training
        if t.anchor == "handmade" and (t.anchor_every > 0 or t.distill_weight > 0):
            try:
                supernet.space.handmade()
            except ValueError as e:
                raise SettingsError(f"anchor 'handmade': {e}") from None
        self.supernet, self.trainer, self.evaluator = supernet, trainer, evaluator
        self.dataset = dataset
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.budget_penalty = budget_penalty
        self.prune_checks = prune_checks
        #: Trains and validates paths on this process.
        self.paths = PathWork(
            supernet,
            trainer,
            evaluator,
            settings=self.settings,
            patch_size=self.patch_size,
            finetune_cases=finetune_cases,
        )
        #: What a trial's training, validation and failure go through: :attr:`paths`, or in a
        #: data-parallel job the leader's wrapper that sends each call to every rank
        #: (:func:`~ronas_optuna.distributed.lead`).
        self.work: Work = self.paths
        #: Trials the search plans to run (the schedule's length); ``None``: unknown.
        self.planned_trials: int | None = None
        #: The counters and the best trial's weights (:class:`~ronas_optuna.search_state.SearchState`).
        self.state = SearchState()
        #: A checkpoint that could not be written (a full disk): the trial that found it keeps its
        #: value (it trained and validated), the study stops after it, and whoever runs the study
        #: raises it (:func:`~ronas_optuna.runner.run_search`): one line, the trial not FAIL.
        self.write_error: WriteError | None = None
        #: Measured costs of the architectures this process has seen (:meth:`cost_of`).
        self.costs = CostCache()
        self._clock = _Clock()
        #: Called as ``hook(trial, arch, value, net, patch)`` (:data:`TrialHook`) at the end of
        #: each successful trial.
        self.hooks: list[TrialHook] = []
        #: Called with no arguments after each checkpoint is submitted (every ``checkpoint_every``
        #: trials, each part of the fine-tuning, :meth:`save`): a benchmark records its clock
        #: with it, so that a resumed run's time matches the checkpoint it goes on from.
        self.on_save: list[Callable[[], None]] = []
        self._store = SearchCheckpoint(self.checkpoint) if self.checkpoint is not None else None
        if self._store is not None and self._store.exists():
            self.state = self._store.load(self.supernet, self.trainer)

    # the search state, by name (runners and tests set and read them)
    @property
    def trials_trained(self) -> int:
        return self.state.trials_trained

    @trials_trained.setter
    def trials_trained(self, n: int) -> None:
        self.state.trials_trained = n

    @property
    def warmup_done(self) -> int:
        return self.state.warmup_done

    @warmup_done.setter
    def warmup_done(self, n: int) -> None:
        self.state.warmup_done = n

    @property
    def best_snapshot(self) -> dict[str, Any] | None:
        """The best architecture's own weights as they were when it scored (this process's
        trials): ``{"trial", "value", "arch" (code), "state" (derived state dict, CPU)}``. Shared
        weights keep moving after a trial, so :func:`~ronas_optuna.derive_best` compares this
        snapshot with the re-validated candidates, as a trainer keeps its best checkpoint."""
        return self.state.best_snapshot

    @best_snapshot.setter
    def best_snapshot(self, snapshot: dict[str, Any] | None) -> None:
        self.state.best_snapshot = snapshot

    @property
    def settings(self) -> SearchSettings:
        """The search's settings, shared with :attr:`paths` (a new value applies to both from the
        next step on; the reward's cases stay those chosen when the objective was built)."""
        return self._settings

    @settings.setter
    def settings(self, value: SearchSettings) -> None:
        self._settings = value
        self.paths.settings = value

    @classmethod
    def build(
        cls,
        supernet: Supernet,
        dataset: MSDDataset,
        *,
        settings: SearchSettings | None = None,
        train_ids: Sequence[str] | None = None,
        val_ids: Sequence[str] | None = None,
        device: str | torch.device = "auto",
        checkpoint: str | os.PathLike[str] | None = None,
        patch_size: Sequence[int] | None = None,
        channels_last: bool = False,
        team: Team | None = None,
        budget_penalty: float = 0.0,
        prune_checks: int = 0,
    ) -> NASObjective:
        """An objective on ``dataset``'s cases with the trainer and evaluator ``settings`` give.

        Args:
            supernet: The shared weights; moved to ``device``.
            dataset: The preprocessed dataset.
            settings: Training budget and seed (default :class:`~ronas_optuna.SearchSettings`).
            train_ids: Training case ids (default: ``dataset.split`` with the settings' seed).
            val_ids: Validation case ids.
            device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
            checkpoint: Supernet checkpoint path (see the class).
            patch_size: Patch size when the space has no ``patch`` decision.
            channels_last: ``channels_last_3d`` memory format on CUDA.
            team: This rank's place in a data-parallel job, for the trainer (which averages the
                gradients over ranks); :func:`~ronas_optuna.distributed.lead` and ``follow`` wire
                the ranks' objectives together.
            budget_penalty: Value returned for an over-budget architecture.
            prune_checks: Intermediate validations per trial reported to the pruner (0: none).
        """
        s = settings or SearchSettings()
        if train_ids is None or val_ids is None:
            tr, va = dataset.split(s.data.val_fraction, seed=s.seed)
            train_ids = train_ids if train_ids is not None else tr
            val_ids = val_ids if val_ids is not None else va
        if not train_ids or not val_ids:
            raise DataError("need at least one training and one validation case")
        dev = resolve_device(device)
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True
        supernet.to(dev)
        if channels_last and dev.type == "cuda":
            supernet.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        train_cases = dataset.load_all(list(train_ids))
        trainer = PathTrainer(
            supernet.parameters(),
            train_cases,
            batch_size=s.data.batch_size,
            lr=s.training.lr,
            weight_decay=s.training.weight_decay,
            device=dev,
            amp=s.training.amp,
            seed=s.seed,
            locations=foreground_locations(train_cases, s.seed),  # once, not per trial
            num_workers=s.data.num_workers,
            channels_last=channels_last,
            team=team,
        )
        val_cases = dataset.load_all(list(val_ids))
        evaluator = Evaluator(val_cases, supernet.num_classes, device=dev, amp=s.training.amp)
        return cls(
            supernet,
            trainer,
            evaluator,
            settings=s,
            dataset=dataset,
            patch_size=patch_size,
            checkpoint=checkpoint,
            budget_penalty=budget_penalty,
            prune_checks=prune_checks,
            finetune_cases=train_cases + val_cases if s.finetune.data == "train+val" else None,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, *, background: bool = False) -> None:
        """Write the supernet, its optimizer state and the search state atomically to
        ``checkpoint`` (:class:`~ronas_optuna.search_state.SearchCheckpoint`); ``background``: on a
        thread while training goes on (the per-trial checkpoint)."""
        if self._store is not None:
            self._store.save(self.supernet, self.trainer, self.state, background=background)
            for hook in self.on_save:
                hook()

    # ------------------------------------------------------------------ pieces
    @property
    def batch_size(self) -> int:
        return self.trainer.batch_size

    @property
    def global_batch(self) -> int:
        """Patches per step over all ranks (a trial's share of the patch stream)."""
        return self.paths.global_batch

    def patch_for(self, arch: Architecture) -> tuple[int, int, int]:
        """The architecture's patch decision, or the objective's fixed patch size."""
        return self.paths.patch_for(arch)

    @property
    def reward_cases(self) -> list[PreprocessedCase]:
        """The validation cases a trial's reward is scored on (``settings.objectives.reward_cases`` first)."""
        return self.paths.cases_for(all_cases=False)

    @property
    def finetune_cases(self) -> list[PreprocessedCase] | None:
        """What the fine-tuning trial trains on (``None``: the training cases)."""
        return self.paths.finetune_cases

    @property
    def planned_steps(self) -> int | None:
        """Length of the planned search in steps (``None`` while the trial count is unknown)."""
        if self.planned_trials is None:
            return None
        return (
            self.settings.training.warmup_steps
            + self.planned_trials * self.settings.training.steps_per_trial
            + self.settings.finetune.steps
        )

    def train(
        self,
        arch: Architecture,
        steps: int,
        *,
        start: int,
        step: int = 0,
        finetune: bool = False,
        resumed: bool = False,
        teacher: Architecture | None = None,
    ) -> float:
        """Train the shared weights along ``arch``; returns the mean loss.

        ``step`` is the first step's place in the planned search (for the learning-rate schedule
        over :attr:`planned_steps`); ``finetune``: the fine-tuning trial (``resumed``: a later part
        of it); ``teacher``: the path ``arch`` distils from (see :meth:`PathWork.train
        <ronas_optuna.pathwork.PathWork.train>`).
        """
        return self.work.train(
            arch,
            steps,
            start=start,
            step=step,
            total=self.planned_steps,
            finetune=finetune,
            resumed=resumed,
            teacher=teacher,
        )

    def anchor_path(self) -> Architecture | None:
        """The path the supernet levers serve (``settings.training.anchor``): the best trial's so
        far (``None`` before the first), or the space's DynUNet-like member."""
        if self.settings.training.anchor == "handmade":
            return self.supernet.space.handmade()
        if self.best_snapshot is None:
            return None
        return Architecture.from_code(self.supernet.space, self.best_snapshot["arch"])

    def teacher_for(self, arch: Architecture) -> Architecture | None:
        """The path a search trial of ``arch`` distils from: the anchor path, unless it is ``arch``
        itself, there is none yet, or distillation is off (the fine-tuning distils from none)."""
        if self.settings.training.distill_weight <= 0:
            return None
        anchor = self.anchor_path()
        return None if anchor is None or anchor == arch else anchor

    def anchor_after(self, trial: optuna.Trial) -> None:
        """Anchoring: after every ``anchor_every``-th trial trained (not the fine-tuning), train the
        anchor path ``steps_per_trial`` steps on a patch stream of its own. A failed step (a
        non-finite loss, out of memory) puts the path back and is recorded on ``trial``, which
        keeps its value."""
        t = self.settings.training
        if t.anchor_every <= 0 or self.trials_trained % t.anchor_every:
            return
        arch = self.anchor_path()
        if arch is None or trial.user_attrs.get(ATTR_PHASE) in PHASES_FINETUNE:
            return
        nth = self.trials_trained // t.anchor_every - 1
        step = t.warmup_steps + (trial.number + 1) * t.steps_per_trial  # the schedule's, after the trial
        snap = self.work.begin_trial(arch)
        try:
            start = _ANCHOR_STREAM + nth * t.steps_per_trial * self.global_batch
            self.train(arch, t.steps_per_trial, start=start, step=step)
        except Exception as e:
            self.work.undo_trial(arch, snap, e)
            if not trial_failed(e):
                raise
            trial.set_user_attr(ATTR_ANCHOR_FAIL, _failure_reason(e))
            return
        trial.set_user_attr(ATTR_ANCHOR, arch.code)

    def validate(self, arch: Architecture, *, all_cases: bool = False) -> DiceResult:
        """Dice of ``arch`` on the shared weights: the trial's reward cases, or ``all_cases``."""
        return self.work.validate(arch, all_cases=all_cases)

    def warmup(self) -> None:
        """Train the remaining warm-up steps along uniformly random (or fair) architectures."""
        rng = np.random.default_rng([self.trainer.seed, 7])
        space = self.supernet.space
        while self.warmup_done < self.settings.training.warmup_steps:
            if self.settings.training.warmup_sampling == "fair":
                arch = space.fair_sample(self.warmup_done, seed=self.trainer.seed)
            else:
                arch = space.sample(rng)
            self.train(
                arch, 1, start=_WARMUP_STREAM + self.warmup_done * self.global_batch, step=self.warmup_done
            )
            self.warmup_done += 1
        self.save()

    # ------------------------------------------------------------------ the trial
    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        self._clock = _Clock()
        if trial.datetime_start is not None:  # Optuna sampled the relative params when it began
            self._clock.add("sampler", (datetime.now() - trial.datetime_start).total_seconds())
        if self.warmup_done < self.settings.training.warmup_steps:
            with self._clock("warmup"):
                self.warmup()
        with self._clock("sampler"):
            arch = self.supernet.space.suggest(trial)
        t0 = time.perf_counter()
        trial.set_user_attr(ATTR_ARCH, arch.code)
        with self._clock("measure"):
            cost = self.cost_of(arch)
        record_cost(trial, cost, self.patch_for(arch))
        budget = self.settings.objectives.memory_budget_gb
        if budget is not None and record_budget(trial, cost.memory_gb, budget):  # not trained
            trial.set_user_attr(ATTR_SECONDS, time.perf_counter() - t0)
            return self._values(self.budget_penalty, cost)
        snap, progress = self.work.begin_trial(arch), self.state.finetune_progress
        if self.trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.trainer.device)
        try:
            loss, result = self._train_and_validate(trial, arch)
        except optuna.TrialPruned:
            self.trials_trained += 1
            raise
        except Exception as e:  # the path's weights go back to what they were, whatever happened
            self.work.undo_trial(arch, snap, e)
            self.state.finetune_progress = progress  # as the weights are
            if not trial_failed(e):
                raise  # a bug, not a failed trial: it keeps its traceback
            trial.set_user_attr(ATTR_FAIL, _failure_reason(e))
            return self._values(float("nan"), cost)
        self.trials_trained += 1
        self._finish(trial, arch, loss, result, time.perf_counter() - t0)
        trial.set_user_attr(ATTR_TIME, self._clock.rounded())
        return self._values(result.mean, cost)

    def _values(self, dice: float, cost: Cost) -> float | tuple[float, float]:
        """What the trial returns: Dice, or ``(Dice, cost)`` for a two-objective study."""
        names = self.settings.objectives.metrics.split(",")
        if len(names) == 1:
            return dice
        return dice, cost.memory_gb if names[1] == "memory" else float(cost.latency_ms or 0.0)

    def cost_of(self, arch: Architecture) -> Cost:
        """``arch``'s measured cost at its patch and the batch (once per process: :attr:`costs`)."""
        patch = self.patch_for(arch)
        latency = "latency" in self.settings.objectives.metrics
        device = self.trainer.device
        shape = (self.batch_size, self.supernet.in_channels, *patch)
        sn = self.supernet
        return self.costs.get(
            (arch.code, shape, latency),
            lambda: measure(
                lambda: sn.derive(arch),
                shape,
                sn.num_classes,
                device=device,
                amp=self.trainer.amp,
                amp_dtype=self.trainer.amp_dtype,
                optimizer=self.trainer.optimizer_name,
                latency=latency,
                flops=architecture_flops(arch, patch, sn.in_channels, sn.num_classes),  # no forward pass
            ),
        )

    def _train_and_validate(self, trial: optuna.Trial, arch: Architecture) -> tuple[float, DiceResult]:
        """Train in ``prune_checks + 1`` chunks, reporting Dice to the pruner between them."""
        steps = int(trial.user_attrs.get(ATTR_STEPS, self.settings.training.steps_per_trial))
        first = (
            self.settings.training.warmup_steps + trial.number * self.settings.training.steps_per_trial
        )  # in the planned search
        start = trial.number * self.settings.training.steps_per_trial * self.global_batch
        if trial.user_attrs.get(ATTR_PHASE) in PHASES_FINETUNE:
            return self._finetune(trial, arch, steps, first=first, start=start)
        self.state.finetune_progress = None  # the weights move on: a stopped fine-tuning is over
        checks = max(0, self.prune_checks)
        chunks = [steps // (checks + 1)] * checks
        chunks.append(steps - sum(chunks))
        teacher = self.teacher_for(arch)
        loss, done = 0.0, 0
        for i, n in enumerate(chunks):
            if n == 0:
                continue
            with self._clock("train"):
                at = start + done * self.global_batch
                loss = self.train(arch, n, start=at, step=first + done, teacher=teacher)
            done += n
            if i < len(chunks) - 1:
                with self._clock("validate"):
                    dice = self.validate(arch).mean
                trial.report(dice, done)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {done} with Dice {dice:.4f}")
        with self._clock("validate"):
            return loss, self.validate(arch)

    def _finetune(
        self, trial: optuna.Trial, arch: Architecture, steps: int, *, first: int, start: int
    ) -> tuple[float, DiceResult]:
        """The fine-tuning trial: ``steps`` steps along ``arch`` in parts of
        ``finetune_checkpoint_steps``, each followed by a checkpoint that records the progress; when
        the loaded checkpoint holds a fine-tuning of the same path and length, it goes on from there
        (recorded as ``resumed_at_step``) with the same patches, schedule and Adam state."""
        if self.planned_steps is not None:  # the plan's last steps, however many trials ran
            first = self.planned_steps - self.settings.finetune.steps
        progress = self.state.finetune_progress
        if progress is not None and (progress.arch, progress.steps) == (arch.code, steps):
            trial.set_user_attr(ATTR_RESUMED, progress.done)
            log.info("fine-tuning %s goes on from step %d of %d", arch.code, progress.done, steps)
        else:
            progress = FinetuneProgress(arch=arch.code, steps=steps, done=0, start=start, loss_sum=0.0)
        every = self.settings.finetune.checkpoint_steps
        if every < 1 or self.settings.finetune.average > 0 or self._store is None:
            every = steps  # one part (an average over the trial is not checkpointed)
        while progress.done < steps:
            n = min(every, steps - progress.done)
            with self._clock("train"):
                loss = self.train(
                    arch,
                    n,
                    start=progress.start + progress.done * self.global_batch,
                    step=first + progress.done,
                    finetune=True,
                    resumed=progress.done > 0,
                )
            progress = dataclasses.replace(
                progress, done=progress.done + n, loss_sum=progress.loss_sum + loss * n
            )
            if progress.done < steps:
                self.state.finetune_progress = progress
                with self._clock("checkpoint"):
                    self.save(background=True)
        self.state.finetune_progress = None
        with self._clock("validate"):
            return progress.loss_sum / steps, self.validate(arch)

    def _finish(
        self,
        trial: optuna.Trial,
        arch: Architecture,
        loss: float,
        result: DiceResult,
        seconds: float,
    ) -> None:
        """User attrs of a successful trial, the best-weights snapshot, hooks, anchoring, checkpoint
        (every ``checkpoint_every`` trials, and after the fine-tuning)."""
        trial.set_user_attr(ATTR_TRAIN_LOSS, round(loss, 5))
        trial.set_user_attr(ATTR_DICE_PER_CLASS, [round(d, 5) for d in result.per_class])
        trial.set_user_attr(ATTR_SECONDS, round(seconds, 3))
        device = self.trainer.device
        if device.type == "cuda":  # the search process's peak: the whole supernet's weights and state
            trial.set_user_attr(ATTR_PEAK_MEMORY, round(torch.cuda.max_memory_allocated(device) / 1e9, 4))
        self.state.best_snapshot = best_after(
            self.best_snapshot, trial=trial.number, value=result.mean, arch=arch, supernet=self.supernet
        )
        with self._clock("hooks"):
            for hook in self.hooks:
                hook(trial, arch, result.mean, self.supernet.path(arch), self.patch_for(arch))
        with self._clock("anchor"):
            self.anchor_after(trial)
        every = self.settings.training.checkpoint_every
        if self.checkpoint is not None and (
            self.trials_trained % every == 0 or trial.user_attrs.get(ATTR_PHASE) in PHASES_FINETUNE
        ):
            with self._clock("checkpoint"):
                try:
                    self.save(background=True)
                except WriteError as e:  # the trial stands; the search stops after it
                    self.write_error = e
                    trial.study.stop()


class _Clock:
    """Seconds per phase of one trial (``with clock("train"): ...``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - t)

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


def _failure_reason(e: Exception) -> str:
    if isinstance(e, TrialFailure):
        return str(e)
    if isinstance(e, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()
        return f"CUDA out of memory: {str(e).splitlines()[0]}"
    return f"{type(e).__name__}: {e}"
