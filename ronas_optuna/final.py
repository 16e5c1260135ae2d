"""The final model without retraining: pick, derive, evaluate, save one self-describing file (or,
on request, the picked architecture retrained alone: :func:`train_from_scratch`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from .attrs import (
    ATTR_ARCH,
    ATTR_FLOPS,
    ATTR_LATENCY,
    ATTR_MEMORY,
    ATTR_MEMORY_METHOD,
    ATTR_NO_CREDIT,
    ATTR_PHASE,
    ATTR_STEPS,
    PHASE_FINETUNE,
    within_budget,
)
from .data.msd import PreprocessedCase
from .errors import SettingsError, StorageError
from .files import atomic_write_text
from .limits import Limits
from .model import FinalModel
from .network import RONASNet
from .objective import NASObjective
from .sampler import RONASSampler
from .space import Architecture


def policy_sampler(study: optuna.Study) -> RONASSampler | None:
    """The study's :class:`RONASSampler`, also behind wrappers that expose it as ``inner``."""
    sampler: Any = study.sampler
    while not isinstance(sampler, RONASSampler) and hasattr(sampler, "inner"):
        sampler = sampler.inner
    return sampler if isinstance(sampler, RONASSampler) else None


def best_trial(study: optuna.Study, limits: Limits | None = None) -> optuna.trial.FrozenTrial:
    """The COMPLETE trial with the best validation Dice (the first objective) that respects the
    memory budget (if one was set) and ``limits``."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if within_budget(t)]
    if not done:
        raise StorageError(f"study {study.study_name!r} has no completed trial within budget")
    fitting = [t for t in done if limits is None or limits.fits(t.user_attrs)]
    if not fitting:
        assert limits is not None
        raise SettingsError(f"no completed trial fits {limits}: {limits.refusal(done)}")
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    return max(fitting, key=lambda t: (sign * _value(t), -t.number))


def _value(t: optuna.trial.FrozenTrial) -> float:
    """A trial's validation Dice (its first objective)."""
    assert t.values is not None
    return t.values[0]


def finetune(study: optuna.Study, objective: NASObjective, steps: int) -> optuna.trial.FrozenTrial | None:
    """The fine-tuning phase: the chosen architecture keeps training inside the supernet.

    After the search, one more trial trains the policy's most likely architecture (for a study
    whose sampler is :class:`RONASSampler`; otherwise the best trial's) for ``steps`` steps on
    the shared weights and validates it, like the paper's child network that keeps being
    optimised during the search. It is an ordinary trial of the study (enqueued, so the
    controller does not learn from it) with the user attrs ``phase="finetune"`` and ``steps``;
    nothing is trained from scratch. Returns it (``None`` when ``steps`` is 0 or nothing is
    chosen yet).
    """
    if steps < 1:
        return None
    sampler = policy_sampler(study)
    params = sampler.most_likely_params(study) if sampler is not None else None
    if params is None:
        try:
            params = best_trial(study).params
        except ValueError:
            return None
    attrs = {ATTR_PHASE: PHASE_FINETUNE, ATTR_STEPS: steps, ATTR_NO_CREDIT: True}  # the policy learns nothing
    study.enqueue_trial(params, user_attrs=attrs)
    ran: list[optuna.trial.FrozenTrial] = []  # this process's trial (not another worker's last one)
    study.optimize(objective, n_trials=1, gc_after_trial=False, callbacks=[lambda _, t: ran.append(t)])
    return ran[0]


def derive_best(
    study: optuna.Study,
    objective: NASObjective,
    *,
    output: str | os.PathLike[str] | None = None,
    use: str = "best",
    top_k: int = 5,
    overlap: float = 0.5,
    mirror: bool = False,
    train_alone: int = 0,
    train_alone_seconds: float = 0.0,
    limits: Limits | None = None,
) -> FinalModel:
    """Derive the final network from the shared weights, evaluate it, optionally save it.

    Args:
        study: The search study.
        objective: The objective that trained the supernet (holds data and validation split).
        output: Where to save the model file (``None``: do not save).
        use: ``"best"`` (default): the shared weights keep training after a trial is measured, so
            the ``top_k`` best distinct architectures of the study (plus, for a ``RONASSampler``
            study, the controller's most likely one) are re-validated with the final shared
            weights, together with the best trial's own weights as they were when it scored (the
            objective's ``best_snapshot``, like a trainer's best checkpoint); the best of them on
            validation is taken. ``"policy"``: the controller's most likely
            architecture alone.
        top_k: Candidates re-validated for ``use="best"`` (1: the best trial as measured).
        overlap: Sliding-window overlap of the full evaluation.
        mirror: Mirroring test-time augmentation in the evaluation.
        train_alone: 0 (default) keeps the shared weights: no retraining. N > 0 retrains: the
            chosen architecture becomes a new network trained alone, from scratch, for N steps
            (:func:`train_from_scratch`) on the cases the fine-tuning trial trains on (train+val
            by default: the validation Dice is then not held out, as after that fine-tuning); the
            architecture is still chosen with the shared weights.
        train_alone_seconds: Retrains as ``train_alone`` does, for this many seconds of wall-clock
            time instead of a number of steps (the benchmarks' "same CPU time" twin); the model's
            metrics say how many steps that was. At most one of the two is given.
        limits: Only architectures whose measured cost fits (``use="best"``): the best trial that
            fits and the other candidates that do.
    """
    if objective.dataset is None:
        raise ValueError("derive_best needs an objective built with its dataset")
    if train_alone < 0 or train_alone_seconds < 0 or (train_alone and train_alone_seconds):
        raise SettingsError(
            "retrain for train_alone steps or for train_alone_seconds, one of them and not below 0: "
            f"got train_alone={train_alone}, train_alone_seconds={train_alone_seconds}"
        )
    space = objective.supernet.space
    state = None
    if use == "best":
        t, arch, state, revalidated = _rerank(study, objective, top_k, limits)
        source: dict[str, Any] = {
            "study": study.study_name,
            "trial": t.number if t is not None else None,
            "search_value": _value(t) if t is not None else None,
            "weights": "snapshot" if state is not None else "shared",
            "revalidated": revalidated,
        }
    elif use == "policy":
        sampler = policy_sampler(study)
        if sampler is None:
            raise SettingsError("use='policy' needs a study whose sampler is RONASSampler")
        params = sampler.most_likely_params(study)
        if params is None:
            raise StorageError("the controller has not learned anything yet")
        arch = Architecture.from_params(space, params)
        source = {"study": study.study_name, "trial": None, "search_value": None}
    else:
        raise SettingsError(f"use must be 'best' or 'policy', got {use!r}")
    if limits is not None:
        source["limits"] = str(limits)
    return _derive(
        objective, arch, state, source, output, overlap, mirror, (train_alone, train_alone_seconds)
    )


def _derive(
    objective: NASObjective,
    arch: Architecture,
    state: dict[str, Any] | None,
    source: dict[str, Any],
    output: str | os.PathLike[str] | None,
    overlap: float,
    mirror: bool,
    retrain: tuple[int, float] = (0, 0.0),
) -> FinalModel:
    """``arch`` with the shared weights (or ``state``; or trained alone for ``retrain``: steps or
    seconds), evaluated on every validation case, with its measured cost; saved to ``output`` when
    given."""
    assert objective.dataset is not None
    source["arch"] = arch.code
    steps, seconds = retrain
    alone: dict[str, Any] = {"train_alone_steps": steps}
    if steps > 0 or seconds > 0:
        cases = objective.finetune_cases  # the fine-tuning trial's cases (train+val by default)
        t0 = time.perf_counter()
        seed = objective.trainer.seed
        if seconds > 0:
            net, steps = train_from_scratch_for(objective, arch, seconds, seed, cases=cases)
        else:
            net = train_from_scratch(objective, arch, steps, seed, cases=cases)
        alone = {"train_alone_steps": steps, "train_alone_seconds": round(time.perf_counter() - t0, 1)}
        source["weights"] = "trained alone"
        source["trained_on"] = objective.settings.finetune.data if cases else "train"
    else:
        net = objective.supernet.derive(arch)
        if state is not None:
            net.load_state_dict(state)
    net = net.to(objective.trainer.device)
    patch = objective.patch_for(arch)
    result = objective.evaluator.evaluate(net, patch, overlap=overlap, mirror=mirror)
    cost = objective.cost_of(arch)
    metrics = {
        "val_dice": result.mean,
        "val_dice_per_class": result.per_class,
        "val_cases": objective.evaluator.case_ids,
        "val_dice_per_case": result.per_case,
        **alone,
        "params": sum(p.numel() for p in net.parameters()),
        ATTR_MEMORY: cost.memory_gb,
        ATTR_MEMORY_METHOD: cost.memory_method,
        ATTR_FLOPS: cost.flops,
    }
    if cost.latency_ms is not None:
        metrics[ATTR_LATENCY] = cost.latency_ms
    model = FinalModel(
        net=net.cpu().eval(),
        preprocessor=objective.dataset.preprocessor,
        patch_size=patch,
        labels=objective.dataset.label_names,
        metrics=metrics,
        source=source,
    )
    if output is not None:
        model.save(output)
    return model


def _rerank(
    study: optuna.Study, objective: NASObjective, top_k: int, limits: Limits | None = None
) -> tuple[optuna.trial.FrozenTrial | None, Architecture, dict[str, Any] | None, list[list[Any]]]:
    """Re-validate the best ``top_k`` distinct architectures (that fit ``limits``) with the
    current shared weights.

    The objective's snapshot of the best trial's weights (as they were when it scored) competes
    too; the winner is returned with its state dict (``None``: the current shared weights).
    """
    space = objective.supernet.space
    best = best_trial(study, limits)
    fits = limits.fits if limits is not None else (lambda attrs: True)
    done = sorted(
        (
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if within_budget(t) and fits(t.user_attrs)
        ),
        key=lambda t: (-_value(t), t.number),
    )
    cands: dict[Architecture, optuna.trial.FrozenTrial | None] = {}
    for t in done:
        a = Architecture.from_params(space, t.params)
        cands.setdefault(a, t)
        if len(cands) >= max(1, top_k):
            break
    sampler = policy_sampler(study)
    if top_k > 1 and sampler is not None:
        params = sampler.most_likely_params(study)
        if params is not None:
            policy = Architecture.from_params(space, params)
            if limits is None or limits.fits(_cost_attrs(objective, policy)):
                cands.setdefault(policy, None)
    snap = _study_snapshot(study, objective)
    if snap is not None and not fits(snap[0].user_attrs):
        snap = None
    if len(cands) == 1 and snap is None:
        return best, next(iter(cands)), None, []
    scored: list[tuple[float, Architecture, optuna.trial.FrozenTrial | None, dict[str, Any] | None]] = []
    for a, cand in cands.items():
        scored.append((objective.validate(a, all_cases=True).mean, a, cand, None))
    if snap is not None:
        snap_trial, a, state = snap
        net = objective.supernet.derive(a)
        net.load_state_dict(state)
        dice = objective.evaluator.evaluate(net.to(objective.trainer.device), objective.patch_for(a))
        scored.append((dice.mean, a, snap_trial, state))
    scored.sort(key=lambda x: -x[0])
    table = [
        [a.code, t.number if t is not None else None, "snapshot" if st is not None else "shared", round(v, 5)]
        for v, a, t, st in scored
    ]
    return scored[0][2], scored[0][1], scored[0][3], table


def _cost_attrs(objective: NASObjective, arch: Architecture) -> dict[str, Any]:
    cost = objective.cost_of(arch)
    attrs: dict[str, Any] = {ATTR_MEMORY: cost.memory_gb}
    if cost.latency_ms is not None:
        attrs[ATTR_LATENCY] = cost.latency_ms
    return attrs


def derive_front(
    study: optuna.Study,
    objective: NASObjective,
    folder: str | os.PathLike[str],
    *,
    overlap: float = 0.5,
    mirror: bool = False,
) -> list[FinalModel]:
    """One model per member of a multi-objective study's Pareto front (``study.best_trials``,
    within the memory budget), each with the current shared weights, its validation Dice on every
    validation case and its measured cost, saved as ``folder/trial-NNNN.pt``, cheapest first; a
    summary goes to ``folder/front.json``. Nothing in ``folder`` is overwritten."""
    if not study._is_multi_objective():
        raise SettingsError(
            f"study {study.study_name!r} has one objective; --pareto needs a search with --objectives "
            "dice,memory or dice,latency"
        )
    out = Path(folder)
    front = sorted((t for t in study.best_trials if within_budget(t)), key=lambda t: (t.values[1], t.number))
    if not front:
        raise StorageError(f"study {study.study_name!r} has no completed trial within budget")
    paths = [out / f"trial-{t.number:04d}.pt" for t in front]
    taken = [p for p in [*paths, out / "front.json"] if p.exists()]
    if taken:
        raise SettingsError(f"--pareto {out}: {taken[0]} exists; give an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    space = objective.supernet.space
    models, rows = [], []
    for t, path in zip(front, paths):
        source = {
            "study": study.study_name,
            "trial": t.number,
            "search_values": list(t.values),
            "file": path.name,
        }
        arch = Architecture.from_params(space, t.params)
        model = _derive(objective, arch, None, source, path, overlap, mirror)
        models.append(model)
        rows.append({"file": path.name, "trial": t.number, "arch": arch.code, **model.metrics})
    atomic_write_text(out / "front.json", json.dumps(rows, indent=2))
    return models


def _study_snapshot(
    study: optuna.Study, objective: NASObjective
) -> tuple[optuna.trial.FrozenTrial, Architecture, dict[str, Any]] | None:
    """The objective's best-weights snapshot, when it belongs to a COMPLETE trial of ``study``."""
    snap = objective.best_snapshot
    if not snap:
        return None
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    match = [t for t in trials if t.number == snap["trial"] and t.user_attrs.get(ATTR_ARCH) == snap["arch"]]
    if not match:
        return None
    return match[0], Architecture.from_params(objective.supernet.space, match[0].params), snap["state"]


def train_from_scratch(
    objective: NASObjective,
    arch: Architecture,
    steps: int,
    seed: int,
    *,
    cases: list[PreprocessedCase] | None = None,
) -> RONASNet:
    """``arch`` as a new network trained alone, from scratch, for ``steps`` steps with the search's
    optimizer, learning rate and batch, on ``cases`` (default: the training cases): retraining,
    as the benchmarks' ``same arch alone`` reference does."""
    net = _fresh(objective, arch, seed)
    objective.trainer.train_alone(net, objective.patch_for(arch), steps, seed=seed + 1000, cases=cases)
    return net


def train_from_scratch_for(
    objective: NASObjective,
    arch: Architecture,
    seconds: float,
    seed: int,
    *,
    cases: list[PreprocessedCase] | None = None,
) -> tuple[RONASNet, int]:
    """:func:`train_from_scratch` for ``seconds`` of wall-clock time instead of a number of steps;
    returns the network and the steps it took."""
    net = _fresh(objective, arch, seed)
    steps = objective.trainer.train_alone_for(
        net, objective.patch_for(arch), seconds, seed=seed + 1000, cases=cases
    )
    return net, steps


def _fresh(objective: NASObjective, arch: Architecture, seed: int) -> RONASNet:
    """``arch`` as a new network of the supernet's shape, initialised from ``seed``."""
    torch.manual_seed(seed)
    sp = objective.supernet
    return RONASNet(sp.space, arch, sp.in_channels, sp.num_classes, ds_levels=sp.ds_levels)
