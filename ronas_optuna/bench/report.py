"""Tables and plots of a sampler comparison (see :mod:`ronas_optuna.bench.compare`)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from .compare import BenchmarkConfig


def summary_markdown(
    rows: list[dict[str, Any]],
    cfg: BenchmarkConfig,
    total_steps: int,
    scratch_steps: int,
    hpo_trials: int,
    test_ids: list[str],
) -> str:
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[r["sampler"]].append(r)

    def ms(key: str, rs: list[dict[str, Any]]) -> str:
        v = np.array([r[key] for r in rs], dtype=float)
        if np.isnan(v).all():
            return "–"
        return f"{np.nanmean(v):.4f} ± {np.nanstd(v):.4f}"

    lines = [
        f"Benchmark on `{Path(cfg.data).name}`: {cfg.seeds} seed(s), {cfg.trials} trials x "
        f"{cfg.settings.steps_per_trial} steps (+{cfg.settings.warmup_steps} warm-up) = {total_steps} "
        f"shared-weight steps per study; test cases {test_ids}; "
        f"from-scratch references trained {scratch_steps} steps.",
        "",
        "| sampler | best validation Dice (search) | mean validation Dice, last third of trials | "
        "final test Dice, shared weights | same arch from scratch | search s | sampler ms/trial |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rs in by.items():
        lines.append(
            f"| {name} | {ms('best_val_dice', rs)} | {ms('late_val_dice', rs)} | {ms('test_dice', rs)} | "
            f"{ms('scratch_test_dice', rs)} | "
            f"{np.mean([r['search_s'] for r in rs]):.0f} | "
            f"{np.mean([r['sampler_ms_per_trial'] for r in rs]):.1f} |"
        )
    if hpo_trials:
        lines.append("")
        lines.append(
            f"`hpo-tpe`: classic HPO without sharing, {hpo_trials} TPE trials each training a fresh network "
            f"for {scratch_steps // max(1, hpo_trials)} steps (same total steps)."
        )
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict[str, Any], path: Path) -> Path:
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for name, runs in curves.items():
        n = min(len(r["best"]) for r in runs)
        best = np.array([r["best"][:n] for r in runs])
        m, s = best.mean(0), best.std(0)
        x = np.arange(1, n + 1)
        axes[0].plot(x, m, label=name)
        axes[0].fill_between(x, m - s, m + s, alpha=0.2)
        t = np.array([r["time"][:n] for r in runs]).mean(0)
        axes[1].plot(t, m, label=name)
        axes[1].fill_between(t, m - s, m + s, alpha=0.2)
    axes[0].set_xlabel("trial")
    axes[1].set_xlabel("wall time (s)")
    for ax in axes:
        ax.set_ylabel("best-so-far validation Dice")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("best-so-far validation Dice, mean ± sd over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
