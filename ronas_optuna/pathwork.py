"""What every rank of a search does to the shared weights: train a path, validate it, and keep or
put back its weights around a trial.

:class:`PathWork` is the objective's hands: :class:`~ronas_optuna.NASObjective` decides what a
trial trains and for how long, and this class does it on one process. In a data-parallel job the
leader's ``PathWork`` is wrapped by :class:`~ronas_optuna.distributed.Leader`, which sends each call
to the other ranks first (the follower ranks run the same calls on their own ``PathWork``); the
objective sees the same four calls either way and knows nothing of ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, Protocol

from .data.msd import PreprocessedCase
from .evaluator import DiceResult, Evaluator
from .schedule import lr_factor
from .settings import SearchSettings
from .space import Architecture
from .supernet import Supernet
from .trainer import PathTrainer, WeightAverage

__all__ = ["PathWork", "Work"]


class Work(Protocol):
    """The four calls a trial makes on the shared weights (:class:`PathWork`, or a
    :class:`~ronas_optuna.distributed.Leader` around one)."""

    def train(
        self,
        arch: Architecture,
        steps: int,
        *,
        start: int,
        step: int = 0,
        total: int | None = None,
        finetune: bool = False,
        resumed: bool = False,
        teacher: Architecture | None = None,
    ) -> float: ...

    def validate(self, arch: Architecture, *, all_cases: bool = False) -> DiceResult: ...

    def begin_trial(self, arch: Architecture) -> Any: ...

    def undo_trial(self, arch: Architecture, snap: Any, error: BaseException) -> None: ...


class PathWork:
    """Train and validate paths of ``supernet`` on one process.

    Args:
        supernet: The shared weights.
        trainer: Trains them on the training cases (its ``team`` averages gradients over ranks).
        evaluator: Scores paths on the validation cases.
        settings: The learning-rate schedule, the fine-tuning's optimizer and averaging,
            distillation's weight and the reward's case count.
        patch_size: Patch size when the space has no ``patch`` decision.
        finetune_cases: What the fine-tuning trains on (``None``: the training cases).
    """

    def __init__(
        self,
        supernet: Supernet,
        trainer: PathTrainer,
        evaluator: Evaluator,
        *,
        settings: SearchSettings,
        patch_size: tuple[int, int, int] | None = None,
        finetune_cases: Sequence[PreprocessedCase] | None = None,
    ) -> None:
        self.supernet, self.trainer, self.evaluator = supernet, trainer, evaluator
        self.settings = settings
        self.patch_size = patch_size
        self.finetune_cases = list(finetune_cases) if finetune_cases is not None else None
        n = settings.objectives.reward_cases
        #: The cases a trial's reward is scored on (a fixed subset; export scores all of them).
        self.reward_cases = evaluator.cases[:n] if n else evaluator.cases

    @property
    def global_batch(self) -> int:
        """Patches per step over all ranks (a trial's share of the patch stream)."""
        team = self.trainer.team
        return self.trainer.batch_size * (team.world if team else 1)

    def patch_for(self, arch: Architecture) -> tuple[int, int, int]:
        """The architecture's patch decision, or the fixed patch size."""
        p = arch.patch_size or self.patch_size
        assert p is not None
        return (int(p[0]), int(p[1]), int(p[2]))

    def cases_for(self, *, all_cases: bool) -> list[PreprocessedCase]:
        """The validation cases of a trial's reward, or all of them."""
        return list(self.evaluator.cases if all_cases else self.reward_cases)

    def train(
        self,
        arch: Architecture,
        steps: int,
        *,
        start: int,
        step: int = 0,
        total: int | None = None,
        finetune: bool = False,
        resumed: bool = False,
        teacher: Architecture | None = None,
    ) -> float:
        """Train the shared weights along ``arch`` for ``steps`` steps; returns the mean loss.

        Args:
            arch: The path.
            steps: Optimizer steps.
            start: The first patch's place in the patch stream.
            step: The first step's place in the planned search (for the learning-rate schedule).
            total: The planned search's length in steps (``None``: unknown, constant rate).
            finetune: The fine-tuning: trained on ``finetune_cases`` when there are some, from
                fresh Adam moments when ``finetune_optimizer`` is ``"fresh"``, and ending with the
                weights' moving average when ``finetune_average`` is set.
            resumed: A later part of the same fine-tuning (its Adam state goes on, whatever
                ``finetune_optimizer`` says).
            teacher: The path ``arch`` distils from (with ``distill_weight``).
        """
        cases = self.finetune_cases if finetune and self.finetune_cases else None
        with self.trainer.training_on(cases) if cases else nullcontext():
            return self._train(
                arch, steps, start, step, total, finetune=finetune, resumed=resumed, teacher=teacher
            )

    def _train(
        self,
        arch: Architecture,
        steps: int,
        start: int,
        step: int,
        total: int | None,
        *,
        finetune: bool,
        resumed: bool,
        teacher: Architecture | None,
    ) -> float:
        s = self.settings
        net = self.supernet.path(arch).train()
        params = net.parameters_on_path()
        if finetune and not resumed and s.finetune.optimizer == "fresh":
            self.trainer.forget(params)
        average = s.finetune.average if finetune else 0.0

        def factor(i: int) -> float:
            return lr_factor(s.training.lr_schedule, step + i, total, finetune_steps=s.finetune.steps)

        scheduled = s.training.lr_schedule != "constant" and total is not None
        avg = WeightAverage(params, average) if average > 0 else None
        loss = self.trainer.train(
            net,
            params,
            self.patch_for(arch),
            steps,
            start=start,
            lr_factor=factor if scheduled else None,
            after_step=avg.update if avg else None,
            teacher=self.supernet.path(teacher) if teacher is not None else None,
            distill_weight=s.training.distill_weight,
        )
        if avg is not None:
            avg.copy_to_parameters()
        return loss

    def overlap_for(self, *, all_cases: bool) -> float | None:
        """The sliding-window overlap of a trial's reward (``reward_overlap``), or the evaluator's
        own for ``all_cases`` (``None``)."""
        return None if all_cases else self.settings.objectives.reward_overlap

    def patches_for(self, *, all_cases: bool) -> int:
        """Fixed patches per case a trial's reward is scored on (``reward_patches``; 0: whole
        cases), or 0 for ``all_cases``."""
        return 0 if all_cases else self.settings.objectives.reward_patches

    def validate(self, arch: Architecture, *, all_cases: bool = False) -> DiceResult:
        """Dice of ``arch`` on the shared weights: the reward's cases at the reward's overlap (or
        patches), or ``all_cases`` at the evaluator's overlap."""
        cases, overlap = self.cases_for(all_cases=all_cases), self.overlap_for(all_cases=all_cases)
        patches = self.patches_for(all_cases=all_cases)
        return DiceResult.from_per_case(self.per_case(arch, cases, overlap=overlap, patches=patches))

    def per_case(
        self,
        arch: Architecture,
        cases: Sequence[PreprocessedCase],
        *,
        overlap: float | None = None,
        patches: int = 0,
    ) -> list[list[float]]:
        """Per-class Dice of ``arch`` on each of ``cases`` (none: an empty list): whole cases, or
        ``patches`` fixed patches of each."""
        if not cases:
            return []
        net, patch = self.supernet.path(arch), self.patch_for(arch)
        if patches:
            seed = self.settings.seed
            return self.evaluator.evaluate_patches(net, patch, patches, seed=seed, cases=cases).per_case
        return self.evaluator.evaluate(net, patch, cases=cases, overlap=overlap).per_case

    def begin_trial(self, arch: Architecture) -> Any:
        """The weights and optimizer state of ``arch``'s path, to put back if its trial fails."""
        return self.trainer.snapshot(self.supernet.path_parameters(arch))

    def undo_trial(self, arch: Architecture, snap: Any, error: BaseException) -> None:
        """Put ``arch``'s path back to ``snap`` after its trial failed with ``error``."""
        self.trainer.restore(snap)
