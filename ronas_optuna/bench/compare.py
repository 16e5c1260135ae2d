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
and then waits for its rows; :func:`run_benchmarks` leaves them until the last of several
configurations), and a last run only writes the table. A finished study with other settings
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
from collections.abc import Callable, Sequence
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
from .speed import budget_units, machine_speed

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
    return run_benchmarks([(cfg, echo)])[0]


def run_benchmarks(runs: Sequence[tuple[BenchmarkConfig, Callable[[str], None]]]) -> list[BenchmarkResult]:
    """:func:`run_benchmark` for several configurations (each with its ``echo``), in order, sharing
    the work with other processes across all of them: every (fold, seed) whose row another live
    process is computing is left until every configuration has run what it can, then waited for.
    So the same list started twice on one storage keeps both processes busy until its last rows."""
    results: dict[int, BenchmarkResult] = {}
    pending: list[tuple[int, _Run]] = []
    for i, (cfg, echo) in enumerate(runs):
        run = _Run(cfg, echo)
        run.run_free()
        if run.later:
            pending.append((i, run))
        else:
            results[i] = run.finish()
    for i, run in pending:  # now waiting for what other processes compute
        run.run_later()
        results[i] = run.finish()
    return [results[i] for i in range(len(runs))]


class _Run:
    """One configuration's benchmark: its folds set up, its (fold, seed)s run (those another process
    is computing left in ``later``), its rows and outputs."""

    def __init__(self, cfg: BenchmarkConfig, echo: Callable[[str], None]) -> None:
        if "," in cfg.settings.objectives.metrics:
            raise SettingsError(
                f"objectives {cfg.settings.objectives.metrics}: compare fronts with "
                "bench.pareto.run_pareto_benchmark"
            )
        check_sampler_names(cfg.samplers)
        self.cfg, self.echo = cfg, echo
        self.art = StorageURL.parse(cfg.storage).artifact_dir
        default_out = self.art.with_name(self.art.name.replace("_artifacts", "_benchmark"))
        self.out_dir = Path(cfg.output) if cfg.output else default_out
        self.out_dir.mkdir(parents=True, exist_ok=True)
        dataset = MSDDataset(cfg.data, spacing=cfg.settings.data.spacing, cache_dir=self.out_dir / "cache")
        splits = fold_splits(cfg, dataset.case_ids)
        self.storage = open_storage(cfg.storage)
        write_ahead()
        self.rows: list[dict[str, Any]] = []
        self.curves: dict[str, Any] = defaultdict(list)
        self.fresh: list[optuna.Study] = []
        self.hpo_trials = cfg.hpo_trials if cfg.hpo_trials is not None else max(2, cfg.trials // 10)
        self.elapsed = 0.0  # this configuration's own time, not the others' run in between
        self.setups: dict[int, FoldSetup] = {}
        for fold in range(len(splits)) if cfg.only_folds is None else sorted(set(cfg.only_folds)):
            self.setups[fold] = setup = make_setup(cfg, dataset, fold, splits[fold])
            setup.checkpoints = self.out_dir / "checkpoints"  # an interrupted search continues from its own
            setup.checkpoints.mkdir(exist_ok=True)
        self.seeds = range(cfg.seeds) if cfg.only_seeds is None else sorted(set(cfg.only_seeds))
        self.later: list[tuple[int, int]] = []  # (fold, seed) with a row another process is computing

    def run_free(self) -> None:
        """Every (fold, seed) that no other process is computing a row of; the others go to ``later``."""
        t0 = time.perf_counter()
        with not_waiting():
            for fold, setup in self.setups.items():
                self.echo(
                    f"fold {fold}: train {setup.train_ids}, validation {setup.val_ids}, "
                    f"test {setup.test_ids}; patches {setup.space['patch'].choices}"
                )
                for seed in self.seeds:
                    try:
                        done = _run_fold_seed(setup, self.storage, seed, self.hpo_trials, self.echo)
                    except Busy as e:
                        self.echo(f"  later: {e}")
                        self.later.append((fold, seed))
                        continue
                    _gather(done, self.rows, self.curves, self.fresh)
        self.elapsed += time.perf_counter() - t0

    def run_later(self) -> None:
        """The (fold, seed)s left for later, waiting for the rows other processes compute."""
        t0 = time.perf_counter()
        for fold, seed in self.later:
            self.echo(f"fold {fold}, seed {seed}:")
            done = _run_fold_seed(self.setups[fold], self.storage, seed, self.hpo_trials, self.echo)
            _gather(done, self.rows, self.curves, self.fresh)
        self.later = []
        self.elapsed += time.perf_counter() - t0

    def finish(self) -> BenchmarkResult:
        """Table, plot and JSON written, the plot and table attached to the studies run here."""
        cfg = self.cfg
        md = summary_markdown(self.rows, cfg, total_steps(cfg), self.hpo_trials, self.elapsed)
        plot = _write_outputs(self.out_dir, cfg, self.rows, self.curves, md)
        _attach(self.fresh, artifact_store(self.art), plot, md)
        return BenchmarkResult(self.rows, md, self.out_dir / "benchmark.csv", plot, dict(self.curves))


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
    budget: list[dict[str, Any]] = []  # the row whose compute the references get
    for name in cfg.samplers:
        row, curve, study, ran = run_search(setup, storage, name, seed)
        done.rows.append(row)
        done.curves.append((name, curve))
        if ran:
            done.fresh.append(study)
        if name == "ronas" or not budget:
            budget = [row]
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
        here = machine_speed(cfg.device)
        units = budget_units(budget[0], here) if budget else here.units(60.0)
        row = kept_row(setup, storage, "dynunet", seed, lambda: run_handmade(setup, storage, seed, units))
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
