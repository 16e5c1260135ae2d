"""Data-parallel search on torch.distributed: one supernet, replicated on every rank.

Rank 0 (the leader) owns the study, the sampler, the lock, the checkpoint and the dashboard figures;
it drives the other ranks (followers) through collective commands (small dataclasses,
:data:`Command`). :func:`lead` wraps the leader objective's :class:`~ronas_optuna.pathwork.PathWork`
in a :class:`Leader`, which sends each call on the shared weights to the followers before making it
itself; :func:`follow` makes the same calls on a follower's ``PathWork``. The objective knows nothing
of ranks:

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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .evaluator import DiceResult
from .files import cpu_copy
from .pathwork import PathWork
from .space import Architecture
from .team import RankFailure, Team, together
from .trainer import trial_failed

Obj = TypeVar("Obj", bound="_HasWork")


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
    """Train ``steps`` steps along the architecture coded ``arch`` (see ``PathWork.train``); ``total``
    is the planned search's length, so that every rank follows the same learning-rate schedule."""

    arch: str
    steps: int
    start: int
    step: int
    total: int | None
    finetune: bool
    teacher: str | None
    resumed: bool = False


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


def _validate_together(team: Team, work: PathWork, arch: Architecture, *, all_cases: bool) -> DiceResult:
    """Every rank: Dice of ``arch`` with the cases split across ranks and the per-case Dice gathered."""
    cases, overlap = work.cases_for(all_cases=all_cases), work.overlap_for(all_cases=all_cases)
    patches = work.patches_for(all_cases=all_cases)
    share = cases[team.rank :: team.world]
    shares = team.gather(
        together(
            team, lambda: work.per_case(arch, share, overlap=overlap, patches=patches), failed=trial_failed
        )
    )
    return DiceResult.from_per_case([shares[i % team.world][i // team.world] for i in range(len(cases))])


class Leader:
    """Rank 0's :class:`~ronas_optuna.pathwork.PathWork`: each call is sent to the followers first
    (:data:`Command`), who make the same call on their own ``PathWork`` (:func:`follow`)."""

    def __init__(self, team: Team, work: PathWork) -> None:
        self.team, self.work = team, work

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
        code = teacher.code if teacher is not None else None
        self.team.broadcast(TrainCommand(arch.code, steps, start, step, total, finetune, code, resumed))
        return self.work.train(
            arch,
            steps,
            start=start,
            step=step,
            total=total,
            finetune=finetune,
            resumed=resumed,
            teacher=teacher,
        )

    def validate(self, arch: Architecture, *, all_cases: bool = False) -> DiceResult:
        self.team.broadcast(ValidateCommand(arch.code, all_cases))
        return _validate_together(self.team, self.work, arch, all_cases=all_cases)

    def begin_trial(self, arch: Architecture) -> Any:
        self.team.broadcast(TrialCommand(arch.code))
        return self.work.begin_trial(arch)

    def undo_trial(self, arch: Architecture, snap: Any, error: BaseException) -> None:
        """Put the path back; when the ranks failed together (they all do the same), check that
        every rank now holds the same weights."""
        self.work.undo_trial(arch, snap, error)
        if isinstance(error, RankFailure):
            self.team.check_same(self.work.supernet.path_parameters(arch))


class _HasWork(Protocol):
    paths: PathWork
    work: Any


def lead(team: Team, objective: _HasWork) -> None:
    """Leader, once its objective is built (and resumed): give every rank its weights, then send
    each of the objective's calls on the shared weights to the followers too."""
    share_state(team, objective.paths)
    objective.work = Leader(team, objective.paths)


def follow(team: Team, objective: _HasWork) -> None:
    """Follower: take the leader's weights, then run its :data:`Command` s on this rank's
    ``PathWork`` until it sends :class:`StopCommand`. A trial that fails (on any rank) puts its path
    back as the leader does, checked by :meth:`Team.check_same`."""
    work = objective.paths
    share_state(team, work)
    space = work.supernet.space
    trial: tuple[Architecture, Any] | None = None  # the running trial's path and its kept weights
    while True:
        cmd = team.broadcast()
        if isinstance(cmd, StopCommand):
            return
        try:
            if isinstance(cmd, TrialCommand):
                arch = Architecture.from_code(space, cmd.arch)
                trial = arch, work.begin_trial(arch)
            elif isinstance(cmd, TrainCommand):
                arch = Architecture.from_code(space, cmd.arch)
                teacher = Architecture.from_code(space, cmd.teacher) if cmd.teacher is not None else None
                work.train(
                    arch,
                    cmd.steps,
                    start=cmd.start,
                    step=cmd.step,
                    total=cmd.total,
                    finetune=cmd.finetune,
                    resumed=cmd.resumed,
                    teacher=teacher,
                )
            elif isinstance(cmd, ValidateCommand):
                arch = Architecture.from_code(space, cmd.arch)
                _validate_together(team, work, arch, all_cases=cmd.all_cases)
            else:
                raise RuntimeError(f"unknown command from the leader: {cmd!r}")
        except RankFailure as e:
            if trial is None:  # outside a trial the leader does not recover either
                raise
            work.undo_trial(trial[0], trial[1], e)
            team.check_same(work.supernet.path_parameters(trial[0]))


def stop(team: Team) -> None:
    """Leader: release the followers from :func:`follow` (then every rank calls ``team.close()``)."""
    if team.leader:
        team.broadcast(StopCommand())


def start_leader(team: Team, plan: dict[str, Any], build: Callable[[], Obj]) -> Obj:
    """Leader: send the resolved ``plan``, build this rank's objective with ``build()`` while the
    followers build theirs, then let them go on and :func:`lead` them. When ``build()`` fails the
    followers are released first (:func:`plan_failed`) and the error is this rank's to report."""
    team.broadcast(PlanMessage(plan))
    try:
        objective = build()  # it may find a bad checkpoint
    except BaseException:
        plan_failed(team)
        raise
    team.broadcast(PlanMessage(plan))  # the followers go on
    lead(team, objective)
    return objective


def plan_failed(team: Team | None) -> None:
    """Leader: no plan (or no objective) could be made; the followers exit, and so does the job
    once this rank has reported why."""
    if team is not None:
        team.broadcast(PlanFailed())
        team.close()


def run_follower(team: Team, build: Callable[[dict[str, Any]], _HasWork]) -> None:
    """Follower, the whole job: the leader's plan, an objective built from it with ``build(plan)``,
    the leader's weights, then its commands until it stops. When the leader could not make its plan
    or objective, this rank exits quietly: the leader reports why, and its exit status is the job's."""
    msg = team.broadcast()
    if isinstance(msg, PlanMessage):
        objective = build(msg.plan)
        msg = team.broadcast()  # the leader's objective was built too
    if isinstance(msg, PlanMessage):
        follow(team, objective)
    team.close()


def share_state(team: Team, work: PathWork) -> None:
    """Make every rank's supernet and optimizer state the leader's (after it resumed)."""
    payload = team.broadcast(
        cpu_copy({"net": work.supernet.state_dict(), "optimizer": work.trainer.state_dict()})
        if team.leader
        else None
    )
    if not team.leader:
        work.supernet.load_state_dict(payload["net"])
        work.trainer.load_state_dict(payload["optimizer"])
