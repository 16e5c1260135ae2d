"""What a search keeps between trials and between processes: its counters, the best trial's own
weights, how far a fine-tuning trial got, and the checkpoint generations that carry them with the
shared weights.

:class:`SearchState` is plain data. :class:`SearchCheckpoint` writes it beside the supernet and its
optimizer state, atomically, in two generations (the newest and the one before it), and reads the
newest generation that loads, falling back to the previous one in one logged line.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError, UnreadableCheckpoint
from .files import BackgroundWriter, previous_path
from .space import Architecture

if TYPE_CHECKING:
    from .supernet import Supernet
    from .trainer import PathTrainer

__all__ = ["FRESH_HINT", "FinetuneProgress", "SearchCheckpoint", "SearchState", "best_after"]

log = logging.getLogger(__name__)
#: How a user starts the shared weights over when no checkpoint generation is readable.
FRESH_HINT = "start the weights over with --fresh-supernet (the study's trials are kept)"


@dataclass
class SearchState:
    """The search's counters and best weights (they travel in the checkpoint's ``extra``).

    Attributes:
        trials_trained: Trials whose steps trained the shared weights.
        warmup_done: Warm-up steps taken (the warm-up runs once).
        best_snapshot: The best trial's own weights as they were when it scored:
            ``{"trial", "value", "arch" (code), "state" (derived state dict, CPU)}``.
        finetune_progress: A fine-tuning trial under way when the checkpoint was written
            (:class:`FinetuneProgress`); ``None`` between trials.
    """

    trials_trained: int = 0
    warmup_done: int = 0
    best_snapshot: dict[str, Any] | None = None
    finetune_progress: FinetuneProgress | None = None

    def to_extra(self) -> dict[str, Any]:
        progress = self.finetune_progress
        return {
            "trials_trained": self.trials_trained,
            "warmup_done": self.warmup_done,
            "best_snapshot": self.best_snapshot,
            "finetune_progress": dataclasses.asdict(progress) if progress is not None else None,
        }

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> SearchState:
        progress = extra.get("finetune_progress")
        return cls(
            int(extra.get("trials_trained", 0)),
            int(extra.get("warmup_done", 0)),
            extra.get("best_snapshot"),
            FinetuneProgress(**progress) if progress is not None else None,
        )


@dataclass(frozen=True)
class FinetuneProgress:
    """How far a fine-tuning trial got (``finetune_checkpoint_steps``): the next fine-tuning trial of
    the same path and length goes on from here.

    Attributes:
        arch: The fine-tuned path's code.
        steps: The trial's length in steps.
        done: Steps taken (the checkpoint's weights and Adam state are those after them).
        start: The trial's first patch in the patch stream (a resumed trial keeps its patches).
        loss_sum: The summed mean losses of the steps taken, weighted by their count.
    """

    arch: str
    steps: int
    done: int
    start: int
    loss_sum: float


def best_after(
    snapshot: dict[str, Any] | None, *, trial: int, value: float, arch: Architecture, supernet: Supernet
) -> dict[str, Any] | None:
    """``snapshot``, or a new one of ``arch``'s weights when ``value`` beats it (the shared weights
    keep moving after a trial, so a trainer's best checkpoint needs its own copy)."""
    if snapshot is not None and value <= snapshot["value"]:
        return snapshot
    state = supernet.derive(arch).state_dict()  # derive() already copies
    return {
        "trial": trial,
        "value": value,
        "arch": arch.code,
        "state": {k: v.detach().cpu() for k, v in state.items()},
    }


class SearchCheckpoint:
    """The supernet, its optimizer state and a :class:`SearchState` at ``path`` (two generations)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._writer = BackgroundWriter(keep_previous=True)  # the last two checkpoints are kept

    def exists(self) -> bool:
        return self.path.exists() or previous_path(self.path).exists()

    def load(self, supernet: Supernet, trainer: PathTrainer) -> SearchState:
        """Load the newest readable generation into ``supernet`` and ``trainer``: ``path``, else
        the previous one (said in one line); a checkpoint of another configuration is refused as
        it is."""
        from .supernet import Supernet

        load = functools.partial(Supernet.load_checkpoint, expect=supernet, map_location=trainer.device)
        prev = previous_path(self.path)
        try:
            ckpt = load(self.path)
        except UnreadableCheckpoint as newest:
            if not prev.exists():
                raise CheckpointError(f"{newest}; {FRESH_HINT}") from None
            try:
                ckpt = load(prev)
            except UnreadableCheckpoint as older:
                raise CheckpointError(f"{newest}, and {older}; {FRESH_HINT}") from None
            log.warning("%s; resuming from the previous checkpoint %s", newest, prev.name)
        supernet.load_state_dict(ckpt.net.state_dict())
        if "optimizer" in ckpt.extra:
            try:
                trainer.load_state_dict(ckpt.extra["optimizer"])
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{self.path}: optimizer state does not fit ({e})") from None
        return SearchState.from_extra(ckpt.extra)

    def save(self, supernet: Supernet, trainer: PathTrainer, state: SearchState, *, background: bool) -> None:
        """Write atomically. ``background``: copy the state now and write it on a thread while
        training goes on (a write still running is waited for first, so the file is never two
        trials behind); otherwise wait for any pending write, then write. A write that fails
        raises :class:`~ronas_optuna.errors.WriteError` (here or at the next save)."""
        payload = supernet.checkpoint_payload(extra={"optimizer": trainer.state_dict(), **state.to_extra()})
        self._writer.flush()
        self._writer.submit(payload, self.path)
        if not background:
            self._writer.flush()
