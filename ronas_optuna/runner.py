"""Run a whole search (used by the CLI and the benchmark): storage, sampler, plan, optimize, export."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from . import lock
from .attrs import ATTR_FAIL, ATTR_PHASE, ATTR_START, METRIC_NAMES, PHASES_FINETUNE, STUDY_SAMPLER, directions
from .dashboard import TrialFigures, artifact_store, save_study_note
from .data.check import check_dataset
from .data.msd import DataError, MSDDataset
from .errors import RunFolderBusy, SettingsError, StorageError
from .files import previous_path, remove_stale_temp_files
from .final import FinalModel, best_trial, derive_best, derive_front, finetune
from .limits import Limits
from .objective import NASObjective
from .plan import SearchPlan
from .registry import make_sampler, worker_seed
from .settings import SearchSettings
from .space import SearchSpace
from .storage import StorageURL, write_ahead
from .supernet import Supernet
from .team import Team

#: Settings a resumed search may change with ``--override``; the others define the data, the space
#: or the split, and a study keeps them for life.
log = logging.getLogger(__name__)

OVERRIDABLE = frozenset(
    {
        "steps_per_trial",
        "batch_size",
        "lr",
        "weight_decay",
        "warmup_steps",
        "memory_budget_gb",
        "checkpoint_every",
        "num_workers",
        "amp",
        "reward_cases",
        "reward_overlap",
        "start_from",
    }
)


def run_folder_name(study_name: str) -> str:
    """A file-system-safe folder name for a study (a hash keeps mapped names distinct)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", study_name).lstrip(".")
    if not safe:
        raise SettingsError(
            f"--study {study_name!r}: not usable as a name; use letters, digits, '.', '_', '-'"
        )
    if safe != study_name:
        safe += "-" + hashlib.sha256(study_name.encode()).hexdigest()[:8]
    return safe


def prepare(
    data: str | os.PathLike[str] | None,
    storage: str | StorageURL,
    study_name: str,
    *,
    sampler: str = "ronas",
    run_dir: str | os.PathLike[str] | None = None,
    settings: SearchSettings | None = None,
    explicit: Collection[str] = (),
    override: bool = False,
) -> tuple[optuna.Study, SearchPlan]:
    """Create or load the study and its plan (resolved once, then reused).

    Nothing is created until the dataset (for a new study) and the options are checked. On resume,
    ``explicit`` names the settings the user gave; those that differ from the plan are refused,
    unless ``override`` is set and they are all :data:`OVERRIDABLE`.
    """
    folder, where = run_folder_name(study_name), StorageURL.parse(storage)
    checked = data is not None and where.file is not None and not where.file.exists()
    if checked:  # a new storage file means a new study: check the data before creating the file
        assert data is not None
        _check_data(data)
    st = where.open(create=data is not None)
    plan = _existing_plan(st, study_name)
    if plan is None:
        if data is None:
            raise StorageError(f"study {study_name!r} does not exist in {storage}; give the dataset")
        if not checked:
            _check_data(data)
        rd = Path(run_dir) if run_dir else where.run_root / folder
        lock.hold(rd, "search")
        plan = SearchPlan.resolve(data, rd, settings)
    else:
        plan = _resumed(plan, data, run_dir, settings, explicit, override)
        lock.hold(plan.run_dir, "search")
    study = optuna.create_study(
        study_name=study_name,
        storage=st,
        directions=directions(plan.settings.objectives.metrics),
        load_if_exists=True,
    )
    if study._is_multi_objective() and not study.metric_names:  # axis names in optuna-dashboard
        study.set_metric_names([METRIC_NAMES[n] for n in plan.settings.objectives.metrics.split(",")])
    fail_orphaned_trials(study)
    s = plan.settings
    seed = worker_seed(sampler, s.seed, len(study.get_trials(deepcopy=False)))
    constrained = s.objectives.memory_budget_gb is not None
    study.sampler = make_sampler(sampler, plan.search_space(), seed, constrained=constrained)
    study.set_user_attr(STUDY_SAMPLER, sampler)
    plan.save(study)
    return study, plan


def fail_orphaned_trials(study: optuna.Study) -> int:
    """Mark the study's RUNNING trials FAIL with ``fail_reason`` "process died"; returns how many.

    Called by the run folder's owner (:mod:`~ronas_optuna.lock`) when it starts: a trial still
    RUNNING then was left by a process that died (kill -9, power loss) on any storage, journal
    files included; RDB storages also have Optuna's heartbeat for plain ``study.optimize`` workers.
    """
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in orphans:
        study._storage.set_trial_user_attr(t._trial_id, ATTR_FAIL, "process died")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    if orphans:
        log.warning(
            "marked %d trial(s) left RUNNING by a process that died as FAIL: %s",
            len(orphans),
            ", ".join(str(t.number) for t in orphans),
        )
    return len(orphans)


def load(storage: str | StorageURL, study_name: str) -> tuple[optuna.Study, SearchPlan]:
    """An existing study and its plan, read only (for export)."""
    st = StorageURL.parse(storage).open(create=False)
    plan = _existing_plan(st, study_name)
    if plan is None:
        raise StorageError(f"study {study_name!r} not found in {storage} (or it has no ronas plan)")
    study = optuna.load_study(study_name=study_name, storage=st)
    name = str(study.user_attrs.get(STUDY_SAMPLER, "ronas"))
    s = plan.settings
    study.sampler = make_sampler(
        name, plan.search_space(), s.seed, constrained=s.objectives.memory_budget_gb is not None
    )
    return study, plan


def _existing_plan(storage: optuna.storages.BaseStorage, study_name: str) -> SearchPlan | None:
    try:
        return SearchPlan.from_study(optuna.load_study(study_name=study_name, storage=storage))
    except KeyError:
        return None


def _check_data(data: str | os.PathLike[str]) -> None:
    """``check-data``'s checks; the first error (and how many there are) as a ``DataError``."""
    report = check_dataset(data)
    if not report.ok:
        more = (
            f" (and {len(report.errors) - 1} more; run ronas check-data {data})"
            if len(report.errors) > 1
            else ""
        )
        raise DataError(f"{report.errors[0]}{more}")


def _resumed(
    plan: SearchPlan,
    data: str | os.PathLike[str] | None,
    run_dir: str | os.PathLike[str] | None,
    settings: SearchSettings | None,
    explicit: Collection[str],
    override: bool,
) -> SearchPlan:
    """The plan of a resumed study, with the changes the user may make; refuses the others."""
    if data is not None and Path(data).resolve() != Path(plan.data):
        raise SettingsError(
            f"the study was planned on {plan.data}, not {Path(data).resolve()}; start a new study"
        )
    if run_dir is not None and Path(run_dir).resolve() != Path(plan.run_dir):
        raise SettingsError(f"the study's run folder is {plan.run_dir}, not {Path(run_dir).resolve()}")
    if settings is None:
        return plan
    old, new = plan.settings.to_dict(), settings.to_dict()
    changed = sorted(k for k in explicit if k in new and new[k] != old[k])
    if not changed:
        return plan
    diff = ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in changed)
    fixed = [k for k in changed if k not in OVERRIDABLE]
    if fixed:
        raise SettingsError(
            f"the study was planned otherwise ({diff}); {', '.join(fixed)} cannot change, start a new study"
        )
    if not override:
        raise SettingsError(f"the study was planned otherwise ({diff}); add --override to change them")
    plan.settings = SearchSettings.from_dict({**old, **{k: new[k] for k in changed}})
    return plan


def warm_start(study: optuna.Study, space: SearchSpace, settings: SearchSettings) -> None:
    """``settings.start_from="handmade"``: a study with no trial yet gets the space's DynUNet-like
    member (:meth:`~ronas_optuna.SearchSpace.handmade`) as its first trial."""
    if settings.training.start_from == "handmade" and not study.get_trials(deepcopy=False):
        study.enqueue_trial(space.handmade().to_params(), user_attrs={ATTR_START: "handmade"})


def build_objective(
    plan: SearchPlan,
    *,
    device: str = "auto",
    checkpoint: bool = True,
    team: Team | None = None,
    read_only: bool = False,
) -> NASObjective:
    """The plan's dataset, supernet (initialised from the settings' seed, resumed from the
    checkpoint when ``checkpoint`` and it exists) and objective; ``team``: this rank's place in a
    data-parallel search; ``read_only``: another process owns the run folder (nothing is removed
    there, and the objective must not be saved)."""
    if not Path(plan.data).is_dir():
        raise DataError(f"{plan.data}: the plan's dataset folder no longer exists")
    if Path(plan.run_dir).is_dir() and not read_only:  # the owner knows no write is in progress
        remove_stale_temp_files(plan.run_dir, older_than_s=0 if lock.holds(plan.run_dir) else 60)
    ds = MSDDataset(plan.data, spacing=plan.spacing, cache_dir=Path(plan.run_dir) / "cache")
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
        torch.manual_seed(plan.settings.seed)
        supernet = Supernet(plan.search_space(), plan.in_channels, plan.num_classes)
    return NASObjective.build(
        supernet,
        ds,
        settings=plan.settings,
        train_ids=plan.train_ids,
        val_ids=plan.val_ids,
        device=device,
        checkpoint=plan.checkpoint if checkpoint else None,
        team=team,
    )


def set_aside_checkpoints(plan: SearchPlan) -> list[Path]:
    """``--fresh-supernet``: rename the run's checkpoint generations out of the way (never delete
    them) so that the shared weights start over from the plan's seed; the study is not touched.
    Returns the new names."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for path in (plan.checkpoint, previous_path(plan.checkpoint)):
        if path.exists():
            target = path.with_name(f"{path.name}.set-aside-{stamp}")
            os.replace(path, target)
            moved.append(target)
    return moved


def run_search(
    study: optuna.Study,
    plan: SearchPlan,
    n_trials: int | None,
    *,
    timeout: float | None = None,
    device: str = "auto",
    artifacts: str | os.PathLike[str] | None = None,
    figures_every: int = 10,
    callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    objective: NASObjective | None = None,
) -> NASObjective:
    """Run ``n_trials`` more trials or until ``timeout`` seconds have passed (Optuna's rule: no
    new trial starts after it), whichever comes first, then the fine-tuning trial when the plan
    has ``finetune_steps`` (:func:`~ronas_optuna.final.finetune`); checkpoints at the end;
    refreshes the dashboard note. A cosine learning-rate schedule spans the trials planned here
    (with only a timeout, their number is unknown and the rate stays constant)."""
    objective = objective or build_objective(plan, device=device)
    write_ahead()  # the trials' many small commits do not wait for the disk
    warm_start(study, plan.search_space(), plan.settings)
    # a trial trained and checkpointed but killed before it was told is FAIL now: count what the study knows
    objective.trials_trained = sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False)
    )
    if n_trials is not None:
        objective.planned_trials = len(study.get_trials(deepcopy=False)) + n_trials
    callbacks: list[Any] = []
    if artifacts is not None and not any(isinstance(h, TrialFigures) for h in objective.hooks):
        figures = TrialFigures(objective.evaluator, artifact_store(artifacts), every=figures_every)
        objective.hooks.append(figures)
    if callback is not None:
        callbacks.append(callback)
    try:
        study.optimize(
            objective, n_trials=n_trials, timeout=timeout, callbacks=callbacks, gc_after_trial=False
        )
        if objective.write_error is not None:
            raise objective.write_error
        if n_trials != 0 and not _ends_with_finetune(study):
            finetune(study, objective, plan.settings.finetune.steps)
            if objective.write_error is not None:
                raise objective.write_error
    finally:
        if objective.write_error is None:  # else the disk is full: the newest good checkpoint stays
            objective.save()
        save_study_note(study, plan)
    return objective


def _ends_with_finetune(study: optuna.Study) -> bool:
    done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    return bool(done) and done[-1].user_attrs.get(ATTR_PHASE) in PHASES_FINETUNE


def trials_to_run(study: optuna.Study, trials: int | None, total: int | None) -> int | None:
    """``--trials N`` runs N more; ``--total N`` runs until the study has N finished trials (the
    fine-tuning trial and failed ones count), so the same command re-run after a crash converges."""
    if total is None:
        return trials
    finished = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    return max(0, total - finished)


def _beside_a_search(plan: SearchPlan) -> bool:
    """Take the run folder for an export; ``True`` when a live search holds it instead: the
    export then only reads the newest complete checkpoint and writes nothing in the folder."""
    try:
        lock.hold(plan.run_dir, "export")
        return False
    except RunFolderBusy:
        holder = lock.read_holder(plan.run_dir)
        if holder is None or holder.purpose != "search":
            raise
        return True


def export(
    study: optuna.Study,
    plan: SearchPlan,
    output: str | os.PathLike[str],
    *,
    device: str = "auto",
    use: str = "best",
    mirror: bool = False,
    objective: NASObjective | None = None,
    artifacts: str | os.PathLike[str] | None = None,
    limits: Limits | None = None,
    train_alone: int = 0,
    train_alone_seconds: float = 0.0,
) -> FinalModel:
    """Derive, evaluate and save the final model (the best that fits ``limits``; with
    ``train_alone`` steps or ``train_alone_seconds``, that architecture retrained alone from
    scratch: see :func:`~ronas_optuna.final.derive_best`); attach it to the study as an artifact.

    The output path and the study are checked before any evaluation.
    """
    out = Path(output)
    if out.is_dir():
        raise SettingsError(f"-o {out}: is a folder; give the model file's path, e.g. {out / 'model.pt'}")
    if not out.parent.is_dir():
        raise SettingsError(f"-o {out}: folder {out.parent} does not exist")
    if use == "best":
        best_trial(study, limits)  # a study without a usable trial stops here
    beside = objective is None and _beside_a_search(plan)
    objective = objective or build_objective(plan, device=device, read_only=beside)
    t0 = time.perf_counter()
    model = derive_best(
        study,
        objective,
        output=output,
        use=use,
        mirror=mirror,
        limits=limits,
        train_alone=train_alone,
        train_alone_seconds=train_alone_seconds,
    )
    model.source["checkpoint_trials"] = objective.trials_trained
    model.source["beside_running_search"] = beside
    model.metrics["eval_seconds"] = round(time.perf_counter() - t0, 2)
    if artifacts is not None:
        from .dashboard import upload_model

        upload_model(study, output, artifact_store(artifacts))
    return model


def export_front(
    study: optuna.Study,
    plan: SearchPlan,
    folder: str | os.PathLike[str],
    *,
    device: str = "auto",
    mirror: bool = False,
) -> list[FinalModel]:
    """``ronas export --pareto``: one model per Pareto-front member (see
    :func:`~ronas_optuna.final.derive_front`)."""
    if Path(folder).exists() and not Path(folder).is_dir():
        raise SettingsError(f"--pareto {folder}: is a file; give a folder")
    best_trial(study)  # a study without a usable trial stops here
    beside = _beside_a_search(plan)
    objective = build_objective(plan, device=device, read_only=beside)
    return derive_front(study, objective, folder, mirror=mirror)
