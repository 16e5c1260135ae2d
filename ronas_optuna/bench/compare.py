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
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from ..dashboard import artifact_store, default_artifact_dir
from ..data.msd import DataError, MSDDataset, PreprocessedCase
from ..data.patches import candidate_patch_sizes
from ..final import derive_best
from ..network import RONASNet
from ..objective import NASObjective
from ..registry import check_sampler_names, make_sampler, sampler_names
from ..runner import open_storage
from ..settings import SearchSettings
from ..space import Architecture, SearchSpace
from ..supernet import Supernet
from ..trainer import train_network
from .report import plot_curves, summary_markdown
from .timing import TimedSampler


@dataclass
class BenchmarkConfig:
    """Settings of one benchmark run (plain JSON); the search settings are a search's own."""

    data: str
    samplers: list[str] = field(default_factory=lambda: list(sampler_names()))
    seeds: int = 3
    trials: int = 30
    storage: str = "sqlite:///ronas_benchmark.db"
    settings: SearchSettings = field(default_factory=SearchSettings)
    scratch_steps: int | None = None
    hpo_trials: int | None = None
    device: str = "auto"
    output: str | None = None
    split_seed: int = 0
    val_ids: list[str] | None = None
    test_ids: list[str] | None = None


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
    dataset: MSDDataset
    space: SearchSpace
    train_ids: list[str]
    val_ids: list[str]
    test_cases: list[PreprocessedCase]
    scratch_steps: int

    def objective(self, seed: int) -> NASObjective:
        """A fresh supernet and objective; ``seed`` seeds its weights and patch stream."""
        torch.manual_seed(seed)
        sn = Supernet(self.space, self.dataset.in_channels, self.dataset.num_classes)
        settings = _replace(self.cfg.settings, seed=seed)
        return NASObjective.build(
            sn,
            self.dataset,
            settings=settings,
            train_ids=self.train_ids,
            val_ids=self.val_ids,
            device=self.cfg.device,
        )

    def test_dice(self, objective: NASObjective, net: torch.nn.Module, patch: tuple[int, int, int]) -> float:
        return objective.evaluator.evaluate(net, patch, cases=self.test_cases, overlap=0.5).mean


def _replace(settings: SearchSettings, **changes: Any) -> SearchSettings:
    return SearchSettings.from_dict({**settings.to_dict(), **changes})


def split_three(ids: list[str], seed: int) -> tuple[list[str], list[str], list[str]]:
    """Seeded train / validation / test split (at least one case each)."""
    if len(ids) < 3:
        raise DataError(f"the benchmark needs at least 3 cases (train, validation, test), got {len(ids)}")
    perm = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n = max(1, round(0.2 * len(ids)))
    return sorted(perm[2 * n :]), sorted(perm[n : 2 * n]), sorted(perm[:n])


def train_from_scratch(objective: NASObjective, arch: Architecture, steps: int, seed: int) -> RONASNet:
    """``arch`` as a fresh standalone network trained alone on the objective's training cases."""
    torch.manual_seed(seed)
    sp = objective.supernet
    net = RONASNet(sp.space, arch, sp.in_channels, sp.num_classes, ds_levels=sp.ds_levels)
    t = objective.trainer
    train_network(
        net,
        t.cases,
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


def _setup(cfg: BenchmarkConfig, out_dir: Path) -> _Setup:
    s = cfg.settings
    ds = MSDDataset(cfg.data, spacing=s.spacing, cache_dir=out_dir / "cache")
    _, val_ids, test_ids = split_three(ds.case_ids, cfg.split_seed)
    val_ids = list(cfg.val_ids) if cfg.val_ids else val_ids
    test_ids = list(cfg.test_ids) if cfg.test_ids else test_ids
    train_ids = [i for i in ds.case_ids if i not in val_ids and i not in test_ids]
    patches = candidate_patch_sizes(
        ds.median_shape(train_ids), depth=s.depth, n=s.n_patch_sizes, max_voxels=s.max_patch_voxels
    )
    space = SearchSpace.default(
        depth=s.depth, base_width=s.base_width, max_width=s.max_width, patch_sizes=patches
    )
    total = s.warmup_steps + cfg.trials * s.steps_per_trial
    return _Setup(
        cfg,
        ds,
        space,
        train_ids,
        val_ids,
        ds.load_all(test_ids),
        cfg.scratch_steps if cfg.scratch_steps is not None else total,
    )


def _run_study(
    setup: _Setup, storage: Any, name: str, seed: int
) -> tuple[dict[str, Any], dict[str, Any], optuna.Study]:
    """One (sampler, seed) search, its derived network on the test cases, its from-scratch twin."""
    cfg = setup.cfg
    study_name = f"bench-{name}-seed{seed}"
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=study_name, storage=storage)
    timed = TimedSampler(make_sampler(name, setup.space, seed))
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", sampler=timed)
    study.set_user_attr("benchmark", asdict(cfg))
    objective = setup.objective(seed)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=cfg.trials)
    search_s = time.perf_counter() - t0
    trials = study.get_trials(deepcopy=False)
    vals = np.array([t.value if t.value is not None and np.isfinite(t.value) else 0.0 for t in trials])
    start = trials[0].datetime_start
    ends = np.array([(t.datetime_complete - start).total_seconds() for t in trials])  # type: ignore[operator]
    curve = {"best": np.maximum.accumulate(vals).tolist(), "time": ends.tolist()}
    final = derive_best(study, objective, top_k=3, overlap=0.25)
    test_dice = setup.test_dice(objective, final.net.to(objective.trainer.device), final.patch_size)
    t1 = time.perf_counter()
    scratch = train_from_scratch(objective, final.arch, setup.scratch_steps, seed)
    scratch_dice = setup.test_dice(objective, scratch, final.patch_size)
    row = {
        "sampler": name,
        "seed": seed,
        "best_val_dice": float(vals.max()),
        "late_val_dice": float(vals[-max(1, len(vals) // 3) :].mean()),
        "final_val_dice": float(final.metrics["val_dice"]),
        "test_dice": float(test_dice),
        "scratch_test_dice": float(scratch_dice),
        "arch": final.arch.code,
        "search_s": round(search_s, 1),
        "scratch_s": round(time.perf_counter() - t1, 1),
        "sampler_ms_per_trial": round(1e3 * float(np.mean(list(timed.seconds.values()))), 2)
        if timed.seconds
        else 0.0,
    }
    study.set_user_attr("benchmark:result", row)
    return row, curve, study


def _run_hpo(setup: _Setup, seed: int, hpo_trials: int) -> dict[str, Any]:
    """Classic HPO without sharing: TPE trials that each train a fresh network."""
    k = max(1, setup.scratch_steps // hpo_trials)
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
    test_dice = setup.test_dice(objective, best["net"], objective.patch_for(arch))
    return {
        "sampler": "hpo-tpe",
        "seed": seed,
        "best_val_dice": float(best["dice"]),
        "late_val_dice": float("nan"),
        "final_val_dice": float(best["dice"]),
        "test_dice": float(test_dice),
        "scratch_test_dice": float("nan"),
        "arch": arch.code,
        "search_s": round(time.perf_counter() - t0, 1),
        "scratch_s": 0.0,
        "sampler_ms_per_trial": 0.0,
        "steps_per_trial": k,
    }


def run_benchmark(cfg: BenchmarkConfig, *, echo: Callable[[str], None] = print) -> BenchmarkResult:
    """Run every (sampler, seed) study and the references; write table and plot."""
    check_sampler_names(cfg.samplers)
    art = default_artifact_dir(cfg.storage)
    out_dir = Path(cfg.output) if cfg.output else art.with_name(art.name.replace("_artifacts", "_benchmark"))
    out_dir.mkdir(parents=True, exist_ok=True)
    setup = _setup(cfg, out_dir)
    s = cfg.settings
    total_steps = s.warmup_steps + cfg.trials * s.steps_per_trial
    test_ids = [c.case_id for c in setup.test_cases]
    storage = open_storage(cfg.storage)
    echo(
        f"benchmark: train {setup.train_ids}, validation {setup.val_ids}, test {test_ids}; "
        f"patches {setup.space['patch'].choices}; {cfg.trials} trials x {s.steps_per_trial} steps "
        f"(+{s.warmup_steps} warm-up) per study"
    )
    rows: list[dict[str, Any]] = []
    curves: dict[str, Any] = defaultdict(list)
    studies = []
    for name in cfg.samplers:
        for seed in range(cfg.seeds):
            row, curve, study = _run_study(setup, storage, name, seed)
            rows.append(row)
            curves[name].append(curve)
            studies.append(study)
            echo(
                f"  {study.study_name}: best val {row['best_val_dice']:.4f}, test {row['test_dice']:.4f} "
                f"(scratch {row['scratch_test_dice']:.4f}), {row['search_s']:.0f} s, {row['arch']}"
            )
    hpo_trials = cfg.hpo_trials if cfg.hpo_trials is not None else max(2, cfg.trials // 10)
    if hpo_trials > 0:
        for seed in range(cfg.seeds):
            row = _run_hpo(setup, seed, hpo_trials)
            rows.append({k: v for k, v in row.items() if k != "steps_per_trial"})
            echo(
                f"  hpo-tpe seed {seed}: {hpo_trials} trials x {row['steps_per_trial']} steps, best val "
                f"{row['best_val_dice']:.4f}, test {row['test_dice']:.4f}"
            )
    md = summary_markdown(rows, cfg, total_steps, setup.scratch_steps, hpo_trials, test_ids)
    plot = _write_outputs(out_dir, cfg, rows, curves, md)
    _attach(studies, artifact_store(art), plot, md)
    return BenchmarkResult(rows, md, out_dir / "benchmark.csv", plot, dict(curves))


def _write_outputs(
    out_dir: Path, cfg: BenchmarkConfig, rows: list[dict[str, Any]], curves: dict[str, Any], md: str
) -> Path:
    (out_dir / "benchmark.md").write_text(md)
    with open(out_dir / "benchmark.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out_dir / "benchmark.json").write_text(
        json.dumps({"config": asdict(cfg), "rows": rows, "curves": curves}, indent=1)
    )
    return plot_curves(curves, out_dir / "benchmark.png")


def _attach(studies: list[optuna.Study], store: Any, plot: Path, md: str) -> None:
    """The plot as an artifact and the table as the note of every study."""
    from optuna.artifacts import upload_artifact
    from optuna_dashboard import save_note

    for st in studies:
        upload_artifact(artifact_store=store, file_path=str(plot), study_or_trial=st, mimetype="image/png")
        save_note(st, md)
