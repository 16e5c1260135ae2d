"""One benchmark search, (sampler, seed) on one fold: its trials and fine-tuning on a budget clock,
the derived network on the test cases, and its architecture trained alone for the same time. A
search whose process was stopped continues from its checkpoint, trials and recorded clock."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from ..attrs import ATTR_PHASE, PHASES_FINETUNE
from ..controller import SEARCH_CONTROLLER
from ..files import previous_path
from ..final import derive_best, finetune
from ..objective import NASObjective
from ..registry import make_sampler
from ..runner import warm_start
from ..space import Architecture
from .fold import (
    CLAIM,
    DERIVED,
    FoldSetup,
    budget_clock,
    busy,
    claim,
    claim_alive,
    claimed_by_me,
    finished_study,
    keep_result,
    renewed_claim,
)
from .references import alone_for_seconds, train_from_scratch
from .speed import MachineSpeed, budget_units, machine_speed, unit_clock
from .timing import TimedSampler
from .variant import controller_variant


def run_search(
    setup: FoldSetup, storage: Any, name: str, seed: int, *, poll_s: float | None = None
) -> tuple[dict[str, Any], dict[str, Any], optuna.Study, bool]:
    """One (sampler, seed) search, its derived network on the test cases, its from-scratch twin;
    the last item says whether it ran now (``False``: a kept result). An interrupted search
    continues from its checkpoint and trials (the trial a kill interrupted is FAIL and run again);
    its budget clock continues from what the study recorded. A run stopped after its export
    (:data:`DERIVED` kept on the study) trains only the twin again, with the same budget.

    The process running a search claims its study (:data:`~.fold.CLAIM`, renewed while it runs):
    another process that reaches the same search meanwhile waits for its result, polling every
    ``poll_s`` seconds (default :data:`POLL_S`), instead of failing its running trial and training
    the supernet beside it (inside :func:`~.fold.not_waiting` it raises :class:`~.fold.Busy`); a
    claim whose process is gone is taken over and the search resumed."""
    study_name = setup.study_name(name, seed)
    checkpoint = setup.checkpoint(study_name)
    while True:
        kept = _unclaimed_study(setup, storage, study_name, checkpoint, name, poll_s or POLL_S)
        if kept is not None and "benchmark:result" in kept.user_attrs:
            return (
                dict(kept.user_attrs["benchmark:result"]),
                search_curve(kept.get_trials(deepcopy=False)),
                kept,
                False,
            )
        timed = None if kept is not None and DERIVED in kept.user_attrs else _timed_sampler(setup, name, seed)
        study = _open_study(setup, storage, study_name, kept, timed, checkpoint)
        if study is not None:
            break
        time.sleep(_CLAIM_GAP_S)  # another process claimed it in the same instant: wait for it
    with renewed_claim(study):
        if timed is not None:
            objective = setup.objective(seed, checkpoint)
            _search_and_derive(setup, study, name, seed, objective, timed)
        else:
            objective = setup.objective(seed)  # the twin needs its data and trainer, not the supernet
        row = _with_twin(setup, study, objective, seed)
        keep_result(study, setup, row)
    _remove_checkpoints(checkpoint)  # the result is kept: nothing left to resume
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(INTERRUPTED)]
    return row, search_curve(trials), study, True


def _timed_sampler(setup: FoldSetup, name: str, seed: int) -> TimedSampler:
    controller = controller_variant(setup.cfg.controller, SEARCH_CONTROLLER) if name == "ronas" else None
    return TimedSampler(make_sampler(name, setup.space, seed, controller_config=controller))


def _unclaimed_study(
    setup: FoldSetup, storage: Any, study_name: str, checkpoint: Path | None, name: str, poll_s: float
) -> optuna.Study | None:
    """:func:`~.fold.finished_study` once no other live process claims the study: ``None`` (none,
    or an unfinished one that cannot be resumed, deleted), a result, or an unfinished search."""
    said = False
    while True:
        kept = finished_study(setup, storage, study_name, resumable=checkpoint, method=name)
        held: Any = None if kept is None else kept.user_attrs.get(CLAIM)
        if kept is None or "benchmark:result" in kept.user_attrs or not claim_alive(held):
            return kept
        why = f"{held['host']}:{held['pid']} is running it"
        busy(study_name, why)
        if not said:
            print(f"waiting for {study_name}: {why}", flush=True)
            said = True
        time.sleep(poll_s)


def _with_twin(setup: FoldSetup, study: optuna.Study, objective: NASObjective, seed: int) -> dict[str, Any]:
    """The row of a derived search (:data:`DERIVED` kept on ``study``): its architecture trained
    alone for the search's budget."""
    derived = dict(study.user_attrs[DERIVED])
    t1 = time.perf_counter()
    arch = Architecture.from_code(setup.space, derived["arch"])
    patch = (derived["patch_size"][0], derived["patch_size"][1], derived["patch_size"][2])
    name = f"{study.study_name}-alone"
    twin = _twin(setup, objective, arch, patch, derived, seed, name)
    return {
        **derived,
        "scratch_test_dice": float(twin.dice),
        "scratch_steps": twin.steps,
        "scratch_recipe": setup.cfg.scratch_recipe,
        "scratch_test_dice_cases": twin.cases,
        "scratch_curve": twin.curve,
        "scratch_s": round(time.perf_counter() - t1, 1),
    }


def _search_and_derive(
    setup: FoldSetup, study: optuna.Study, name: str, seed: int, objective: NASObjective, timed: TimedSampler
) -> None:
    """The search's trials and fine-tuning on its budget clock, then the derived network scored on
    the test cases, kept on ``study`` as :data:`DERIVED`."""
    cfg = setup.cfg
    objective.planned_trials = cfg.trials
    clock = _StudyClock.resume(study, budget_clock(cfg.device), machine_speed(cfg.device))
    objective.on_save.append(lambda: clock.record(study))  # the fine-tuning's parts resume with their time
    before, before_cases = _search_and_finetune(setup, study, objective, clock)
    search_s = clock.search_s()
    t_export = time.perf_counter()
    final = derive_best(study, objective, top_k=3, overlap=0.25)
    export_s = time.perf_counter() - t_export
    budget_s = clock.budget_s()  # search and export on the budget clock: the references' time
    units = clock.units()
    net = final.net.to(objective.trainer.device)
    test_dice, test_cases = setup.test_dice(objective, net, final.patch_size)
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(INTERRUPTED)]
    vals = np.array([t.value if t.value is not None and np.isfinite(t.value) else 0.0 for t in trials])
    derived = {
        "sampler": name,
        "fold": setup.fold,
        "seed": seed,
        "trials": len(trials),
        "best_val_dice": float(vals.max()),
        "late_val_dice": float(vals[-max(1, len(vals) // 3) :].mean()),
        "final_val_dice": float(final.metrics["val_dice"]),
        "test_dice": float(test_dice),
        "before_finetune_test_dice": before,
        "test_dice_cases": test_cases,
        "before_finetune_test_dice_cases": before_cases,
        "arch": final.arch.code,
        "patch_size": list(final.patch_size),
        "search_s": round(search_s, 1),
        "export_s": round(export_s, 1),
        "budget_s": round(budget_s, 3),
        **clock.speed.row_fields(units),
        "sampler_ms_per_trial": round(1e3 * float(np.mean(list(timed.seconds.values()))), 2)
        if timed.seconds
        else 0.0,
    }
    study.set_user_attr(DERIVED, derived)


def _open_study(
    setup: FoldSetup,
    storage: Any,
    study_name: str,
    unfinished: optuna.Study | None,
    sampler: optuna.samplers.BaseSampler | None,
    checkpoint: Path | None,
) -> optuna.Study | None:
    """The study claimed for this process: a new one for the search (claimed first, then its key,
    so that it can be resumed, and the settings' warm start), or ``unfinished`` loaded with
    ``sampler`` (``None``: only its twin is left) and its interrupted trials failed. ``None`` when
    another process created or claimed it in the same instant."""
    if unfinished is not None:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
        claim(study)
        time.sleep(_CLAIM_SETTLE_S)  # two processes that found it unclaimed at once: the last write wins
        if not claimed_by_me(optuna.load_study(study_name=study_name, storage=storage)):
            return None
        if sampler is not None:
            _fail_interrupted(study)
        return study
    _remove_checkpoints(checkpoint)  # a stale one of a deleted study must not be resumed
    try:
        study = optuna.create_study(
            study_name=study_name, storage=storage, direction="maximize", sampler=sampler
        )
    except optuna.exceptions.DuplicatedStudyError:
        return None
    try:
        claim(study)
    except KeyError:  # deleted as claimless by a process that looked in the same instant
        return None
    study.set_user_attr("benchmark", setup.cfg.to_dict())
    study.set_user_attr("benchmark:key", setup.key())  # an unfinished study can be resumed
    warm_start(study, setup.space, setup.cfg.settings)
    return study


@dataclass
class _StudyClock:
    """A search's wall time and budget time (``budget``: CPU or GPU clock), continued from what its
    study recorded in ``benchmark:spent``; measurements outside the method are excluded. The budget
    is also counted in units of each machine that ran a part (:mod:`~.speed`), so a search resumed
    on another machine keeps a budget its references can convert; time recorded before units were
    kept, or counted without a calibration, is read as this machine's."""

    budget: Callable[[], float]
    t0: float
    c0: float
    speed: MachineSpeed
    units0: float = 0.0  # units spent before this process
    b0: float = 0.0  # budget seconds spent before this process

    @classmethod
    def resume(cls, study: optuna.Study, budget: Callable[[], float], speed: MachineSpeed) -> _StudyClock:
        spent = study.user_attrs.get("benchmark:spent", {"budget_s": 0.0, "search_s": 0.0})
        b0 = float(spent["budget_s"])
        units0 = float(spent["units"]) if speed.calibrated and "units" in spent else speed.units(b0)
        return cls(budget, time.perf_counter() - spent["search_s"], budget() - b0, speed, units0, b0)

    def units(self) -> float:
        return self.units0 + self.speed.units(self.budget_s() - self.b0)

    def search_s(self) -> float:
        return time.perf_counter() - self.t0

    def budget_s(self) -> float:
        return self.budget() - self.c0

    def exclude(self, since: float) -> None:
        """Leave out of the budget what ran since ``since`` (a reading of ``budget``)."""
        self.c0 += self.budget() - since

    def record(self, study: optuna.Study, _: Any = None) -> None:
        """Store the time spent on ``study`` (also an Optuna callback)."""
        spent = {"budget_s": self.budget_s(), "search_s": self.search_s()}
        if self.speed.calibrated:
            spent["units"] = self.units()
        study.set_user_attr("benchmark:spent", spent)


def _search_and_finetune(
    setup: FoldSetup, study: optuna.Study, objective: NASObjective, clock: _StudyClock
) -> tuple[float, dict[str, float]]:
    """The trials ``study`` still owes, then its fine-tuning, each skipped where done; returns the
    test Dice (mean and per case) of the network derived just before the fine-tuning (NaN and
    empty without one), measured once, off the budget."""
    cfg = setup.cfg
    trials = study.get_trials(deepcopy=False)
    searched = sum(  # trials that count against ``cfg.trials``, as in an uninterrupted run
        t.state.is_finished()
        and not t.user_attrs.get(INTERRUPTED)
        and t.user_attrs.get(ATTR_PHASE) not in PHASES_FINETUNE
        for t in trials
    )
    finetuned = any(
        t.state == TrialState.COMPLETE and t.user_attrs.get(ATTR_PHASE) in PHASES_FINETUNE for t in trials
    )
    if not finetuned and searched < cfg.trials:
        study.optimize(
            objective, n_trials=cfg.trials - searched, timeout=cfg.timeout, callbacks=[clock.record]
        )
    before, before_cases = float("nan"), dict[str, float]()
    if cfg.settings.finetune.steps > 0 and "benchmark:before" in study.user_attrs:
        before, before_cases = study.user_attrs["benchmark:before"]
    elif cfg.settings.finetune.steps > 0:
        since = clock.budget()
        early = derive_best(study, objective, top_k=3, overlap=0.25)
        before, before_cases = setup.test_dice(
            objective, early.net.to(objective.trainer.device), early.patch_size
        )
        clock.exclude(since)  # not part of the budget: a measurement, not the method
        study.set_user_attr("benchmark:before", [before, before_cases])
    if not finetuned:
        finetune(study, objective, cfg.settings.finetune.steps)
        clock.record(study)
        objective.save()  # a kill from here on resumes with the fine-tuned weights
    return before, before_cases


@dataclass
class Twin:
    """The final architecture trained alone: test Dice (mean, per case), steps, learning curve."""

    dice: float = float("nan")
    cases: dict[str, float] = dataclasses.field(default_factory=dict)
    steps: int = 0  # 0: no twin
    curve: list[tuple[int, float]] = dataclasses.field(default_factory=list)


def _twin(
    setup: FoldSetup,
    objective: NASObjective,
    arch: Architecture,
    patch: tuple[int, int, int],
    derived: dict[str, Any],
    seed: int,
    tag: str,
) -> Twin:
    """The final architecture trained alone: for the budget of the search whose ``derived`` row
    this is (in units of :mod:`~.speed`, on this machine's unit clock) on the cases the final
    network trained on (``setup.scratch_steps`` None, resumable under ``tag``), or for a fixed
    number of steps."""
    cfg = setup.cfg
    if setup.scratch_steps is None:  # equal compute
        units = budget_units(derived, machine_speed(cfg.device))
        scratch, steps, curve = alone_for_seconds(
            objective,
            arch,
            units,
            seed,
            clock=unit_clock(cfg.device),
            recipe=cfg.scratch_recipe,
            monitor=setup.monitor(patch),
            resume=setup.resumable(tag, arch.code, f"{units:.3f}u"),
        )
        return Twin(*setup.test_dice(objective, scratch, patch), steps, curve)
    if setup.scratch_steps > 0:
        cases = objective.finetune_cases if cfg.settings.finetune.steps > 0 else None
        scratch = train_from_scratch(objective, arch, setup.scratch_steps, seed, cases=cases)
        return Twin(*setup.test_dice(objective, scratch, patch), setup.scratch_steps)
    return Twin()


def search_curve(trials: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
    """Best-so-far validation Dice by trial and by seconds since the first trial started."""
    if not trials:  # a result restored without its trials (population_curve.py --restore)
        return {"best": [], "time": []}
    vals = np.array([t.value if t.value is not None and np.isfinite(t.value) else 0.0 for t in trials])
    start = trials[0].datetime_start
    ends = np.array([(t.datetime_complete - start).total_seconds() for t in trials])  # type: ignore[operator]
    return {"best": np.maximum.accumulate(vals).tolist(), "time": ends.tolist()}


#: Seconds between looks at a search another process is running (:func:`run_search`).
POLL_S = 60.0
#: Seconds a process waits after claiming an unfinished search before it reads the claim back.
_CLAIM_SETTLE_S = 2.0
#: Seconds before looking again at a search another process claimed in the same instant.
_CLAIM_GAP_S = 5.0

#: User attr of a trial that a killed benchmark process left RUNNING (FAIL now, run again).
INTERRUPTED = "benchmark:interrupted"


def _fail_interrupted(study: optuna.Study) -> None:
    """A resumed study's trials that were RUNNING when its process died: FAIL, marked
    :data:`INTERRUPTED` (they are not failed architectures, and are run again)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED, True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def _remove_checkpoints(checkpoint: Path | None) -> None:
    if checkpoint is not None:
        for path in (checkpoint, previous_path(checkpoint)):
            path.unlink(missing_ok=True)
