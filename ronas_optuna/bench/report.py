"""Tables and plots of a sampler comparison (see :mod:`ronas_optuna.bench.compare`)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from .stats import clustered, paired, verdict

if TYPE_CHECKING:
    from .config import BenchmarkConfig


def conflicting_rows(path: Path, rows: list[dict[str, Any]], identity: Sequence[str]) -> str | None:
    """Why writing ``rows`` over the rows file at ``path`` would lose results, or None when it is safe.

    A report may add rows (a run that went on) but not drop one the file holds, nor change its
    Dice: either means the store is another run's (other settings, another machine) or was not
    restored, and the committed table would silently become a different experiment's. Rows are
    matched on the ``identity`` fields (budget, mode, sampler, seed, ...)."""
    if not path.exists():
        return None
    new = {tuple(r.get(k) for k in identity): r.get("test_dice") for r in rows}
    dropped = changed = 0
    for line in path.read_text().splitlines():
        old = json.loads(line)
        at = tuple(old.get(k) for k in identity)
        if at not in new:
            dropped += 1
        elif json.dumps(new[at]) != json.dumps(old.get("test_dice")):  # NaN equals NaN here
            changed += 1
    if not dropped and not changed:
        return None
    return (
        f"{path}: this store would drop {dropped} and change the Dice of {changed} of its rows "
        "(another run's results?); name another --results folder, restore the rows first, "
        "or pass --overwrite to write over them"
    )


def _row_seconds(row: dict[str, Any]) -> float:
    return float(row["search_s"]) + float(row["export_s"]) + float(row["scratch_s"])


def summary_markdown(
    rows: list[dict[str, Any]], cfg: BenchmarkConfig, total_steps: int, hpo_trials: int, wall_s: float
) -> str:
    """Per method: held-out Dice with a 95% interval over folds (seeds averaged within each fold,
    see :mod:`.stats`); then paired differences."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[r["sampler"]].append(r)
    folds = len({r["fold"] for r in rows})
    lines = [
        f"Benchmark on `{Path(cfg.data).name}`: {folds} fold(s) x {cfg.seeds} seed(s); each search "
        f"{cfg.trials} trials x {cfg.settings.training.steps_per_trial} steps "
        f"(+{cfg.settings.training.warmup_steps} "
        f"warm-up, +{cfg.settings.finetune.steps} fine-tuning) = {total_steps} shared-weight steps, "
        f"{cfg.settings.training.lr_schedule} learning rate"
        + (f", at most {cfg.timeout:.0f} s" if cfg.timeout else "")
        + f"; compute {sum(_row_seconds(r) for r in rows) / 60:.1f} min (searches, exports and references,"
        f" summed), this run {wall_s / 60:.1f} min.",
        "",
        "| method | runs | **held-out test Dice** [95% CI over folds] | before fine-tuning "
        "| same arch alone | best validation Dice | mean validation Dice, last third | trials | search s "
        "| sampler ms/trial |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rs in by.items():

        def col(key: str, rs: list[dict[str, Any]] = rs) -> str:
            iv = clustered({(int(r["fold"]), int(r["seed"])): float(r.get(key, "nan")) for r in rs})
            return "–" if iv.n == 0 else str(iv)

        trials, secs = np.mean([r["trials"] for r in rs]), np.mean([r["search_s"] for r in rs])
        sampler_ms = np.mean([r["sampler_ms_per_trial"] for r in rs])
        lines.append(
            f"| {name} | {len(rs)} | {col('test_dice')} | {col('before_finetune_test_dice')} "
            f"| {col('scratch_test_dice')} "
            f"| {col('best_val_dice')} | {col('late_val_dice')} | {trials:.0f} | {secs:.0f} "
            f"| {sampler_ms:.1f} |"
        )
    lines += ["", *paired_markdown(by)]
    if hpo_trials and "hpo-tpe" in by:
        lines += [
            "",
            f"`hpo-tpe`: classic HPO without sharing, {hpo_trials} TPE trials each training a fresh "
            "network (same total steps).",
        ]
    if "dynunet" in by:
        lines += [
            "",
            "`dynunet`: MONAI DynUNet with nnU-Net's defaults, trained on the search's training and "
            "validation cases for the time of the RONAS search plus its export (CPU time on the CPU), "
            "with the recipe (nnU-Net's SGD or Adam) that scored higher on the validation cases.",
        ]
    return "\n".join(lines) + "\n"


def paired_markdown(by: dict[str, list[dict[str, Any]]], first: str = "ronas") -> list[str]:
    """``first`` minus every other method (and minus its own architecture trained from scratch),
    matched on (fold, seed) and averaged within each fold; "better" only where the 95% interval over
    folds excludes 0."""
    if first not in by:
        return []

    def keyed(name: str, key: str = "test_dice") -> dict[tuple[int, int], float]:
        return {(int(r["fold"]), int(r["seed"])): float(r.get(key, "nan")) for r in by[name]}

    mine = keyed(first)
    pairs = [(f"{first} − {name}", paired(mine, keyed(name))) for name in by if name != first]
    pairs.append((f"{first} − same arch alone", paired(mine, keyed(first, "scratch_test_dice"))))
    if any("before_finetune_test_dice" in r for r in by[first]):
        before = keyed(first, "before_finetune_test_dice")
        pairs.append((f"{first} − {first} before fine-tuning", paired(mine, before)))
    lines = [
        "| paired difference (held-out Dice) | folds | mean [95% CI over folds] | verdict |",
        "|---|---:|---:|---|",
    ]
    for label, iv in pairs:
        if iv.n == 0:
            continue
        lines.append(f"| {label} | {iv.n} | {iv} | {verdict(iv)} |")
    return lines


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
