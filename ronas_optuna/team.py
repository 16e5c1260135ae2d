"""The ranks of a data-parallel job as one team: its collectives, and failing together.

:class:`Team` is this process's place in a torch.distributed job (``rank`` of ``world``) with the
few collectives the search needs (broadcast, gather, gradient averaging, a differentiable sum, an
agreement on failures, a checksum). :func:`together` runs a step on this rank and agrees on its
outcome with the others, so a failure on any rank is a :class:`RankFailure` on every rank. A rank
whose collective finds a peer gone exits quietly (:class:`RankLost`). This module knows no network
and no search: the trainer uses it for its steps, :mod:`~ronas_optuna.distributed` for the
leader/follower protocol.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")

#: Seconds a collective may wait for a rank before the job fails.
TIMEOUT_S = 600.0


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
        digests = self.gather(weights_digest(parameters))
        if len(set(digests)) > 1:
            raise RuntimeError(f"the ranks' weights differ after a failed trial (checksums {digests})")

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


def weights_digest(tensors: Iterable[torch.Tensor]) -> str:
    """A short checksum of ``tensors``' bytes, in order, for any dtype (bfloat16 included)."""
    digest = hashlib.sha256()
    for x in tensors:
        digest.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


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
