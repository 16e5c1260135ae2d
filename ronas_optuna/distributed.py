"""Data-parallel search on torch.distributed: one supernet, replicated on every rank.

Rank 0 (the leader) owns the study, the sampler, the lock, the checkpoint and the dashboard figures;
it drives the other ranks (followers) through two collective commands that
:class:`~ronas_optuna.NASObjective` issues itself (small dataclasses, :data:`Command`):

* :class:`TrainCommand`: every rank trains the same path on its own share of the patch stream (rank ``r`` of
  ``W`` takes the items a single process with ``W`` times the batch would give its ``r``-th
  slot); the batch Dice is summed over ranks (a differentiable all-reduce) and the path's gradients
  are averaged with one bucketed all-reduce, so ``W`` ranks x batch ``b`` take the step one process
  with batch ``W * b`` would. Parameters off the path are not touched.
* :class:`ValidateCommand`: the validation cases are split across ranks and the per-case Dice gathered.

Start it with ``torchrun --nproc_per_node=N -m ronas_optuna search ...`` (or ``ronas search --nproc
N``); NCCL on GPUs, gloo on the CPU. A rank that dies takes the job down (torchrun stops the others;
collectives time out after ``timeout_s``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from .files import cpu_copy
from .space import Architecture

if TYPE_CHECKING:
    from .supernet import Supernet

#: Seconds a collective may wait for a rank before the job fails.
TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Team:
    """This process's place in the job: ``rank`` of ``world``."""

    rank: int
    world: int

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: Any = None) -> Any:
        """The leader's ``obj`` on every rank (followers pass nothing)."""
        box = [obj if self.leader else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def average_gradients(self, parameters: Sequence[nn.Parameter]) -> None:
        """Mean of the gradients over ranks, in one flat buffer. Parameters without a gradient
        (the same on every rank: they train the same path) keep none, so Adam leaves them be."""
        params = [p for p in parameters if p.grad is not None]
        if not params:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p)
            offset += n

    def sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Differentiable sum over ranks (the batch Dice's sums)."""
        out: torch.Tensor = _SumOverRanks.apply(t)
        return out

    def stop(self) -> None:
        """Leader: release the followers from :func:`follow`."""
        if self.leader:
            self.broadcast(StopCommand())

    def close(self) -> None:
        """Every rank, at the end: wait for the others, then take the process group down, so that
        no rank exits while gloo still talks to it (a rank that exits first can abort another's
        communication threads: ``terminate called without an active exception``)."""
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


class _SumOverRanks(torch.autograd.Function):
    """``all_reduce(SUM)`` whose gradient is the sum of every rank's gradient of the sum."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def init_team(device: torch.device, *, timeout_s: float = TIMEOUT_S) -> Team | None:
    """Join the job torchrun started (``WORLD_SIZE`` > 1); ``None`` for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return Team(dist.get_rank(), dist.get_world_size())


# ---------------------------------------------------------------------------- rank messages
@dataclass(frozen=True)
class PlanMessage:
    """Leader to followers at the start: the resolved plan (``SearchPlan.to_dict()``)."""

    plan: dict[str, Any]


@dataclass(frozen=True)
class PlanFailed:
    """Leader to followers at the start: the plan could not be made; the leader reports why."""


@dataclass(frozen=True)
class TrainCommand:
    """Train ``steps`` steps along the architecture coded ``arch`` (see ``NASObjective.train``)."""

    arch: str
    steps: int
    start: int
    step: int
    finetune: bool
    teacher: str | None


@dataclass(frozen=True)
class ValidateCommand:
    """Validate the architecture coded ``arch`` on this rank's share of the cases."""

    arch: str
    all_cases: bool


@dataclass(frozen=True)
class StopCommand:
    """The search is over: followers return from :func:`follow`."""


Command = TrainCommand | ValidateCommand | StopCommand


class _Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Any, /) -> Any: ...


class RankObjective(Protocol):
    """What a follower rank drives: the shared weights, their trainer, and a path's training and
    validation (``NASObjective`` is one)."""

    @property
    def supernet(self) -> Supernet: ...

    @property
    def trainer(self) -> _Stateful: ...

    def train(
        self,
        arch: Architecture,
        steps: int,
        *,
        start: int,
        step: int = 0,
        finetune: bool = False,
        teacher: Architecture | None = None,
    ) -> float: ...

    def validate(self, arch: Architecture, *, all_cases: bool = False) -> object: ...


def follow(team: Team, objective: RankObjective) -> None:
    """Follower: run the leader's :data:`Command` s until it sends :class:`StopCommand`."""
    space = objective.supernet.space
    while True:
        cmd = team.broadcast()
        if isinstance(cmd, StopCommand):
            return
        if isinstance(cmd, TrainCommand):
            arch = Architecture.from_code(space, cmd.arch)
            teacher = Architecture.from_code(space, cmd.teacher) if cmd.teacher is not None else None
            objective.train(
                arch, cmd.steps, start=cmd.start, step=cmd.step, finetune=cmd.finetune, teacher=teacher
            )
        elif isinstance(cmd, ValidateCommand):
            objective.validate(Architecture.from_code(space, cmd.arch), all_cases=cmd.all_cases)
        else:
            raise RuntimeError(f"unknown command from the leader: {cmd!r}")


def share_state(team: Team, objective: RankObjective) -> None:
    """Make every rank's supernet and optimizer state the leader's (after it resumed)."""
    payload = team.broadcast(
        cpu_copy({"net": objective.supernet.state_dict(), "optimizer": objective.trainer.state_dict()})
        if team.leader
        else None
    )
    if not team.leader:
        objective.supernet.load_state_dict(payload["net"])
        objective.trainer.load_state_dict(payload["optimizer"])
