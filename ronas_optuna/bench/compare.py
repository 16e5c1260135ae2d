"""Baseline comparison: RONAS against TPE, Random and GP on the same shared-supernet objective.

Each (sampler, seed) is its own study in one storage, with a fresh supernet and the same budget
(warm-up, steps per trial, validation cases). Per study it records best-so-far validation Dice by trial
and by wall time, the mean validation Dice of the last third of its trials (how far the search has
settled on good paths; with shared weights, training along them is what makes the final network
good), the time spent in the sampler, and the final architecture, derived with its shared weights
(no retraining) and evaluated on held-out test volumes by full sliding-window inference.

References, at the same total number of training steps as one search:

* ``scratch``: each study's final architecture trained alone from scratch;
* ``hpo-tpe``: classic HPO, TPE where every trial trains a fresh network for ``scratch_steps //
  hpo_trials`` steps (no sharing).

Outputs (beside the storage, or in ``output``): ``benchmark.md``, ``benchmark.csv``,
``benchmark.json`` and ``benchmark.png``; the plot and table are attached to every study as
dashboard artifacts and the table as its note.

Results are kept in the storage and reused: a (fold, seed, method) whose study already holds a result
of the same benchmark settings is not run again, so an interrupted benchmark continues where it
stopped, seeds or samplers can be added later, and several processes can share the work (for example
one per sampler) with a last run that only writes the table. A finished study with other settings is
never replaced (an error names it). A search whose process was killed continues where it stopped:
each search keeps its supernet checkpoint under ``checkpoints/`` beside the table until its result
is kept, so a restarted benchmark loses at most the trial that was running (FAIL, marked
``benchmark:interrupted``, and run again) and its budget clock goes on from the study's record.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from ..attrs import ATTR_PHASE, PHASES_FINETUNE
from ..controller import SEARCH_CONTROLLER
from ..dashboard import artifact_store
from ..data.msd import DataError, MSDDataset, PreprocessedCase
from ..data.patches import candidate_patch_sizes
from ..device import resolve_device
from ..errors import SettingsError, StorageError
from ..evaluator import Evaluator
from ..files import previous_path
from ..final import derive_best, finetune
from ..model import FinalModel
from ..network import RONASNet
from ..objective import NASObjective
from ..registry import check_sampler_names, make_sampler
from ..runner import warm_start
from ..settings import SearchSettings
from ..space import Architecture, SearchSpace
from ..storage import StorageURL, open_storage
from ..supernet import Supernet
from ..trainer import train_network
from .config import BenchmarkConfig
from .report import plot_curves, summary_markdown
from .timing import TimedSampler
from .variant import controller_variant

#: The settings of the README's Task901 benchmarks (3 mm, depth 3, widths 8-32, a 32^3 patch,
#: 2 steps per trial at lr 0.01 after 100 warm-up steps): small enough for 2 CPU cores.
README_SETTINGS = SearchSettings.from_options(
    spacing=3.0,
    depth=3,
    base_width=8,
    max_width=32,
    steps_per_trial=2,
    lr=0.01,
    warmup_steps=100,
    max_patch_voxels=32768,
    n_patch_sizes=2,
)


@dataclass
class BenchmarkResult:
    rows: list[dict[str, Any]]
    markdown: str
    table_path: Path
    plot_path: Path
    curves: dict[str, Any]


@dataclass
class _Setup:
    """What every study of one benchmark shares."""

    cfg: BenchmarkConfig
    fold: int
    dataset: MSDDataset
    space: SearchSpace
    train_ids: list[str]
    val_ids: list[str]
    test_ids: list[str]
    test_cases: list[PreprocessedCase]
    scratch_steps: int | None
    #: Where each search keeps its supernet checkpoint while it runs (``None``: none, no resume).
    checkpoints: Path | None = None

    def checkpoint(self, study_name: str) -> Path | None:
        return self.checkpoints / f"{study_name}.pt" if self.checkpoints is not None else None

    def resumable(self, name: str, *what: str) -> dict[str, Any]:
        """Where a reference network's training (``name``) keeps its checkpoint, and the tag that
        resumes it: this benchmark's key and ``what`` (a changed configuration starts over)."""
        tag = hashlib.sha256("\n".join([self.key(), *what]).encode()).hexdigest()[:16]
        return {"checkpoint": self.checkpoint(name), "tag": tag}

    def key(self) -> str:
        """What makes two results of one (fold, seed, method) comparable (the from-scratch steps are
        not part of it: a kept row keeps its own twin)."""
        cfg = self.cfg
        return json.dumps(
            {
                "data": Path(cfg.data).name,
                "settings": cfg.settings.to_dict(),
                "trials": cfg.trials,
                "timeout": cfg.timeout,
                "split": [self.train_ids, self.val_ids, self.test_ids],
                "handmade_recipe": cfg.handmade_recipe,
                # only when set: the keys of results kept before the option stay equal
                **({"controller": cfg.controller} if cfg.controller != "default" else {}),
                # the policy RONAS ran with, resolved: a changed default is not a kept result's
                "policy": dataclasses.asdict(controller_variant(cfg.controller, SEARCH_CONTROLLER)),
            },
            sort_keys=True,
        )

    def study_name(self, method: str, seed: int) -> str:
        return f"bench-{method}{f'-fold{self.fold}' if self.cfg.folds > 1 else ''}-seed{seed}"

    def objective(self, seed: int, checkpoint: Path | None = None) -> NASObjective:
        """A fresh supernet and objective; ``seed`` seeds its weights and patch stream. With a
        ``checkpoint`` that exists, the supernet resumes from it."""
        torch.manual_seed(seed)
        sn = Supernet(self.space, self.dataset.in_channels, self.dataset.num_classes)
        settings = self.cfg.settings.replace(seed=seed)
        return NASObjective.build(
            sn,
            self.dataset,
            settings=settings,
            train_ids=self.train_ids,
            val_ids=self.val_ids,
            device=self.cfg.device,
            checkpoint=checkpoint,
        )

    def test_dice(
        self, objective: NASObjective, net: torch.nn.Module, patch: tuple[int, int, int]
    ) -> tuple[float, dict[str, float]]:
        """Mean test Dice and each test case's own (mean over its foreground classes)."""
        res = objective.evaluator.evaluate(net, patch, cases=self.test_cases, overlap=0.5)
        return res.mean, per_case(self.test_ids, res.per_case)

    def monitor(self, patch: tuple[int, ...]) -> Callable[[torch.nn.Module], float] | None:
        """The learning-curve score of a reference network: Dice on the configured curve cases
        (``None``: no curve)."""
        if not self.cfg.curve_ids:
            return None
        evaluator = Evaluator(
            self.dataset.load_all(self.cfg.curve_ids),
            self.dataset.num_classes,
            device=resolve_device(self.cfg.device),
        )
        return lambda net: evaluator.evaluate(net, patch, overlap=0.25).mean


def per_case(case_ids: list[str], scores: list[list[float]]) -> dict[str, float]:
    """Each case's Dice, the mean over its foreground classes (rounded to 5 digits)."""
    return {c: round(float(np.mean(v)), 5) for c, v in zip(case_ids, scores, strict=True)}


def total_steps(cfg: BenchmarkConfig) -> int:
    """Shared-weight steps one search plans: warm-up, trials, in-supernet fine-tuning."""
    s = cfg.settings
    return s.training.warmup_steps + cfg.trials * s.training.steps_per_trial + s.finetune.steps


def budget_clock(device: str) -> Callable[[], float]:
    """The clock that budgets are measured on: this process's CPU time on the CPU (other processes
    sharing the machine do not shrink a budget), wall time on an accelerator."""
    return time.process_time if resolve_device(device).type == "cpu" else time.perf_counter


def split_three(ids: list[str], seed: int) -> tuple[list[str], list[str], list[str]]:
    """Seeded train / validation / test split (at least one case each)."""
    if len(ids) < 3:
        raise DataError(f"the benchmark needs at least 3 cases (train, validation, test), got {len(ids)}")
    perm = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n = max(1, round(0.2 * len(ids)))
    return sorted(perm[2 * n :]), sorted(perm[n : 2 * n]), sorted(perm[:n])


def train_from_scratch(
    objective: NASObjective,
    arch: Architecture,
    steps: int,
    seed: int,
    *,
    cases: list[PreprocessedCase] | None = None,
) -> RONASNet:
    """``arch`` as a fresh standalone network trained alone for ``steps`` steps with the search's
    optimizer settings, on ``cases`` (default: the objective's training cases)."""
    torch.manual_seed(seed)
    sp = objective.supernet
    net = RONASNet(sp.space, arch, sp.in_channels, sp.num_classes, ds_levels=sp.ds_levels)
    t = objective.trainer
    train_network(
        net,
        cases if cases is not None else t.cases,
        objective.patch_for(arch),
        steps,
        batch_size=t.batch_size,
        lr=t.lr,
        weight_decay=t.weight_decay,
        device=t.device,
        amp=t.amp,
        seed=seed + 1000,
    )
    return net


def alone_for_seconds(
    objective: NASObjective,
    arch: Architecture,
    seconds: float,
    seed: int,
    *,
    clock: Callable[[], float],
    recipe: str = "search",
    monitor: Callable[[torch.nn.Module], float] | None = None,
    resume: dict[str, Any] | None = None,
) -> tuple[RONASNet, int, list[tuple[int, float]]]:
    """``arch`` trained alone, from scratch, for ``seconds`` on ``clock``, on the cases the
    search's final network trained on (the fine-tuning's, else the training cases), with the
    search's batch: the architecture's own network at equal compute. ``recipe`` ``search`` trains
    with the search's optimizer and constant learning rate; a name of
    :data:`~.handmade.RECIPES` trains as DynUNet does (nnU-Net's SGD with the poly schedule, Adam).
    ``resume``: :func:`~.handmade.train_for_seconds`'s ``checkpoint`` and ``tag``."""
    from .handmade import RECIPES, Recipe, train_for_seconds

    torch.manual_seed(seed)
    sp, t = objective.supernet, objective.trainer
    net = RONASNet(sp.space, arch, sp.in_channels, sp.num_classes, ds_levels=sp.ds_levels)
    cases = (
        objective.finetune_cases
        if objective.settings.finetune.steps > 0 and objective.finetune_cases
        else t.cases
    )
    trained, steps, curve = train_for_seconds(
        net,
        cases,
        objective.patch_for(arch),
        seconds,
        batch_size=t.batch_size,
        recipe=RECIPES[recipe] if recipe != "search" else Recipe("search", "adam", t.lr, poly=False),
        device=t.device,
        seed=seed + 1000,
        clock=clock,
        monitor=monitor,
        **(resume or {}),
    )
    assert isinstance(trained, RONASNet)
    return trained, steps, curve


def fold_splits(cfg: BenchmarkConfig, case_ids: list[str]) -> list[tuple[list[str], list[str], list[str]]]:
    """``(train, validation, test)`` ids per fold; one fold keeps the configured single split."""
    if cfg.folds <= 1:
        _, val_ids, test_ids = split_three(case_ids, cfg.split_seed)
        val_ids = list(cfg.val_ids) if cfg.val_ids else val_ids
        test_ids = list(cfg.test_ids) if cfg.test_ids else test_ids
        rest = [i for i in case_ids if i not in val_ids and i not in test_ids]
        train_ids = list(cfg.train_ids) if cfg.train_ids else rest
        unknown = sorted(set(train_ids + val_ids + test_ids) - set(case_ids))
        if unknown:
            raise DataError(f"{cfg.data}: no case named {', '.join(unknown[:3])}")
        if set(train_ids) & set(val_ids + test_ids) or set(val_ids) & set(test_ids):
            raise DataError(f"{cfg.data}: the train, validation and test cases overlap")
        return [(train_ids, val_ids, test_ids)]
    if not 2 <= cfg.folds <= len(case_ids) or len(case_ids) < 3:
        raise DataError(f"--folds {cfg.folds}: need 2 to {len(case_ids)} folds and at least 3 cases")
    perm = [case_ids[i] for i in np.random.default_rng(cfg.split_seed).permutation(len(case_ids))]
    out = []
    for k in range(cfg.folds):
        test = sorted(perm[k :: cfg.folds])
        rest = [i for i in perm if i not in test]
        if len(rest) < 2:
            raise DataError(f"--folds {cfg.folds}: fold {k} leaves {len(rest)} case(s) to search on; need 2")
        n_val = max(1, round(0.2 * len(rest)))
        out.append((sorted(rest[n_val:]), sorted(rest[:n_val]), test))
    return out


def _setup(cfg: BenchmarkConfig, dataset: MSDDataset, fold: int, split: tuple[list[str], ...]) -> _Setup:
    s = cfg.settings
    train_ids, val_ids, test_ids = (list(x) for x in split)
    patches = candidate_patch_sizes(
        dataset.median_shape(train_ids),
        depth=s.space.depth,
        n=s.space.n_patch_sizes,
        max_voxels=s.space.max_patch_voxels,
    )
    space = SearchSpace.default(
        depth=s.space.depth, base_width=s.space.base_width, max_width=s.space.max_width, patch_sizes=patches
    )
    return _Setup(
        cfg,
        fold,
        dataset,
        space,
        train_ids,
        val_ids,
        test_ids,
        dataset.load_all(test_ids),
        cfg.scratch_steps,
    )


#: The references whose rows depend on ``handmade_recipe`` (no other row's key compares it).
_DYNUNET_METHODS = ("dynunet", "dynunet-recipe")


def finished_study(
    setup: _Setup,
    storage: Any,
    study_name: str,
    *,
    resumable: Path | None = None,
    method: str | None = None,
) -> optuna.Study | None:
    """The study's kept result for these settings, or ``None``. An unfinished study (no result) is
    deleted, unless it is a search of these settings whose checkpoint ``resumable`` is still there:
    then it is returned without a result, to be continued. Raises ``StorageError`` for a finished
    study of other settings. ``method`` (the study's sampler or reference) leaves the DynUNet recipe
    out of the comparison unless it is DynUNet's; ``None`` compares everything."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return None
    attrs = study.user_attrs
    dynunet = method is None or method in _DYNUNET_METHODS  # the recipe changes only their rows
    if "benchmark:result" not in attrs:
        same = resumable is not None and _same_key(attrs.get("benchmark:key"), setup.key(), dynunet=dynunet)
        if same and resumable is not None and (resumable.exists() or previous_path(resumable).exists()):
            return study
        optuna.delete_study(study_name=study_name, storage=storage)
        return None
    if not _same_key(attrs.get("benchmark:key"), setup.key(), dynunet=dynunet):
        raise StorageError(
            f"{setup.cfg.storage}: study {study_name!r} holds a benchmark result with other settings; "
            "use another --storage (results are never replaced)"
        )
    return study


def _same_key(stored: Any, key: str, *, dynunet: bool = True) -> bool:
    """Whether a kept result's key equals ``key``, its settings read as this version reads them (a
    setting added since then takes its default, as it did in the run that made the result). A key
    written before the resolved policy was recorded is compared without it; the DynUNet recipe
    only where the result is DynUNet's (``dynunet``)."""
    try:
        old, new = json.loads(stored), json.loads(key)
        old["settings"] = SearchSettings.from_dict(old["settings"]).to_dict()
    except (TypeError, ValueError, KeyError):
        return False
    if "policy" not in old:
        new.pop("policy", None)
    if not dynunet:
        old.pop("handmade_recipe", None)
        new.pop("handmade_recipe", None)
    return json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True)


def _curve(trials: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
    """Best-so-far validation Dice by trial and by seconds since the first trial started."""
    if not trials:  # a result restored without its trials (population_curve.py --restore)
        return {"best": [], "time": []}
    vals = np.array([t.value if t.value is not None and np.isfinite(t.value) else 0.0 for t in trials])
    start = trials[0].datetime_start
    ends = np.array([(t.datetime_complete - start).total_seconds() for t in trials])  # type: ignore[operator]
    return {"best": np.maximum.accumulate(vals).tolist(), "time": ends.tolist()}


def _run_study(
    setup: _Setup, storage: Any, name: str, seed: int
) -> tuple[dict[str, Any], dict[str, Any], optuna.Study, bool]:
    """One (sampler, seed) search, its derived network on the test cases, its from-scratch twin;
    the last item says whether it ran now (``False``: a kept result). An interrupted search
    continues from its checkpoint and trials (the trial a kill interrupted is FAIL and run again);
    its budget clock continues from what the study recorded."""
    cfg = setup.cfg
    study_name = setup.study_name(name, seed)
    checkpoint = setup.checkpoint(study_name)
    kept = finished_study(setup, storage, study_name, resumable=checkpoint, method=name)
    if kept is not None and "benchmark:result" in kept.user_attrs:
        return dict(kept.user_attrs["benchmark:result"]), _curve(kept.get_trials(deepcopy=False)), kept, False
    controller = controller_variant(cfg.controller, SEARCH_CONTROLLER) if name == "ronas" else None
    timed = TimedSampler(make_sampler(name, setup.space, seed, controller_config=controller))
    study = _open_study(setup, storage, study_name, kept, timed, checkpoint)
    objective = setup.objective(seed, checkpoint)
    objective.planned_trials = cfg.trials
    clock = _StudyClock.resume(study, budget_clock(cfg.device))
    objective.on_save.append(lambda: clock.record(study))  # the fine-tuning's parts resume with their time
    before, before_cases = _search_and_finetune(setup, study, objective, clock)
    search_s = clock.search_s()
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(INTERRUPTED)]
    t_export = time.perf_counter()
    final = derive_best(study, objective, top_k=3, overlap=0.25)
    export_s = time.perf_counter() - t_export
    # search and export on the budget clock: the references' time. The first export's is kept, so
    # that a run stopped after it gives its references the same budget (and resumes them) again.
    if "benchmark:exported" not in study.user_attrs:
        study.set_user_attr("benchmark:exported", [search_s, export_s, clock.budget_s()])
    search_s, export_s, budget_s = study.user_attrs["benchmark:exported"]
    device = objective.trainer.device
    test_dice, test_cases = setup.test_dice(objective, final.net.to(device), final.patch_size)
    t1 = time.perf_counter()
    twin = _twin(setup, objective, final, budget_s, seed, clock.budget, f"{study_name}-alone")
    vals = np.array([t.value if t.value is not None and np.isfinite(t.value) else 0.0 for t in trials])
    row = {
        "sampler": name,
        "fold": setup.fold,
        "seed": seed,
        "trials": len(trials),
        "best_val_dice": float(vals.max()),
        "late_val_dice": float(vals[-max(1, len(vals) // 3) :].mean()),
        "final_val_dice": float(final.metrics["val_dice"]),
        "test_dice": float(test_dice),
        "before_finetune_test_dice": before,
        "scratch_test_dice": float(twin.dice),
        "scratch_steps": twin.steps,
        "scratch_recipe": cfg.scratch_recipe,
        "test_dice_cases": test_cases,
        "before_finetune_test_dice_cases": before_cases,
        "scratch_test_dice_cases": twin.cases,
        "scratch_curve": twin.curve,
        "arch": final.arch.code,
        "search_s": round(search_s, 1),
        "export_s": round(export_s, 1),
        "budget_s": round(budget_s, 1),
        "scratch_s": round(time.perf_counter() - t1, 1),
        "sampler_ms_per_trial": round(1e3 * float(np.mean(list(timed.seconds.values()))), 2)
        if timed.seconds
        else 0.0,
    }
    _keep(study, setup, row)
    _remove_checkpoints(checkpoint)  # the result is kept: nothing left to resume
    return row, _curve(trials), study, True


def _open_study(
    setup: _Setup,
    storage: Any,
    study_name: str,
    unfinished: optuna.Study | None,
    sampler: optuna.samplers.BaseSampler,
    checkpoint: Path | None,
) -> optuna.Study:
    """A new study for the search (with its key, so that it can be resumed, and the settings' warm
    start), or the ``unfinished`` one loaded with ``sampler`` and its interrupted trials failed."""
    if unfinished is not None:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
        _fail_interrupted(study)
        return study
    _remove_checkpoints(checkpoint)  # a stale one of a deleted study must not be resumed
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", sampler=sampler)
    study.set_user_attr("benchmark", setup.cfg.to_dict())
    study.set_user_attr("benchmark:key", setup.key())  # an unfinished study can be resumed
    warm_start(study, setup.space, setup.cfg.settings)
    return study


@dataclass
class _StudyClock:
    """A search's wall time and budget time (``budget``: CPU or GPU clock), continued from what its
    study recorded in ``benchmark:spent``; measurements outside the method are excluded."""

    budget: Callable[[], float]
    t0: float
    c0: float

    @classmethod
    def resume(cls, study: optuna.Study, budget: Callable[[], float]) -> _StudyClock:
        spent = study.user_attrs.get("benchmark:spent", {"budget_s": 0.0, "search_s": 0.0})
        return cls(budget, time.perf_counter() - spent["search_s"], budget() - spent["budget_s"])

    def search_s(self) -> float:
        return time.perf_counter() - self.t0

    def budget_s(self) -> float:
        return self.budget() - self.c0

    def exclude(self, since: float) -> None:
        """Leave out of the budget what ran since ``since`` (a reading of ``budget``)."""
        self.c0 += self.budget() - since

    def record(self, study: optuna.Study, _: Any = None) -> None:
        """Store the time spent on ``study`` (also an Optuna callback)."""
        study.set_user_attr("benchmark:spent", {"budget_s": self.budget_s(), "search_s": self.search_s()})


def _search_and_finetune(
    setup: _Setup, study: optuna.Study, objective: NASObjective, clock: _StudyClock
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
class _Twin:
    """The final architecture trained alone: test Dice (mean, per case), steps, learning curve."""

    dice: float = float("nan")
    cases: dict[str, float] = dataclasses.field(default_factory=dict)
    steps: int = 0  # 0: no twin
    curve: list[tuple[int, float]] = dataclasses.field(default_factory=list)


def _twin(
    setup: _Setup,
    objective: NASObjective,
    final: FinalModel,
    budget_s: float,
    seed: int,
    clock: Callable[[], float],
    tag: str,
) -> _Twin:
    """The final architecture trained alone: for the search's budget on ``clock`` on the cases the
    final network trained on (``setup.scratch_steps`` None, resumable under ``tag``), or for a fixed
    number of steps."""
    cfg = setup.cfg
    if setup.scratch_steps is None:  # equal compute
        scratch, steps, curve = alone_for_seconds(
            objective,
            final.arch,
            budget_s,
            seed,
            clock=clock,
            recipe=cfg.scratch_recipe,
            monitor=setup.monitor(final.patch_size),
            resume=setup.resumable(tag, final.arch.code, f"{budget_s:.3f}"),
        )
        return _Twin(*setup.test_dice(objective, scratch, final.patch_size), steps, curve)
    if setup.scratch_steps > 0:
        cases = objective.finetune_cases if cfg.settings.finetune.steps > 0 else None
        scratch = train_from_scratch(objective, final.arch, setup.scratch_steps, seed, cases=cases)
        return _Twin(*setup.test_dice(objective, scratch, final.patch_size), setup.scratch_steps)
    return _Twin()


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


def _run_hpo(setup: _Setup, seed: int, hpo_trials: int) -> dict[str, Any]:
    """Classic HPO without sharing: TPE trials that each train a fresh network."""
    k = max(1, total_steps(setup.cfg) // hpo_trials)
    objective = setup.objective(seed)
    best: dict[str, Any] = {"dice": -1.0}

    def hpo(trial: optuna.Trial) -> float:
        arch = setup.space.suggest(trial)
        net = train_from_scratch(objective, arch, k, seed * 1000 + trial.number)
        d = objective.evaluator.evaluate(net, objective.patch_for(arch), overlap=0.25).mean
        if d > best["dice"]:
            best.update(dice=d, net=net, arch=arch)
        return d

    t0 = time.perf_counter()
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    st.optimize(hpo, n_trials=hpo_trials)
    arch = best["arch"]
    test_dice, test_cases = setup.test_dice(objective, best["net"], objective.patch_for(arch))
    return {
        "test_dice_cases": test_cases,
        "sampler": "hpo-tpe",
        "fold": setup.fold,
        "seed": seed,
        "trials": hpo_trials,
        "best_val_dice": float(best["dice"]),
        "late_val_dice": float("nan"),
        "final_val_dice": float(best["dice"]),
        "test_dice": float(test_dice),
        "scratch_test_dice": float("nan"),
        "arch": arch.code,
        "search_s": round(time.perf_counter() - t0, 1),
        "export_s": 0.0,
        "budget_s": 0.0,
        "scratch_s": 0.0,
        "sampler_ms_per_trial": 0.0,
    }


def _run_handmade(setup: _Setup, storage: Any, seed: int, seconds: float) -> dict[str, Any]:
    """MONAI DynUNet (nnU-Net defaults) on the search's training and validation cases, with the
    recipe chosen on validation (:func:`_handmade_recipe`), for ``seconds`` on the budget clock."""
    ds = setup.dataset
    name, chosen_by = _handmade_recipe(setup, storage, seconds)
    net, steps, train_s, curve = _train_dynunet(
        setup,
        seed,
        seconds,
        name,
        setup.train_ids + setup.val_ids,
        monitor=setup.monitor(_handmade_patch(setup)),
        name=setup.study_name("dynunet", seed),
    )
    evaluator = Evaluator(setup.test_cases, ds.num_classes, device=resolve_device(setup.cfg.device))
    res = evaluator.evaluate(net, _handmade_patch(setup), overlap=0.5)
    nan = float("nan")
    return {
        "test_dice_cases": per_case(setup.test_ids, res.per_case),
        "sampler": "dynunet",
        "fold": setup.fold,
        "seed": seed,
        "trials": 0,
        "best_val_dice": nan,
        "late_val_dice": nan,
        "final_val_dice": nan,
        "test_dice": float(res.mean),
        "scratch_test_dice": nan,
        "arch": f"DynUNet {'x'.join(map(str, _handmade_patch(setup)))}, {name}, {steps} steps",
        "recipe": name,
        "recipe_val_dice": chosen_by,
        "curve": curve,
        "search_s": round(train_s, 1),
        "export_s": 0.0,
        "budget_s": round(seconds, 1),
        "scratch_s": 0.0,
        "sampler_ms_per_trial": 0.0,
    }


def _handmade_patch(setup: _Setup) -> tuple[int, ...]:
    return tuple(int(v) for v in str(setup.space["patch"].choices[0]).split("x"))  # the largest


def _train_dynunet(
    setup: _Setup,
    seed: int,
    seconds: float,
    recipe: str,
    case_ids: list[str],
    *,
    monitor: Callable[[torch.nn.Module], float] | None = None,
    name: str | None = None,
) -> tuple[torch.nn.Module, int, float, list[tuple[int, float]]]:
    """DynUNet trained on ``case_ids`` with ``recipe`` for ``seconds`` on the budget clock; with a
    ``name``, resumable from its checkpoint of that name."""
    from .handmade import RECIPES, dynunet, train_for_seconds

    cfg, ds = setup.cfg, setup.dataset
    patch = _handmade_patch(setup)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    net, steps, curve = train_for_seconds(
        dynunet(ds.in_channels, ds.num_classes, patch),
        ds.load_all(case_ids),
        patch,
        seconds,
        batch_size=cfg.settings.data.batch_size,
        recipe=RECIPES[recipe],
        device=resolve_device(cfg.device),
        seed=seed + 2000,
        clock=budget_clock(cfg.device),
        monitor=monitor,
        **(setup.resumable(name, recipe, f"{seconds:.3f}", *case_ids) if name else {}),
    )
    return net, steps, time.perf_counter() - t0, curve


def _handmade_recipe(setup: _Setup, storage: Any, seconds: float) -> tuple[str, dict[str, float]]:
    """The DynUNet recipe of this fold: the configured one, or (``auto``) the one whose network,
    trained on the training cases alone for ``seconds``, scores higher on the validation cases;
    chosen once per fold (seed 0) and kept in the storage. Test cases are never read here."""
    cfg = setup.cfg
    if cfg.handmade_recipe != "auto":
        return cfg.handmade_recipe, {}

    def choose() -> dict[str, Any]:
        from .handmade import RECIPES

        val = Evaluator(
            setup.dataset.load_all(setup.val_ids),
            setup.dataset.num_classes,
            device=resolve_device(cfg.device),
        )
        scores = {}
        for name in RECIPES:
            net, _, _, _ = _train_dynunet(
                setup,
                0,
                seconds,
                name,
                setup.train_ids,
                name=f"{setup.study_name('dynunet-recipe', 0)}-{name}",
            )
            scores[name] = round(float(val.evaluate(net, _handmade_patch(setup), overlap=0.5).mean), 5)
        best = max(scores, key=lambda n: scores[n])
        return {"sampler": "dynunet-recipe", "fold": setup.fold, "recipe": best, "val_dice": scores}

    row = _kept_row(setup, storage, "dynunet-recipe", 0, choose)
    return str(row["recipe"]), dict(row["val_dice"])


def run_benchmark(cfg: BenchmarkConfig, *, echo: Callable[[str], None] = print) -> BenchmarkResult:
    """Run every (fold, seed, sampler) study and the references; write table and plot (one
    objective; two: :func:`~ronas_optuna.bench.pareto.run_pareto_benchmark`)."""
    if "," in cfg.settings.objectives.metrics:
        raise SettingsError(
            f"objectives {cfg.settings.objectives.metrics}: compare fronts with "
            "bench.pareto.run_pareto_benchmark"
        )
    check_sampler_names(cfg.samplers)
    art = StorageURL.parse(cfg.storage).artifact_dir
    out_dir = Path(cfg.output) if cfg.output else art.with_name(art.name.replace("_artifacts", "_benchmark"))
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = MSDDataset(cfg.data, spacing=cfg.settings.data.spacing, cache_dir=out_dir / "cache")
    splits = fold_splits(cfg, dataset.case_ids)
    storage = open_storage(cfg.storage)
    rows: list[dict[str, Any]] = []
    curves: dict[str, Any] = defaultdict(list)
    fresh: list[optuna.Study] = []
    hpo_trials = cfg.hpo_trials if cfg.hpo_trials is not None else max(2, cfg.trials // 10)
    t_start = time.perf_counter()
    for fold in range(len(splits)) if cfg.only_folds is None else sorted(set(cfg.only_folds)):
        setup = _setup(cfg, dataset, fold, splits[fold])
        setup.checkpoints = out_dir / "checkpoints"  # an interrupted search continues from its own
        setup.checkpoints.mkdir(exist_ok=True)
        echo(
            f"fold {fold}: train {setup.train_ids}, validation {setup.val_ids}, test {setup.test_ids}; "
            f"patches {setup.space['patch'].choices}"
        )
        for seed in range(cfg.seeds) if cfg.only_seeds is None else sorted(set(cfg.only_seeds)):
            _run_fold_seed(setup, storage, seed, hpo_trials, rows, curves, fresh, echo)
    md = summary_markdown(rows, cfg, total_steps(cfg), hpo_trials, time.perf_counter() - t_start)
    plot = _write_outputs(out_dir, cfg, rows, curves, md)
    _attach(fresh, artifact_store(art), plot, md)
    return BenchmarkResult(rows, md, out_dir / "benchmark.csv", plot, dict(curves))


def _run_fold_seed(
    setup: _Setup,
    storage: Any,
    seed: int,
    hpo_trials: int,
    rows: list[dict[str, Any]],
    curves: dict[str, Any],
    fresh: list[optuna.Study],
    echo: Callable[[str], None],
) -> None:
    """Every method on one fold with one seed; rows and curves are appended to, and the studies
    that ran now to ``fresh``."""
    cfg = setup.cfg
    budget: list[float] = []
    for name in cfg.samplers:
        row, curve, study, ran = _run_study(setup, storage, name, seed)
        rows.append(row)
        curves[name].append(curve)
        if ran:
            fresh.append(study)
        if name == "ronas" or not budget:
            # rows kept from before budgets were clocked separately: their wall time
            budget = [float(row.get("budget_s", row["search_s"] + row["export_s"]))]
        echo(
            f"  {study.study_name}: best val {row['best_val_dice']:.4f}, test {row['test_dice']:.4f} "
            f"(scratch {row['scratch_test_dice']:.4f}), {row['search_s']:.0f} s, {row['arch']}"
            + ("" if ran else " (kept)")
        )
    if hpo_trials > 0:
        row = _kept_row(setup, storage, "hpo-tpe", seed, lambda: _run_hpo(setup, seed, hpo_trials))
        rows.append(row)
        echo(f"  hpo-tpe seed {seed}: best val {row['best_val_dice']:.4f}, test {row['test_dice']:.4f}")
    if cfg.handmade:
        seconds = budget[0] if budget else 60.0
        row = _kept_row(setup, storage, "dynunet", seed, lambda: _run_handmade(setup, storage, seed, seconds))
        rows.append(row)
        echo(f"  dynunet seed {seed}: {row['arch']} in {row['search_s']:.0f} s, test {row['test_dice']:.4f}")


def _kept_row(
    setup: _Setup, storage: Any, method: str, seed: int, run: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """A reference's row, kept in a study of its own (no trials) so that it is reused like a search."""
    name = setup.study_name(method, seed)
    kept = finished_study(setup, storage, name, method=method)
    if kept is not None:
        return dict(kept.user_attrs["benchmark:result"])
    row = run()
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        # another process (another seed on this storage) kept it first: every process uses that one
        kept = finished_study(setup, storage, name, method=method)
        if kept is not None:
            return dict(kept.user_attrs["benchmark:result"])
        raise
    study.set_user_attr("benchmark", setup.cfg.to_dict())
    _keep(study, setup, row)
    return row


def _keep(study: optuna.Study, setup: _Setup, row: dict[str, Any]) -> None:
    """Store a finished result with the key it is reused under (the key first: a study with a
    result always has its key)."""
    study.set_user_attr("benchmark:key", setup.key())
    study.set_user_attr("benchmark:result", row)


def _write_outputs(
    out_dir: Path, cfg: BenchmarkConfig, rows: list[dict[str, Any]], curves: dict[str, Any], md: str
) -> Path:
    (out_dir / "benchmark.md").write_text(md)
    with open(out_dir / "benchmark.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)
    (out_dir / "benchmark.json").write_text(
        json.dumps({"config": cfg.to_dict(), "rows": rows, "curves": curves}, indent=1)
    )
    return plot_curves(curves, out_dir / "benchmark.png")


def _attach(studies: list[optuna.Study], store: Any, plot: Path, md: str) -> None:
    """The plot as an artifact and the table as the note of every study."""
    from optuna.artifacts import upload_artifact
    from optuna_dashboard import save_note

    for st in studies:
        upload_artifact(artifact_store=store, file_path=str(plot), study_or_trial=st, mimetype="image/png")
        save_note(st, md)
