"""``ronas benchmark --objectives dice,memory``: samplers compared by the front they return.

Each (fold, seed, sampler) runs a two-direction study of the same shared-supernet objective (Dice
and a measured cost); no in-supernet fine-tuning follows, since it would favour one member of the
front. Every member of the study's front (``best_trials``, within the memory budget) is derived
with the final shared weights and scored on the fold's held-out test cases. The sampler's score is
the hypervolume of those held-out points (test Dice up, cost down) against a reference point fixed
per fold before any search: Dice 0 and the largest cost among 50 seeded random architectures of the
fold's space. Intervals are over test volumes (seeds averaged within a fold), as in
:mod:`~ronas_optuna.bench.stats`.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume

from ..attrs import ATTR_MEMORY, directions, within_budget
from ..data.msd import MSDDataset
from ..registry import check_sampler_names, make_sampler
from ..space import Architecture
from ..storage import StorageURL, open_storage, write_ahead
from .compare import BenchmarkResult
from .config import BenchmarkConfig
from .fold import FoldSetup, budget_clock, finished_study, fold_splits, keep_result, make_setup
from .stats import Keyed, clustered, paired, verdict

#: Random architectures whose largest cost sets a fold's reference point.
REFERENCE_ARCHS = 50


def reference_cost(setup: FoldSetup) -> float:
    """The largest measured cost of :data:`REFERENCE_ARCHS` seeded random architectures."""
    objective = setup.objective(0)
    rng = np.random.default_rng([setup.fold, 99])
    costs = [_cost(objective.cost_of(setup.space.sample(rng)), setup) for _ in range(REFERENCE_ARCHS)]
    return max(costs)


def _cost(cost: Any, setup: FoldSetup) -> float:
    if setup.cfg.settings.objectives.metrics.endswith("latency"):
        return float(cost.latency_ms)
    return float(cost.memory_gb)


def hypervolume(points: list[tuple[float, float]], ref_cost: float) -> float:
    """Hypervolume of ``(Dice, cost)`` points against ``(0, ref_cost)`` (points past it add nothing)."""
    pts = np.array([[-d, c] for d, c in points if d > 0 and c < ref_cost], dtype=float).reshape(-1, 2)
    return float(compute_hypervolume(pts, np.array([0.0, ref_cost]))) if len(pts) else 0.0


def _method(sampler: str, cfg: BenchmarkConfig) -> str:
    """The study names' method: the sampler and the objectives (``ronas-dice-memory``)."""
    return f"{sampler}-{cfg.settings.objectives.metrics.replace(',', '-')}"


def _run_front(
    setup: FoldSetup, storage: Any, name: str, seed: int, ref_cost: float
) -> tuple[dict[str, Any], bool]:
    """One two-objective search and its front on the test cases; ``False``: a kept result."""
    cfg = setup.cfg
    study_name = setup.study_name(_method(name, cfg), seed)
    kept = finished_study(setup, storage, study_name, method=_method(name, cfg))
    if kept is not None:
        return dict(kept.user_attrs["benchmark:result"]), False
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        directions=directions(cfg.settings.objectives.metrics),
        sampler=make_sampler(name, setup.space, seed),
    )
    objective = setup.objective(seed)
    objective.planned_trials = cfg.trials
    clock = budget_clock(cfg.device)
    c0 = clock()
    study.optimize(objective, n_trials=cfg.trials, timeout=cfg.timeout)
    budget_s = clock() - c0
    front = []
    for t in sorted((t for t in study.best_trials if within_budget(t)), key=lambda t: t.values[1]):
        arch = Architecture.from_params(setup.space, t.params)
        net = objective.supernet.derive(arch).to(objective.trainer.device)
        patch = objective.patch_for(arch)
        front.append(
            {
                "trial": t.number,
                "arch": arch.code,
                "cost": t.values[1],
                ATTR_MEMORY: t.user_attrs.get(ATTR_MEMORY),
                "val_dice": t.values[0],
                "test_dice": setup.test_dice(objective, net, patch)[0],
            }
        )
    row = {
        "sampler": name,
        "fold": setup.fold,
        "seed": seed,
        "trials": len(study.trials),
        "reference_cost": ref_cost,
        "hypervolume": hypervolume([(f["test_dice"], f["cost"]) for f in front], ref_cost),
        "val_hypervolume": hypervolume([(f["val_dice"], f["cost"]) for f in front], ref_cost),
        "front": front,
        "budget_s": round(budget_s, 1),
    }
    keep_result(study, setup, row)
    return row, True


def run_pareto_benchmark(cfg: BenchmarkConfig, *, echo: Callable[[str], None] = print) -> BenchmarkResult:
    """Every (fold, seed, sampler) two-objective study; the hypervolume table and the fronts' plot."""
    check_sampler_names(cfg.samplers)
    art = StorageURL.parse(cfg.storage).artifact_dir
    out_dir = Path(cfg.output) if cfg.output else art.with_name(art.name.replace("_artifacts", "_benchmark"))
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = MSDDataset(cfg.data, spacing=cfg.settings.data.spacing, cache_dir=out_dir / "cache")
    storage = open_storage(cfg.storage)
    write_ahead()
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for fold, split in enumerate(fold_splits(cfg, dataset.case_ids)):
        setup = make_setup(cfg, dataset, fold, split)
        ref = reference_cost(setup)
        echo(f"fold {fold}: train {setup.train_ids}, validation {setup.val_ids}, test {split[2]}")
        echo(f"  reference cost {ref:.4g} (the largest of {REFERENCE_ARCHS} random architectures)")
        for seed in range(cfg.seeds):
            for name in cfg.samplers:
                row, ran = _run_front(setup, storage, name, seed, ref)
                rows.append(row)
                members = ", ".join(f"{f['cost']:.3g}:{f['test_dice']:.3f}" for f in row["front"])
                echo(
                    f"  {setup.study_name(_method(name, cfg), seed)}: hypervolume {row['hypervolume']:.4f} "
                    f"(front cost:test Dice {members})" + ("" if ran else " (kept)")
                )
    md = pareto_markdown(rows, cfg, time.perf_counter() - t_start)
    (out_dir / "benchmark.md").write_text(md)
    (out_dir / "benchmark.json").write_text(json.dumps({"rows": rows}, indent=1))
    with open(out_dir / "benchmark.csv", "w", newline="") as f:
        flat = [{k: v for k, v in r.items() if k != "front"} for r in rows]
        w = csv.DictWriter(f, fieldnames=list(flat[0]))
        w.writeheader()
        w.writerows(flat)
    plot = plot_fronts(rows, out_dir / "benchmark.png", cfg.settings.objectives.metrics.split(",")[1])
    return BenchmarkResult(rows, md, out_dir / "benchmark.csv", plot, {})


def _keyed(rows: list[dict[str, Any]], sampler: str, key: str = "hypervolume") -> Keyed:
    return {(int(r["fold"]), int(r["seed"])): float(r[key]) for r in rows if r["sampler"] == sampler}


def pareto_markdown(rows: list[dict[str, Any]], cfg: BenchmarkConfig, seconds: float) -> str:
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    lines = [
        f"Two objectives ({cfg.settings.objectives.metrics}), {cfg.trials} trials per search, "
        f"{cfg.folds} fold(s) "
        f"x {cfg.seeds} seed(s); hypervolume of the held-out front, 95% CI over test volumes; "
        f"{seconds / 60:.0f} min.",
        "",
        "| sampler | runs | front size | held-out hypervolume | validation hypervolume |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in samplers:
        mine = [r for r in rows if r["sampler"] == s]
        size = np.mean([len(r["front"]) for r in mine])
        lines.append(
            f"| {s} | {len(mine)} | {size:.1f} | {clustered(_keyed(rows, s))} | "
            f"{clustered(_keyed(rows, s, 'val_hypervolume'))} |"
        )
    first = samplers[0]
    lines += ["", f"| {first} − | volumes | difference [95% CI] | verdict |", "|---|---:|---:|---|"]
    for s in samplers[1:]:
        d = paired(_keyed(rows, first), _keyed(rows, s))
        lines.append(f"| {s} | {d.n} | {d} | {verdict(d)} |")
    return "\n".join(lines) + "\n"


def plot_fronts(rows: list[dict[str, Any]], path: Path, cost_name: str) -> Path:
    """Each fold's held-out fronts of seed 0, one panel per fold."""
    from matplotlib.figure import Figure

    folds = sorted({int(r["fold"]) for r in rows})
    fig = Figure(figsize=(4 * len(folds), 3.6))
    axes = fig.subplots(1, len(folds), squeeze=False)[0]
    for ax, fold in zip(axes, folds):
        for r in rows:
            if int(r["fold"]) != fold or int(r["seed"]) != 0 or not r["front"]:
                continue
            pts = sorted((f["cost"], f["test_dice"]) for f in r["front"])
            ax.step(*zip(*pts), where="post", marker="o", label=r["sampler"])
        ax.set_title(f"fold {fold}")
        ax.set_xlabel("memory GB per training step" if cost_name == "memory" else "latency ms per patch")
        ax.set_ylabel("held-out Dice")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
