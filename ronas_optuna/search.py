"""One object for a whole search: the Python twin of ``ronas search`` and ``ronas export``.

    settings = SearchSettings(training=TrainingSettings(steps_per_trial=50, warmup_steps=500))
    search = create_search("Task04_Hippocampus", storage="sqlite:///nas.db", study_name="hippo",
                           settings=settings)
    search.optimize(n_trials=200)   # the trials, then the in-supernet fine-tuning (as the CLI does)
    model = search.export("model.pt")

It resolves the same plan as the CLI (spacing, split, search space, run folder beside the storage),
runs the same trials and fine-tuning, and derives the same final network from the shared weights
for the same settings. ``search.study`` and ``search.objective`` are there for a user's own
``study.optimize`` (then :meth:`Search.finetune` runs the fine-tuning trial).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .settings import SearchSettings
from .storage import StorageURL

if TYPE_CHECKING:
    import optuna

    from .limits import Limits
    from .model import FinalModel
    from .objective import NASObjective
    from .plan import SearchPlan

__all__ = ["Search", "create_search"]


def create_search(
    data: str | os.PathLike[str] | None,
    *,
    storage: str | StorageURL,
    study_name: str = "ronas",
    settings: SearchSettings | None = None,
    sampler: str = "ronas",
    run_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    override: bool = False,
    explicit: Collection[str] | None = None,
) -> Search:
    """Create the study and its plan, or resume them (``data`` may then be ``None``).

    Args:
        data: An MSD dataset folder.
        storage: Optuna storage URL, or a journal file ending in ``.log``.
        study_name: The study (and its run folder ``<storage stem>_runs/<study_name>``).
        settings: The search's settings (default :class:`SearchSettings`). On resume, the fields
            that differ from the defaults must match the plan, or be overridable with ``override``.
        sampler: ``ronas``, ``tpe``, ``random`` or ``gp``.
        run_dir: Plan, checkpoint and cache folder (default: beside the storage).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        override: Let budget settings (steps, learning rate, ...) replace a resumed plan's.
        explicit: The settings the user gave, checked against a resumed plan (default: the fields
            of ``settings`` that differ from the defaults; the CLI: the options on its command line).

    Raises:
        UserError: a bad dataset, storage or setting, in one line.
    """
    from .runner import prepare

    if explicit is None:
        given, defaults = (settings or SearchSettings()).to_dict(), SearchSettings().to_dict()
        explicit = [name for name, value in given.items() if value != defaults[name]]
    study, plan = prepare(
        str(data) if data is not None else None,
        storage,
        study_name,
        sampler=sampler,
        run_dir=run_dir,
        settings=settings,
        explicit=explicit,
        override=override,
    )
    return Search(study=study, plan=plan, storage=StorageURL.parse(storage), device=device)


@dataclass
class Search:
    """A study, its plan and (built on first use) its objective; see :func:`create_search`."""

    study: optuna.Study
    plan: SearchPlan
    storage: StorageURL
    device: str = "auto"
    _objective: NASObjective | None = field(default=None, repr=False)

    @property
    def objective(self) -> NASObjective:
        """The shared-weight objective (the supernet resumed from the run's checkpoint)."""
        if self._objective is None:
            from .runner import build_objective

            self._objective = build_objective(self.plan, device=self.device)
        return self._objective

    @property
    def settings(self) -> SearchSettings:
        return self.plan.settings

    def optimize(
        self, n_trials: int | None = None, *, timeout: float | None = None, total: int | None = None
    ) -> Search:
        """Run ``n_trials`` more trials (or until the study has ``total``, or ``timeout`` seconds),
        then the in-supernet fine-tuning trial of ``settings.finetune.steps`` steps, and checkpoint:
        what ``ronas search`` does."""
        from .runner import run_search, trials_to_run

        n = trials_to_run(self.study, n_trials, total)
        run_search(
            self.study,
            self.plan,
            n,
            timeout=timeout,
            device=self.device,
            artifacts=self.storage.artifact_dir,
            objective=self.objective,
        )
        return self

    def finetune(self) -> None:
        """The fine-tuning trial alone, after a user's own ``study.optimize(search.objective)``."""
        from .final import finetune

        finetune(self.study, self.objective, self.settings.finetune.steps)
        self.objective.save()

    def export(
        self,
        output: str | os.PathLike[str],
        *,
        use: str = "best",
        mirror: bool = False,
        limits: Limits | None = None,
        train_alone: int = 0,
        train_alone_seconds: float = 0.0,
    ) -> FinalModel:
        """Derive the final network from the shared weights, evaluate it and save it (``ronas
        export``): ``use="best"`` re-validates the top trials, ``"policy"`` takes the controller's
        most likely architecture; ``limits`` keeps only architectures within a budget;
        ``train_alone=N`` retrains the chosen architecture alone, from scratch, for N steps
        instead of keeping its shared weights (``ronas export --train-alone N``), and
        ``train_alone_seconds=S`` for S seconds of wall-clock time (``--train-alone 30m``)."""
        from .runner import export

        return export(
            self.study,
            self.plan,
            output,
            device=self.device,
            use=use,
            mirror=mirror,
            objective=self.objective,
            artifacts=self.storage.artifact_dir,
            limits=limits,
            train_alone=train_alone,
            train_alone_seconds=train_alone_seconds,
        )

    def export_front(self, folder: str | os.PathLike[str], *, mirror: bool = False) -> list[FinalModel]:
        """One model per member of a multi-objective study's Pareto front (``ronas export --pareto``)."""
        from .runner import export_front

        Path(folder).mkdir(parents=True, exist_ok=True)
        return export_front(self.study, self.plan, folder, device=self.device, mirror=mirror)

    def close(self) -> None:
        """Give up the run folder's lock (another process may then search it) and close the
        storage's connections (a SQLite file's write-ahead log is folded into it); other storages
        this process opened stay as they are."""
        from . import lock
        from .storage import close_storages

        lock.release(self.plan.run_dir)
        close_storages(self.storage.url)
