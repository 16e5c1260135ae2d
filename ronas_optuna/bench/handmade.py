"""The hand-made reference: MONAI's DynUNet with nnU-Net's defaults, trained for a time budget.

nnU-Net's rules for a 3D full-resolution network at the plan's (isotropic) spacing: 3x3x3 kernels,
a stride-2 pooling on every axis while the feature map stays at least 4 voxels, 32 filters doubled
per stage up to 320, instance norm, leaky ReLU, deep supervision. Two training recipes
(:data:`RECIPES`): nnU-Net's own (SGD, Nesterov momentum 0.99, lr 0.01 with the poly schedule,
weight decay 3e-5) and Adam at a constant rate; the benchmark picks one per fold by validation Dice.
Needs the ``bench`` extra (MONAI).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.msd import PreprocessedCase
from ..errors import SettingsError, UnreadableCheckpoint
from ..files import atomic_torch_save, previous_path, read_checkpoint
from ..trainer import PathTrainer

log = logging.getLogger(__name__)
#: The format of :func:`train_for_seconds`'s checkpoint.
_FORMAT = "ronas_optuna.bench.alone/1"


@dataclass(frozen=True)
class Recipe:
    """How a reference network trains: optimizer, base learning rate, and whether the rate follows
    nnU-Net's poly schedule ``lr * (1 - t) ** 0.9`` over the fraction ``t`` of the time budget."""

    name: str
    optimizer: str
    lr: float
    poly: bool

    def lr_at(self, fraction: float) -> float:
        return self.lr * (1.0 - min(max(fraction, 0.0), 1.0)) ** 0.9 if self.poly else self.lr


#: nnU-Net's recipe, and Adam at a constant 1e-3 (what this benchmark used before).
RECIPES = {
    "nnunet-sgd": Recipe("nnunet-sgd", "sgd", 1e-2, poly=True),
    "adam": Recipe("adam", "adam", 1e-3, poly=False),
}


def nnunet_strides(patch: Sequence[int], min_size: int = 4, max_stages: int = 5) -> list[list[int]]:
    """Per stage, per axis: 2 while the axis stays at least ``min_size`` after pooling, else 1."""
    size = [int(p) for p in patch]
    strides = [[1, 1, 1]]
    for _ in range(max_stages):
        step = [2 if s // 2 >= min_size and s % 2 == 0 else 1 for s in size]
        if step == [1, 1, 1]:
            break
        strides.append(step)
        size = [s // f for s, f in zip(size, step)]
    return strides


class DeepSupervisionList(nn.Module):
    """DynUNet stacks its deep-supervision heads in training; the loss takes a list."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        out = self.net(x)
        return list(out.unbind(1)) if self.training and out.dim() == 6 else out


def dynunet(in_channels: int, num_classes: int, patch: Sequence[int]) -> nn.Module:
    """MONAI's DynUNet configured as nnU-Net would for ``patch`` at isotropic spacing."""
    try:
        from monai.networks.nets import DynUNet
    except ImportError:  # pragma: no cover - depends on the optional extra
        raise SettingsError("the hand-made reference needs MONAI: pip install -e '.[bench]'") from None
    strides = nnunet_strides(patch)
    filters = [min(32 * 2**i, 320) for i in range(len(strides))]
    net = DynUNet(
        3,
        in_channels,
        num_classes,
        kernel_size=[[3, 3, 3]] * len(strides),
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        norm_name=("instance", {"affine": True}),
        act_name=("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
        deep_supervision=len(strides) > 2,
        deep_supr_num=min(2, len(strides) - 2) if len(strides) > 2 else 1,
        res_block=False,
    )
    return DeepSupervisionList(net)


def train_for_seconds(
    net: nn.Module,
    cases: Sequence[PreprocessedCase],
    patch: Sequence[int],
    seconds: float,
    *,
    batch_size: int,
    recipe: Recipe,
    device: str | torch.device = "cpu",
    seed: int = 0,
    chunk: int = 5,
    clock: Callable[[], float] = time.perf_counter,
    monitor: Callable[[nn.Module], float] | None = None,
    points: int = 8,
    checkpoint: str | os.PathLike[str] | None = None,
    tag: str = "",
    save_every: float = 300.0,
) -> tuple[nn.Module, int, list[tuple[int, float]]]:
    """Train ``net`` alone with ``recipe`` until ``seconds`` have passed on ``clock`` (checked, and
    the poly rate updated, every ``chunk`` steps).

    ``monitor`` scores the network (in eval mode) after every ``1/points`` of the budget, the
    last at its end, outside the budget: its time is not counted.

    ``checkpoint``: every ``save_every`` seconds on ``clock`` the weights, optimizer state, steps,
    time spent and curve are written there (two generations); a later call with the same
    ``checkpoint`` and ``tag`` (what is trained, and how) goes on from the newest readable one, its
    clock continuing from the time spent, and the files are removed when the budget is spent. A
    checkpoint of another ``tag`` is not resumed.

    Returns the network in eval mode, the number of steps it took, and the learning curve
    ``[(steps, score), ...]`` (empty without ``monitor``).
    """
    net = net.to(device).train()
    params = list(net.parameters())
    trainer = PathTrainer(
        params,
        cases,
        batch_size=batch_size,
        lr=recipe.lr,
        device=device,
        seed=seed,
        optimizer=recipe.optimizer,
    )
    run = _Run.start(net, trainer, clock, checkpoint, tag, seconds)
    saved = run.elapsed()
    while (elapsed := run.elapsed()) < seconds:
        if elapsed >= run.next_point * seconds / points:
            run.score(monitor)
            run.next_point += 1
        trainer.set_lr(recipe.lr_at(elapsed / seconds))
        trainer.train(net, params, patch, chunk, start=run.steps * batch_size)
        run.steps += chunk
        if checkpoint is not None and run.elapsed() - saved >= save_every:
            run.save()
            saved = run.elapsed()
    run.score(monitor)
    run.remove_checkpoint()
    return net.eval(), run.steps, run.curve


@dataclass
class _Run:
    """A reference network's training on its budget clock: steps, learning curve, the clock's
    start (moved on by the time the monitor takes) and its checkpoint."""

    net: nn.Module
    trainer: PathTrainer
    clock: Callable[[], float]
    checkpoint: Path | None
    tag: str
    budget: float
    t0: float
    steps: int = 0
    next_point: int = 1
    curve: list[tuple[int, float]] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        net: nn.Module,
        trainer: PathTrainer,
        clock: Callable[[], float],
        checkpoint: str | os.PathLike[str] | None,
        tag: str,
        budget: float,
    ) -> _Run:
        """From the newest readable checkpoint of ``tag`` (its clock going on from the time it had
        spent), or from scratch; ``budget``: the seconds it trains for (recorded for a reader)."""
        done = _resume(checkpoint, tag, net, trainer)
        return cls(
            net,
            trainer,
            clock,
            Path(checkpoint) if checkpoint is not None else None,
            tag,
            budget,
            t0=clock() - done.get("elapsed", 0.0),
            steps=done.get("steps", 0),
            next_point=done.get("next_point", 1),
            curve=[(int(a), float(b)) for a, b in done.get("curve", [])],
        )

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def score(self, monitor: Callable[[nn.Module], float] | None) -> None:
        """A point of the learning curve, off the budget (the clock's start moves by its time)."""
        if monitor is None:
            return
        c = self.clock()
        self.curve.append((self.steps, round(float(monitor(self.net.eval())), 5)))
        self.net.train()
        self.t0 += self.clock() - c

    def save(self) -> None:
        """Weights, optimizer state and counters, two generations."""
        payload = {
            "format": _FORMAT,
            "tag": self.tag,
            "net": self.net.state_dict(),
            "optimizer": self.trainer.state_dict(),
            "steps": self.steps,
            "elapsed": self.elapsed(),
            "budget": self.budget,
            "next_point": self.next_point,
            "curve": [list(c) for c in self.curve],
        }
        atomic_torch_save(payload, self.checkpoint, keep_previous=True)  # type: ignore[arg-type]

    def remove_checkpoint(self) -> None:
        """The budget is spent: nothing is left to resume."""
        if self.checkpoint is not None:
            for path in (self.checkpoint, previous_path(self.checkpoint)):
                path.unlink(missing_ok=True)


def training_progress(checkpoint: str | os.PathLike[str]) -> tuple[float, float | None] | None:
    """Seconds spent and the budget in seconds (``None`` when the checkpoint does not record it) of
    the :func:`train_for_seconds` run whose checkpoint this is, from its newest readable
    generation; ``None`` without one."""
    for path in (Path(checkpoint), previous_path(checkpoint)):
        try:
            payload = read_checkpoint(path) if path.exists() else {}
        except UnreadableCheckpoint:
            continue
        if payload.get("format") == _FORMAT:
            budget = payload.get("budget")
            return float(payload["elapsed"]), float(budget) if budget is not None else None
    return None


def _resume(
    checkpoint: str | os.PathLike[str] | None, tag: str, net: nn.Module, trainer: PathTrainer
) -> dict[str, Any]:
    """Load the newest readable generation of ``checkpoint`` of this ``tag`` into ``net`` and
    ``trainer``; returns its counters (empty: start from scratch)."""
    if checkpoint is None:
        return {}
    for path in (Path(checkpoint), previous_path(checkpoint)):
        if not path.exists():
            continue
        try:
            payload = read_checkpoint(path)
        except UnreadableCheckpoint as e:
            log.warning("%s; not resumed", e)
            continue
        if payload.get("format") != _FORMAT or payload.get("tag") != tag:
            log.warning("%s: a checkpoint of another training; starting from scratch", path)
            return {}
        net.load_state_dict(payload["net"])
        trainer.load_state_dict(payload["optimizer"])
        log.info("%s: resumed at step %d", path, payload["steps"])
        return payload
    return {}
