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

Results are kept in the storage and reused: a (fold, seed, method) whose study already holds a result of
the same benchmark settings is not run again, so an interrupted benchmark continues where it stopped,
seeds or samplers can be added later, and several processes can share the work: the same command started
N times on one storage divides it (a process leaves a (fold, seed) another one is computing for last,
and then waits for its rows), and a last run only writes the table. A finished study with other settings
is never replaced (an error names it). A search whose process was killed continues where it stopped:
each search keeps its supernet checkpoint under ``checkpoints/`` beside the table until its result is
kept, so a restarted benchmark loses at most the trial that was running (FAIL, marked
``benchmark:interrupted``, and run again) and its budget clock goes on from the study's record.
"""

from __future__ import annotations

import csv
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from ..dashboard import artifact_store
from ..data.msd import MSDDataset
from ..errors import SettingsError
from ..registry import check_sampler_names
from ..settings import SearchSettings
from ..storage import StorageURL, open_storage, write_ahead
from .config import BenchmarkConfig
from .fold import Busy, FoldSetup, fold_splits, kept_row, make_setup, not_waiting, total_steps
from .references import run_handmade, run_hpo
from .report import plot_curves, summary_markdown
from .search_run import run_search

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
    write_ahead()
    rows: list[dict[str, Any]] = []
    curves: dict[str, Any] = defaultdict(list)
    fresh: list[optuna.Study] = []
    hpo_trials = cfg.hpo_trials if cfg.hpo_trials is not None else max(2, cfg.trials // 10)
    t_start = time.perf_counter()
    setups: dict[int, FoldSetup] = {}
    for fold in range(len(splits)) if cfg.only_folds is None else sorted(set(cfg.only_folds)):
        setups[fold] = setup = make_setup(cfg, dataset, fold, splits[fold])
        setup.checkpoints = out_dir / "checkpoints"  # an interrupted search continues from its own
        setup.checkpoints.mkdir(exist_ok=True)
    seeds = range(cfg.seeds) if cfg.only_seeds is None else sorted(set(cfg.only_seeds))
    later = []  # (fold, seed) with a row another process is computing: done after the others
    with not_waiting():
        for fold, setup in setups.items():
            echo(
                f"fold {fold}: train {setup.train_ids}, validation {setup.val_ids}, "
                f"test {setup.test_ids}; patches {setup.space['patch'].choices}"
            )
            for seed in seeds:
                try:
                    done = _run_fold_seed(setup, storage, seed, hpo_trials, echo)
                except Busy as e:
                    echo(f"  later: {e}")
                    later.append((fold, seed))
                    continue
                _gather(done, rows, curves, fresh)
    for fold, seed in later:  # now waiting for what other processes compute
        echo(f"fold {fold}, seed {seed}:")
        _gather(_run_fold_seed(setups[fold], storage, seed, hpo_trials, echo), rows, curves, fresh)
    md = summary_markdown(rows, cfg, total_steps(cfg), hpo_trials, time.perf_counter() - t_start)
    plot = _write_outputs(out_dir, cfg, rows, curves, md)
    _attach(fresh, artifact_store(art), plot, md)
    return BenchmarkResult(rows, md, out_dir / "benchmark.csv", plot, dict(curves))


@dataclass
class _FoldSeed:
    """One (fold, seed)'s rows, its searches' curves by sampler, and the studies that ran now."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    curves: list[tuple[str, Any]] = field(default_factory=list)
    fresh: list[optuna.Study] = field(default_factory=list)


def _gather(
    done: _FoldSeed, rows: list[dict[str, Any]], curves: dict[str, Any], fresh: list[optuna.Study]
) -> None:
    rows.extend(done.rows)
    for name, curve in done.curves:
        curves[name].append(curve)
    fresh.extend(done.fresh)


def _run_fold_seed(
    setup: FoldSetup, storage: Any, seed: int, hpo_trials: int, echo: Callable[[str], None]
) -> _FoldSeed:
    """Every method on one fold with one seed (:class:`Busy`, inside :func:`not_waiting`, when
    another process is computing one of them)."""
    cfg = setup.cfg
    done = _FoldSeed()
    budget: list[float] = []
    for name in cfg.samplers:
        row, curve, study, ran = run_search(setup, storage, name, seed)
        done.rows.append(row)
        done.curves.append((name, curve))
        if ran:
            done.fresh.append(study)
        if name == "ronas" or not budget:
            # rows kept from before budgets were clocked separately: their wall time
            budget = [float(row.get("budget_s", row["search_s"] + row["export_s"]))]
        echo(
            f"  {study.study_name}: best val {row['best_val_dice']:.4f}, test {row['test_dice']:.4f} "
            f"(scratch {row['scratch_test_dice']:.4f}), {row['search_s']:.0f} s, {row['arch']}"
            + ("" if ran else " (kept)")
        )
    if hpo_trials > 0:
        row = kept_row(setup, storage, "hpo-tpe", seed, lambda: run_hpo(setup, seed, hpo_trials))
        done.rows.append(row)
        echo(f"  hpo-tpe seed {seed}: best val {row['best_val_dice']:.4f}, test {row['test_dice']:.4f}")
    if cfg.handmade:
        seconds = budget[0] if budget else 60.0
        row = kept_row(setup, storage, "dynunet", seed, lambda: run_handmade(setup, storage, seed, seconds))
        done.rows.append(row)
        echo(f"  dynunet seed {seed}: {row['arch']} in {row['search_s']:.0f} s, test {row['test_dice']:.4f}")
    return done


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
