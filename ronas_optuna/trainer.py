"""The one training loop: patches in, Adam steps out, for a supernet path or a standalone network.

:class:`PathTrainer` owns an optimizer over a set of parameters and trains any forward function on
the patch stream of a case list. The search trains the supernet along one architecture per trial
(``trainer.train(supernet.path(arch), ...)``); fine-tuning and the from-scratch reference train a
standalone :class:`~ronas_optuna.RONASNet` the same way. It is the only place in the package that
calls ``backward()``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .data.msd import PreprocessedCase
from .data.patches import PatchDataset, foreground_locations, make_loader
from .device import resolve_device
from .errors import DataError
from .losses import deep_supervision_loss, distillation_loss
from .team import RankFailure, Team, together

Forward = Callable[[torch.Tensor], "torch.Tensor | list[torch.Tensor]"]


class TrialFailure(RuntimeError):
    """A recoverable training failure (e.g. a non-finite loss); the trial becomes FAIL."""


def trial_failed(e: BaseException) -> bool:
    """Whether ``e`` means the trial failed (the study goes on) rather than a bug: a non-finite loss
    (:class:`TrialFailure`), a case that cannot be used, running out of memory on the device or the
    host, or any of these on another rank (:class:`~ronas_optuna.team.RankFailure`)."""
    if isinstance(e, (TrialFailure, RankFailure, DataError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA devices that support it, else fp16 (which needs a gradient scaler)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


@dataclass
class Snapshot:
    """Values and optimizer state of some parameters, to undo a failed trial."""

    entries: list[tuple[nn.Parameter, torch.Tensor, dict[str, Any]]]


#: The optimizers a :class:`PathTrainer` runs: Adam (the search's), or nnU-Net's SGD with Nesterov
#: momentum 0.99.
OPTIMIZERS = ("adam", "sgd")


class PathTrainer:
    """Adam (or nnU-Net's SGD) on a parameter set, trained on random patches of ``cases``.

    Args:
        parameters: Everything the optimizer may update (the whole supernet, or one network).
        cases: Preprocessed training cases.
        batch_size: Patches per step.
        lr: Learning rate.
        weight_decay: Weight decay.
        device: Where batches go.
        amp: Mixed precision on CUDA (ignored on the CPU).
        clip_norm: Gradient-norm clip of the trained parameters (``None``: no clipping).
        seed: Seed of the patch stream; step ``i`` of a call with ``start`` depends only on
            ``(seed, start + i * batch_size)``.
        locations: Foreground locations of ``cases`` (computed per call when ``None``).
        num_workers: Loader workers.
        channels_last: ``channels_last_3d`` inputs on CUDA.
        team: This rank's place in a data-parallel job (:mod:`~ronas_optuna.distributed`): its
            share of the patch stream, the batch Dice over all ranks, averaged gradients.
        optimizer: ``"adam"`` or ``"sgd"`` (Nesterov momentum 0.99, as nnU-Net trains).
    """

    def __init__(
        self,
        parameters: Iterable[nn.Parameter],
        cases: Sequence[PreprocessedCase],
        *,
        batch_size: int,
        lr: float,
        weight_decay: float = 3e-5,
        device: str | torch.device = "cpu",
        amp: bool = True,
        clip_norm: float | None = 12.0,
        seed: int = 0,
        locations: list[dict[int, np.ndarray]] | None = None,
        num_workers: int = 0,
        channels_last: bool = False,
        team: Team | None = None,
        optimizer: str = "adam",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        self.cases = list(cases)
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.amp = amp and self.device.type == "cuda"
        self.amp_dtype = amp_dtype(self.device)
        self.clip_norm = clip_norm
        self.seed = seed
        self.locations = locations
        self.num_workers = num_workers
        self.channels_last = channels_last and self.device.type == "cuda"
        self.team = team
        self.optimizer_name = optimizer
        self.optimizer: torch.optim.Optimizer
        if optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                parameters, lr=lr, momentum=0.99, nesterov=True, weight_decay=weight_decay
            )
        else:
            self.optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)

    @property
    def lr(self) -> float:
        """The base learning rate (schedules scale it per step, see :meth:`train`)."""
        return float(self.optimizer.defaults["lr"])

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next steps (``lr`` stays the base rate)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @property
    def weight_decay(self) -> float:
        return float(self.optimizer.defaults["weight_decay"])

    def train(
        self,
        forward: Forward,
        parameters: Sequence[nn.Parameter],
        patch: Sequence[int],
        steps: int,
        *,
        start: int = 0,
        lr_factor: Callable[[int], float] | None = None,
        after_step: Callable[[], None] | None = None,
        teacher: Forward | None = None,
        distill_weight: float = 0.0,
    ) -> float:
        """Train ``steps`` steps; returns the mean loss.

        Args:
            forward: Logits of a batch (a list with deep supervision); in training mode.
            parameters: The parameters this forward uses (clipped; the rest get no gradient).
            patch: Patch size ``(X, Y, Z)``.
            steps: Optimizer steps.
            start: Offset in the patch stream.
            lr_factor: Learning rate of step ``i`` of this call is ``lr * lr_factor(i)``
                (``None``: ``lr``).
            after_step: Called after every optimizer step (e.g. :meth:`WeightAverage.update`).
            teacher: With ``distill_weight``, the loss adds ``distill_weight`` times the KL
                divergence from ``teacher``'s full-resolution prediction of the same batch (run
                without gradients) to ``forward``'s (in-place distillation).
            distill_weight: Weight of the distillation term.

        Raises:
            TrialFailure: The mean loss is not finite.
        """
        ds = PatchDataset(
            self.cases,
            patch,
            length=steps * self.batch_size,
            seed=self.seed,
            start=start,
            locations=self.locations,
            shard=(self.team.rank, self.team.world, self.batch_size) if self.team else (0, 1, 1),
        )
        loader = make_loader(
            ds, self.batch_size, num_workers=self.num_workers, pin_memory=self.device.type == "cuda"
        )
        losses = []
        batches = iter(loader)
        for i in range(len(loader)):
            if lr_factor is not None:
                self.set_lr(self.lr * lr_factor(i))
            losses.append(self._step(forward, parameters, batches, teacher, distill_weight))
            if after_step is not None:
                after_step()
        mean = float(torch.stack(losses).mean())  # one host sync per call
        bad = None if math.isfinite(mean) else TrialFailure(f"non-finite training loss ({mean})")
        if self.team is not None:
            self.team.agree(None if bad is None else str(bad))
        if bad is not None:
            raise bad
        return mean

    def _step(
        self,
        forward: Forward,
        parameters: Sequence[nn.Parameter],
        batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
        teacher: Forward | None = None,
        distill_weight: float = 0.0,
    ) -> torch.Tensor:
        """One optimizer step on the next batch. With a team, the ranks agree after the local
        forward and after the backward (:func:`~ronas_optuna.team.together`), before each
        collective, so a failure on one rank fails the step on all."""
        distil = teacher is not None and distill_weight > 0

        def local_forward() -> tuple[Any, torch.Tensor, torch.Tensor | None]:
            x, y = next(batches)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.to(memory_format=torch.channels_last_3d)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                out = forward(x)
                if distil:
                    assert teacher is not None
                    with torch.no_grad():
                        return out, y, _full_resolution(teacher(x))
            return out, y, None

        out, y, target = together(self.team, local_forward, failed=trial_failed)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            loss = deep_supervision_loss(out, y, reduce=self.team.sum_tensor if self.team else None)
            if target is not None:
                loss = loss + distill_weight * distillation_loss(_full_resolution(out), target)
        together(self.team, self.scaler.scale(loss).backward, failed=trial_failed)
        if self.team is not None:
            self.team.average_gradients(parameters)
        if self.clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, self.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    @contextmanager
    def training_on(self, cases: Sequence[PreprocessedCase]) -> Iterator[None]:
        """Train on ``cases`` inside the block (same optimizer and state), then on the usual ones."""
        saved = self.cases, self.locations
        self.cases, self.locations = list(cases), foreground_locations(cases, self.seed)
        try:
            yield
        finally:
            self.cases, self.locations = saved

    # ------------------------------------------------------------------ undo
    def snapshot(self, parameters: Iterable[nn.Parameter]) -> Snapshot:
        """Copy the values and Adam state of ``parameters``."""
        entries = []
        for p in parameters:
            state = self.optimizer.state.get(p, {})
            copied = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in state.items()}
            entries.append((p, p.detach().clone(), copied))
        return Snapshot(entries)

    def restore(self, snap: Snapshot) -> None:
        """Put back what :meth:`snapshot` copied."""
        with torch.no_grad():
            for p, value, state in snap.entries:
                p.copy_(value)
                if state:
                    self.optimizer.state[p] = state
                else:
                    self.optimizer.state.pop(p, None)
        self.optimizer.zero_grad(set_to_none=True)

    def forget(self, parameters: Iterable[nn.Parameter]) -> None:
        """Drop the optimizer state (Adam's moments and step count) of ``parameters``: their next
        step starts Adam anew."""
        for p in parameters:
            self.optimizer.state.pop(p, None)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)

    # ------------------------------------------------------------------ a network of its own
    def train_alone(
        self,
        net: nn.Module,
        patch: Sequence[int],
        steps: int,
        *,
        seed: int,
        cases: Sequence[PreprocessedCase] | None = None,
    ) -> nn.Module:
        """``net`` trained on its own for ``steps`` steps (a fresh Adam) with this trainer's batch,
        learning rate, weight decay, device and precision, on ``cases`` (default: this trainer's);
        returns it in eval mode."""
        return train_network(
            net, cases if cases is not None else self.cases, patch, steps, seed=seed, **self._alone()
        )

    def train_alone_for(
        self,
        net: nn.Module,
        patch: Sequence[int],
        seconds: float,
        *,
        seed: int,
        cases: Sequence[PreprocessedCase] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> int:
        """:meth:`train_alone` for ``seconds`` of ``clock`` instead of a number of steps; returns the
        steps it took (``net`` is left in eval mode)."""
        chosen = cases if cases is not None else self.cases
        return train_network_for(net, chosen, patch, seconds, seed=seed, clock=clock, **self._alone())

    def _alone(self) -> dict[str, Any]:
        """This trainer's settings for a network trained on its own."""
        return {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "device": self.device,
            "amp": self.amp,
        }


def _full_resolution(out: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """The full-resolution logits of a forward (the first of a deep-supervision list)."""
    return out[0] if isinstance(out, list | tuple) else out


class WeightAverage:
    """An exponential moving average of some parameters' values (Polyak averaging).

    ``update()`` after each step moves the average towards the current values by ``1 - decay``;
    it starts at the values it is given, so it needs no bias correction. ``decay=0.99`` weighs
    about the last 100 steps.
    """

    def __init__(self, parameters: Iterable[nn.Parameter], decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.parameters = list(parameters)
        self.decay = decay
        self.average = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.average, [p.detach() for p in self.parameters], 1.0 - self.decay)

    @torch.no_grad()
    def copy_to_parameters(self) -> None:
        """Put the averaged values into the parameters."""
        for p, a in zip(self.parameters, self.average, strict=True):
            p.copy_(a)


def train_network(
    net: nn.Module,
    cases: Sequence[PreprocessedCase],
    patch: Sequence[int],
    steps: int,
    *,
    batch_size: int,
    lr: float,
    weight_decay: float = 3e-5,
    device: str | torch.device = "cpu",
    amp: bool = True,
    seed: int = 0,
    clip_norm: float | None = None,
) -> nn.Module:
    """Train a standalone network alone for ``steps`` steps (fresh Adam); returns it in eval mode."""
    net, trainer, params = _standalone(net, cases, batch_size, lr, weight_decay, device, amp, seed, clip_norm)
    trainer.train(net, params, patch, steps)
    return net.eval()


def train_network_for(
    net: nn.Module,
    cases: Sequence[PreprocessedCase],
    patch: Sequence[int],
    seconds: float,
    *,
    batch_size: int,
    lr: float,
    weight_decay: float = 3e-5,
    device: str | torch.device = "cpu",
    amp: bool = True,
    seed: int = 0,
    clip_norm: float | None = None,
    chunk: int = 5,
    clock: Callable[[], float] = time.perf_counter,
) -> int:
    """:func:`train_network` until ``seconds`` have passed on ``clock`` (wall-clock time by
    default), checked every ``chunk`` steps; ``net`` is left in eval mode. Returns the steps taken:
    at least one chunk, so a network always has some training."""
    net, trainer, params = _standalone(net, cases, batch_size, lr, weight_decay, device, amp, seed, clip_norm)
    start, steps = clock(), 0
    while steps == 0 or clock() - start < seconds:
        trainer.train(net, params, patch, chunk, start=steps * batch_size)
        steps += chunk
    net.eval()
    return steps


def _standalone(
    net: nn.Module,
    cases: Sequence[PreprocessedCase],
    batch_size: int,
    lr: float,
    weight_decay: float,
    device: str | torch.device,
    amp: bool,
    seed: int,
    clip_norm: float | None,
) -> tuple[nn.Module, PathTrainer, list[nn.Parameter]]:
    """``net`` on ``device`` in training mode, a fresh trainer over all its parameters, and them."""
    net = net.to(resolve_device(device)).train()
    params = list(net.parameters())
    trainer = PathTrainer(
        params,
        cases,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        device=device,
        amp=amp,
        clip_norm=clip_norm,
        seed=seed,
    )
    return net, trainer, params
