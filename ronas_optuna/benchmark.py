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

from .dashboard import artifact_store, default_artifact_dir
from .data.msd import DataError, MSDDataset
from .data.patches import PatchDataset, candidate_patch_sizes, make_loader
from .final import derive_best
from .losses import deep_supervision_loss
from .network import RONASNet
from .objective import NASObjective
from .runner import make_sampler, open_storage
from .space import Architecture, SearchSpace
from .supernet import Supernet


@dataclass
class BenchmarkConfig:
    """Settings of one benchmark run (plain JSON)."""

    data: str
    samplers: list[str] = field(default_factory=lambda: ["ronas", "tpe", "random", "gp"])
    seeds: int = 3
    trials: int = 30
    storage: str = "sqlite:///ronas_benchmark.db"
    spacing: float | None = None
    depth: int = 4
    base_width: int = 16
    max_width: int = 320
    steps_per_trial: int = 20
    batch_size: int = 2
    lr: float = 3e-3
    warmup_steps: int = 0
    n_patch_sizes: int = 2
    max_patch_voxels: int = 64**3
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


class TimedSampler(optuna.samplers.BaseSampler):
    """Accumulates the seconds a sampler spends per trial."""

    def __init__(self, inner: optuna.samplers.BaseSampler):
        self.inner = inner
        self.seconds: dict[int, float] = defaultdict(float)

    def _t(self, number: int, fn: Callable[..., Any], *a: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a)
        finally:
            self.seconds[number] += time.perf_counter() - t

    def infer_relative_search_space(self, study, trial):  # type: ignore[no-untyped-def]
        return self._t(trial.number, self.inner.infer_relative_search_space, study, trial)

    def sample_relative(self, study, trial, space):  # type: ignore[no-untyped-def]
        return self._t(trial.number, self.inner.sample_relative, study, trial, space)

    def sample_independent(self, study, trial, name, dist):  # type: ignore[no-untyped-def]
        return self._t(trial.number, self.inner.sample_independent, study, trial, name, dist)

    def before_trial(self, study, trial):  # type: ignore[no-untyped-def]
        return self._t(trial.number, self.inner.before_trial, study, trial)

    def after_trial(self, study, trial, state, values):  # type: ignore[no-untyped-def]
        return self._t(trial.number, self.inner.after_trial, study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def split_three(ids: list[str], seed: int) -> tuple[list[str], list[str], list[str]]:
    """Seeded train / validation / test split (at least one case each)."""
    if len(ids) < 3:
        raise DataError(f"the benchmark needs at least 3 cases (train, validation, test), got {len(ids)}")
    perm = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n = max(1, round(0.2 * len(ids)))
    return sorted(perm[2 * n :]), sorted(perm[n : 2 * n]), sorted(perm[:n])


def train_from_scratch(
    objective: NASObjective, arch: Architecture, steps: int, seed: int
) -> RONASNet:
    """``arch`` as a fresh standalone network trained alone for ``steps`` steps."""
    torch.manual_seed(seed)
    sp = objective.supernet
    net = RONASNet(sp.space, arch, sp.in_channels, sp.num_classes, ds_levels=sp.ds_levels).to(objective.device)
    opt = torch.optim.Adam(net.parameters(), lr=objective.lr, weight_decay=objective.weight_decay)
    net.train()
    ds = PatchDataset(objective.train_cases, objective.patch_for(arch), length=steps * objective.batch_size,
                      seed=seed + 1000)
    for x, y in make_loader(ds, objective.batch_size):
        x, y = x.to(objective.device), y.to(objective.device)
        with torch.autocast(objective.device.type, dtype=objective.amp_dtype, enabled=objective.amp):
            loss = deep_supervision_loss(net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return net.eval()


def run_benchmark(cfg: BenchmarkConfig, *, echo: Callable[[str], None] = print) -> BenchmarkResult:
    """Run every (sampler, seed) study and the references; write table and plot."""
    for s in cfg.samplers:
        if s not in ("ronas", "tpe", "random", "gp"):
            raise ValueError(f"unknown sampler {s!r}")
    out_dir = Path(cfg.output) if cfg.output else default_artifact_dir(cfg.storage).with_name(
        default_artifact_dir(cfg.storage).name.replace("_artifacts", "_benchmark"))
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = MSDDataset(cfg.data, spacing=cfg.spacing, cache_dir=out_dir / "cache")
    train_ids, val_ids, test_ids = split_three(ds.case_ids, cfg.split_seed)
    if cfg.val_ids:
        val_ids = list(cfg.val_ids)
    if cfg.test_ids:
        test_ids = list(cfg.test_ids)
    train_ids = [i for i in ds.case_ids if i not in val_ids and i not in test_ids]
    patches = candidate_patch_sizes(ds.median_shape(train_ids), depth=cfg.depth, n=cfg.n_patch_sizes,
                                    max_voxels=cfg.max_patch_voxels)
    space = SearchSpace.default(depth=cfg.depth, base_width=cfg.base_width, max_width=cfg.max_width,
                                patch_sizes=patches)
    total_steps = cfg.warmup_steps + cfg.trials * cfg.steps_per_trial
    scratch_steps = cfg.scratch_steps if cfg.scratch_steps is not None else total_steps
    storage = open_storage(cfg.storage)
    store = artifact_store(default_artifact_dir(cfg.storage))
    echo(f"benchmark: train {train_ids}, validation {val_ids}, test {test_ids}; patches {patches}; "
         f"{cfg.trials} trials x {cfg.steps_per_trial} steps (+{cfg.warmup_steps} warm-up) per study")
    rows: list[dict[str, Any]] = []
    curves: dict[str, Any] = defaultdict(list)
    studies = []
    test_cases = ds.load_all(test_ids)

    def make_objective(seed: int) -> NASObjective:
        torch.manual_seed(seed)
        sn = Supernet(space, ds.in_channels, ds.num_classes)
        return NASObjective(sn, ds, train_ids=train_ids, val_ids=val_ids, steps_per_trial=cfg.steps_per_trial,
                            batch_size=cfg.batch_size, lr=cfg.lr, device=cfg.device, seed=seed,
                            warmup_steps=cfg.warmup_steps)

    for name in cfg.samplers:
        for seed in range(cfg.seeds):
            study_name = f"bench-{name}-seed{seed}"
            try:
                optuna.delete_study(study_name=study_name, storage=storage)
            except KeyError:
                pass
            timed = TimedSampler(make_sampler(name, space, seed))
            study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", sampler=timed)
            study.set_user_attr("benchmark", asdict(cfg))
            objective = make_objective(seed)
            t0 = time.perf_counter()
            study.optimize(objective, n_trials=cfg.trials)
            search_s = time.perf_counter() - t0
            trials = study.get_trials(deepcopy=False)
            vals = np.array([t.value if t.value is not None and np.isfinite(t.value) else 0.0 for t in trials])
            ends = np.array([(t.datetime_complete - trials[0].datetime_start).total_seconds() for t in trials])
            curves[name].append({"best": np.maximum.accumulate(vals).tolist(), "time": ends.tolist()})
            final = derive_best(study, objective, top_k=3, overlap=0.25)
            arch = final.arch
            test_dice = objective.validate(final.net.to(objective.device), cases=test_cases,
                                           patch=final.patch_size, overlap=0.5)[0]
            t1 = time.perf_counter()
            scratch = train_from_scratch(objective, arch, scratch_steps, seed)
            scratch_dice = objective.validate(scratch, cases=test_cases, patch=final.patch_size, overlap=0.5)[0]
            scratch_s = time.perf_counter() - t1
            overhead_ms = 1e3 * float(np.mean(list(timed.seconds.values()))) if timed.seconds else 0.0
            row = {
                "sampler": name, "seed": seed, "best_val_dice": float(vals.max()),
                "late_val_dice": float(vals[-max(1, len(vals) // 3):].mean()),
                "final_val_dice": float(final.metrics["val_dice"]), "test_dice": float(test_dice),
                "scratch_test_dice": float(scratch_dice), "arch": arch.code,
                "search_s": round(search_s, 1), "scratch_s": round(scratch_s, 1),
                "sampler_ms_per_trial": round(overhead_ms, 2),
            }
            rows.append(row)
            study.set_user_attr("benchmark:result", row)
            studies.append(study)
            echo(f"  {study_name}: best val {row['best_val_dice']:.4f}, test {test_dice:.4f} "
                 f"(scratch {scratch_dice:.4f}), {search_s:.0f} s, {arch.code}")

    hpo_trials = cfg.hpo_trials if cfg.hpo_trials is not None else max(2, cfg.trials // 10)
    if hpo_trials > 0:
        k = max(1, scratch_steps // hpo_trials)
        for seed in range(cfg.seeds):
            objective = make_objective(seed)
            best: dict[str, Any] = {"dice": -1.0}

            def hpo(trial: optuna.Trial, objective: NASObjective = objective, best: dict = best, seed: int = seed) -> float:
                arch = space.suggest(trial)
                net = train_from_scratch(objective, arch, k, seed * 1000 + trial.number)
                d = objective.validate(net, patch=objective.patch_for(arch), overlap=0.25)[0]
                if d > best["dice"]:
                    best.update(dice=d, net=net, arch=arch)
                return d

            t0 = time.perf_counter()
            st = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
            st.optimize(hpo, n_trials=hpo_trials)
            arch = best["arch"]
            test_dice = objective.validate(best["net"], cases=test_cases, patch=objective.patch_for(arch),
                                           overlap=0.5)[0]
            row = {"sampler": "hpo-tpe", "seed": seed, "best_val_dice": float(best["dice"]),
                   "late_val_dice": float("nan"),
                   "final_val_dice": float(best["dice"]), "test_dice": float(test_dice),
                   "scratch_test_dice": float("nan"), "arch": arch.code,
                   "search_s": round(time.perf_counter() - t0, 1), "scratch_s": 0.0, "sampler_ms_per_trial": 0.0}
            rows.append(row)
            echo(f"  hpo-tpe seed {seed}: {hpo_trials} trials x {k} steps, best val {best['dice']:.4f}, "
                 f"test {test_dice:.4f}")

    md = summary_markdown(rows, cfg, total_steps, scratch_steps, hpo_trials, test_ids)
    (out_dir / "benchmark.md").write_text(md)
    with open(out_dir / "benchmark.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out_dir / "benchmark.json").write_text(json.dumps({"config": asdict(cfg), "rows": rows, "curves": curves},
                                                       indent=1))
    plot = plot_curves(curves, out_dir / "benchmark.png")
    from optuna.artifacts import upload_artifact
    from optuna_dashboard import save_note

    for st in studies:
        upload_artifact(artifact_store=store, file_path=str(plot), study_or_trial=st, mimetype="image/png")
        save_note(st, md)
    return BenchmarkResult(rows, md, out_dir / "benchmark.csv", plot, dict(curves))


def summary_markdown(rows: list[dict[str, Any]], cfg: BenchmarkConfig, total_steps: int, scratch_steps: int,
                     hpo_trials: int, test_ids: list[str]) -> str:
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[r["sampler"]].append(r)

    def ms(key: str, rs: list[dict[str, Any]]) -> str:
        v = np.array([r[key] for r in rs], dtype=float)
        if np.isnan(v).all():
            return "–"
        return f"{np.nanmean(v):.4f} ± {np.nanstd(v):.4f}"

    lines = [
        f"Benchmark on `{Path(cfg.data).name}`: {cfg.seeds} seed(s), {cfg.trials} trials x {cfg.steps_per_trial} "
        f"steps (+{cfg.warmup_steps} warm-up) = {total_steps} shared-weight steps per study; test cases {test_ids}; "
        f"from-scratch references trained {scratch_steps} steps.",
        "",
        "| sampler | best validation Dice (search) | mean validation Dice, last third of trials | "
        "final test Dice, shared weights | same arch from scratch | search s | sampler ms/trial |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rs in by.items():
        lines.append(f"| {name} | {ms('best_val_dice', rs)} | {ms('late_val_dice', rs)} | {ms('test_dice', rs)} | "
                     f"{ms('scratch_test_dice', rs)} | "
                     f"{np.mean([r['search_s'] for r in rs]):.0f} | {np.mean([r['sampler_ms_per_trial'] for r in rs]):.1f} |")
    if hpo_trials:
        lines.append("")
        lines.append(f"`hpo-tpe`: classic HPO without sharing, {hpo_trials} TPE trials each training a fresh network "
                     f"for {scratch_steps // max(1, hpo_trials)} steps (same total steps).")
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
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
    plt.close(fig)
    return path
