"""Run a whole search (used by the CLI and the benchmark): storage, sampler, plan, optimize, export."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from .dashboard import TrialFigures, artifact_store, default_artifact_dir, save_study_note
from .final import FinalModel, derive_best
from .objective import NASObjective
from .plan import SearchPlan
from .registry import make_sampler
from .settings import SearchSettings


def open_storage(url: str) -> str | optuna.storages.BaseStorage:
    """An RDB URL as is; a ``.log``/``.journal`` path becomes a file-backed ``JournalStorage``."""
    if url.endswith((".log", ".journal", ".jsonl")) and "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    if "://" not in url:
        raise ValueError(
            f"--storage {url!r}: give a URL such as sqlite:///search.db or a journal file ending in .log"
        )
    return url


def default_run_root(storage_url: str) -> Path:
    """``<stem>_runs`` beside a SQLite/journal file."""
    art = default_artifact_dir(storage_url)
    return art.with_name(art.name[: -len("_artifacts")] + "_runs")


def prepare(
    data: str | os.PathLike[str] | None,
    storage: str,
    study_name: str,
    *,
    sampler: str = "ronas",
    run_dir: str | os.PathLike[str] | None = None,
    settings: SearchSettings | None = None,
) -> tuple[optuna.Study, SearchPlan]:
    """Create or load the study and its plan (resolved once, then reused)."""
    st = open_storage(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=st)
        plan = SearchPlan.from_study(study)
    except KeyError:
        study, plan = None, None
    if plan is None:
        if data is None:
            raise ValueError(f"study {study_name!r} does not exist in {storage}; give the dataset")
        rd = Path(run_dir) if run_dir else default_run_root(storage) / study_name
        plan = SearchPlan.resolve(data, rd, settings)
    s = plan.settings
    smp = make_sampler(sampler, plan.search_space(), s.seed, constrained=s.memory_budget_gb is not None)
    study = optuna.create_study(
        study_name=study_name, storage=st, direction="maximize", sampler=smp, load_if_exists=True
    )
    study.set_user_attr("sampler", sampler)
    plan.save(study)
    return study, plan


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
    new trial starts after it), whichever comes first; checkpoints at the end; refreshes the
    dashboard note."""
    objective = objective or plan.build(device=device)
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
    finally:
        objective.save()
        save_study_note(study, plan)
    return objective


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
) -> FinalModel:
    """Derive, evaluate and save the final model; attach it to the best trial as an artifact."""
    objective = objective or plan.build(device=device)
    t0 = time.perf_counter()
    model = derive_best(study, objective, output=output, use=use, mirror=mirror)
    model.metrics["eval_seconds"] = round(time.perf_counter() - t0, 2)
    if artifacts is not None:
        from .dashboard import upload_model

        upload_model(study, output, artifact_store(artifacts))
    return model
