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

Ranks fail together. A trial's failure on any rank (a non-finite loss, running out of memory, a case
that cannot be used) is agreed on by every rank at the next agreement point (:func:`together`: after
each step's local forward and backward, after each rank's share of a validation) and raised on every
rank as one :class:`RankFailure` that names the rank. Every rank then puts the trial's path back to
the weights it kept when the trial began (:class:`TrialCommand`), and the ranks compare checksums of
those weights (:meth:`Team.check_same`), so the search goes on with identical weights everywhere.

Start it with ``torchrun --nproc_per_node=N -m ronas_optuna search ...`` (or ``ronas search --nproc
N``); NCCL on GPUs, gloo on the CPU. A rank that dies takes the job down: a rank whose collective
finds a peer gone exits quietly (:class:`RankLost`; its running trial is re-run when the study
resumes), torchrun stops the others (collectives time out after ``timeout_s``), and
``ronas search --nproc`` says in one line which rank stopped first.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from .files import cpu_copy
from .space import Architecture

if TYPE_CHECKING:
    from .supernet import Supernet

#: Seconds a collective may wait for a rank before the job fails.
TIMEOUT_S = 600.0

T = TypeVar("T")


class RankFailure(RuntimeError):
    """A trial failed on one or more ranks; raised on every rank at the same point."""


#: The exit status of a rank that stopped because another rank was gone.
RANK_LOST_STATUS = 3


class RankLost(SystemExit):
    """A collective found another rank gone: this rank exits with :data:`RANK_LOST_STATUS` and no
    traceback (not an ``Exception``, so Optuna leaves the running trial to be re-run, as after a
    kill)."""

    def __init__(self) -> None:
        super().__init__(RANK_LOST_STATUS)


def peer_lost(e: BaseException) -> bool:
    """Whether ``e``, raised by a collective, means another rank is gone."""
    text = str(e)
    lost = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "aborted")
    return isinstance(e, dist.DistError) or (isinstance(e, RuntimeError) and any(t in text for t in lost))


@contextmanager
def _collective() -> Iterator[None]:
    try:
        yield
    except RuntimeError as e:
        if isinstance(e, RankFailure) or not peer_lost(e):
            raise
        raise RankLost() from None


@dataclass(frozen=True)
class Team:
    """This process's place in the job: ``rank`` of ``world``; ``device`` holds the collectives'
    small tensors (a CUDA device under NCCL)."""

    rank: int
    world: int
    device: str = "cpu"

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: Any = None) -> Any:
        """The leader's ``obj`` on every rank (followers pass nothing)."""
        box = [obj if self.leader else None]
        with _collective():
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world
        with _collective():
            dist.all_gather_object(out, obj)
        return out

    def average_gradients(self, parameters: Sequence[nn.Parameter]) -> None:
        """Mean of the gradients over ranks, in one flat buffer. Parameters without a gradient
        (the same on every rank: they train the same path) keep none, so Adam leaves them be."""
        params = [p for p in parameters if p.grad is not None]
        if not params:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]
        with _collective():
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

    def agree(self, reason: str | None) -> None:
        """Every rank at the same point: raise :class:`RankFailure` on every rank if any rank
        brings a failure ``reason`` (one small all-reduce; the reasons are gathered only then)."""
        flag = torch.tensor([0 if reason is None else 1], dtype=torch.int32, device=self.device)
        with _collective():
            dist.all_reduce(flag)
        if int(flag.item()) == 0:
            return
        reasons = self.gather(reason)
        raise RankFailure("; ".join(f"rank {r}: {why}" for r, why in enumerate(reasons) if why is not None))

    def check_same(self, parameters: Iterable[nn.Parameter]) -> None:
        """Every rank: fail the job unless every rank holds the same values of ``parameters``."""
        digest = hashlib.sha256()
        for p in parameters:
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
        digests = self.gather(digest.hexdigest()[:16])
        if len(set(digests)) > 1:
            raise RuntimeError(f"the ranks' weights differ after a failed trial (checksums {digests})")

    def stop(self) -> None:
        """Leader: release the followers from :func:`follow`."""
        if self.leader:
            self.broadcast(StopCommand())

    def close(self) -> None:
        """Every rank, at the end: wait for the others, then take the process group down, so that
        no rank exits while gloo still talks to it (a rank that exits first can abort another's
        communication threads: ``terminate called without an active exception``)."""
        if dist.is_initialized():
            with _collective():
                dist.barrier()
            dist.destroy_process_group()


class _SumOverRanks(torch.autograd.Function):
    """``all_reduce(SUM)`` whose gradient is the sum of every rank's gradient of the sum."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        with _collective():
            dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        with _collective():
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
    return Team(dist.get_rank(), dist.get_world_size(), str(device) if device.type == "cuda" else "cpu")


def together(team: Team | None, run: Callable[[], T], *, failed: Callable[[BaseException], bool]) -> T:
    """``run()`` on this rank, then an agreement with the other ranks: a failure (an exception
    for which ``failed`` is true) on any rank raises :class:`RankFailure` on every rank. Without a
    team, ``run()`` alone. Other exceptions (bugs) propagate on their rank and take the job down."""
    if team is None:
        return run()
    try:
        out = run()
    except Exception as e:
        if not failed(e):
            raise
        team.agree(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": "))
        raise AssertionError("unreachable: agree raises for a failure") from e
    team.agree(None)
    return out


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
class TrialCommand:
    """A trial on the architecture coded ``arch`` begins: keep its path's weights and optimizer
    state, to put back if the trial fails."""

    arch: str


@dataclass(frozen=True)
class StopCommand:
    """The search is over: followers return from :func:`follow`."""


Command = TrialCommand | TrainCommand | ValidateCommand | StopCommand


class _Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Any, /) -> Any: ...


class _Trainer(_Stateful, Protocol):
    def snapshot(self, parameters: Iterable[nn.Parameter]) -> Any: ...

    def restore(self, snap: Any, /) -> None: ...


class RankObjective(Protocol):
    """What a follower rank drives: the shared weights, their trainer, and a path's training and
    validation (``NASObjective`` is one)."""

    @property
    def supernet(self) -> Supernet: ...

    @property
    def trainer(self) -> _Trainer: ...

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
    """Follower: run the leader's :data:`Command` s until it sends :class:`StopCommand`. A trial
    that fails (on any rank) puts its path back as the leader does, checked by :meth:`Team.check_same`."""
    space = objective.supernet.space
    trial: tuple[Architecture, Any] | None = None  # the running trial's path and its kept weights
    while True:
        cmd = team.broadcast()
        if isinstance(cmd, StopCommand):
            return
        try:
            if isinstance(cmd, TrialCommand):
                arch = Architecture.from_code(space, cmd.arch)
                trial = arch, objective.trainer.snapshot(objective.supernet.path_parameters(arch))
            elif isinstance(cmd, TrainCommand):
                arch = Architecture.from_code(space, cmd.arch)
                teacher = Architecture.from_code(space, cmd.teacher) if cmd.teacher is not None else None
                objective.train(
                    arch, cmd.steps, start=cmd.start, step=cmd.step, finetune=cmd.finetune, teacher=teacher
                )
            elif isinstance(cmd, ValidateCommand):
                objective.validate(Architecture.from_code(space, cmd.arch), all_cases=cmd.all_cases)
            else:
                raise RuntimeError(f"unknown command from the leader: {cmd!r}")
        except RankFailure:
            if trial is None:  # outside a trial the leader does not recover either
                raise
            objective.trainer.restore(trial[1])
            team.check_same(objective.supernet.path_parameters(trial[0]))


def begin_trial(team: Team | None, objective: RankObjective, arch: Architecture) -> Any:
    """Leader (or a single process): the snapshot a failed trial on ``arch`` goes back to; the
    followers take theirs."""
    if team is not None and team.leader:
        team.broadcast(TrialCommand(arch.code))
    return objective.trainer.snapshot(objective.supernet.path_parameters(arch))


def undo_trial(team: Team | None, objective: RankObjective, arch: Architecture, snap: Any) -> None:
    """Leader (or a single process): put ``arch``'s path back after a failed trial; with a team,
    check that every rank now holds the same weights (the followers do the same in :func:`follow`)."""
    objective.trainer.restore(snap)
    if team is not None:
        team.check_same(objective.supernet.path_parameters(arch))


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
