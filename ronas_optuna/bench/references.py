"""The references a search is compared with: its final architecture trained alone
(:func:`alone_for_seconds`, :func:`train_from_scratch`), MONAI's DynUNet with its recipe chosen on
validation cases (:func:`run_handmade`), and classic HPO without weight sharing (:func:`run_hpo`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna
import torch

from ..device import resolve_device
from ..evaluator import Evaluator
from ..final import train_from_scratch
from ..network import RONASNet
from ..objective import NASObjective
from ..space import Architecture
from .fold import FoldSetup, kept_row, per_case, total_steps
from .speed import machine_speed, unit_clock


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


def run_handmade(setup: FoldSetup, storage: Any, seed: int, units: float) -> dict[str, Any]:
    """MONAI DynUNet (nnU-Net defaults) on the search's training and validation cases, with the
    recipe chosen on validation (:func:`handmade_recipe`), for the search's budget: ``units`` of
    :mod:`~.speed` on this machine's unit clock."""
    ds = setup.dataset
    here = machine_speed(setup.cfg.device)
    name, chosen_by = handmade_recipe(setup, storage, units)
    net, steps, train_s, curve = train_dynunet(
        setup,
        seed,
        units,
        name,
        setup.train_ids + setup.val_ids,
        monitor=setup.monitor(handmade_patch(setup)),
        name=setup.study_name("dynunet", seed),
    )
    evaluator = Evaluator(setup.test_cases, ds.num_classes, device=resolve_device(setup.cfg.device))
    res = evaluator.evaluate(net, handmade_patch(setup), overlap=0.5)
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
        "arch": f"DynUNet {'x'.join(map(str, handmade_patch(setup)))}, {name}, {steps} steps",
        "recipe": name,
        "recipe_val_dice": chosen_by,
        "curve": curve,
        "search_s": round(train_s, 1),
        "export_s": 0.0,
        "budget_s": round(here.seconds(units), 1),
        **here.row_fields(units),
        "scratch_s": 0.0,
        "sampler_ms_per_trial": 0.0,
    }


def handmade_patch(setup: FoldSetup) -> tuple[int, ...]:
    return tuple(int(v) for v in str(setup.space["patch"].choices[0]).split("x"))  # the largest


def train_dynunet(
    setup: FoldSetup,
    seed: int,
    units: float,
    recipe: str,
    case_ids: list[str],
    *,
    monitor: Callable[[torch.nn.Module], float] | None = None,
    name: str | None = None,
) -> tuple[torch.nn.Module, int, float, list[tuple[int, float]]]:
    """DynUNet trained on ``case_ids`` with ``recipe`` for ``units`` on this machine's unit clock
    (:mod:`~.speed`); with a ``name``, resumable from its checkpoint of that name, on any machine."""
    from .handmade import RECIPES, dynunet, train_for_seconds

    cfg, ds = setup.cfg, setup.dataset
    patch = handmade_patch(setup)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    net, steps, curve = train_for_seconds(
        dynunet(ds.in_channels, ds.num_classes, patch),
        ds.load_all(case_ids),
        patch,
        units,
        batch_size=cfg.settings.data.batch_size,
        recipe=RECIPES[recipe],
        device=resolve_device(cfg.device),
        seed=seed + 2000,
        clock=unit_clock(cfg.device),
        monitor=monitor,
        **(setup.resumable(name, recipe, f"{units:.3f}u", *case_ids) if name else {}),
    )
    return net, steps, time.perf_counter() - t0, curve


def handmade_recipe(setup: FoldSetup, storage: Any, units: float) -> tuple[str, dict[str, float]]:
    """The DynUNet recipe of this fold: the configured one, or (``auto``) the one whose network,
    trained on the training cases alone for the budget (``units``), scores higher on the validation cases;
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
            net, _, _, _ = train_dynunet(
                setup,
                0,
                units,
                name,
                setup.train_ids,
                name=f"{setup.study_name('dynunet-recipe', 0)}-{name}",
            )
            scores[name] = round(float(val.evaluate(net, handmade_patch(setup), overlap=0.5).mean), 5)
        best = max(scores, key=lambda n: scores[n])
        return {"sampler": "dynunet-recipe", "fold": setup.fold, "recipe": best, "val_dice": scores}

    row = kept_row(setup, storage, "dynunet-recipe", 0, choose)
    return str(row["recipe"]), dict(row["val_dice"])


def run_hpo(setup: FoldSetup, seed: int, hpo_trials: int) -> dict[str, Any]:
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
