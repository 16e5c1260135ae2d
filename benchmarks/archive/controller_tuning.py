"""RONAS controller settings on the real shared-weight objective (not a synthetic landscape).

Each variant sets some ``ControllerConfig`` fields; each runs one RONAS study per seed on the same
split, budget and supernet initialisation as ``ronas benchmark``, then derives the final network
with its shared weights (no retraining) and scores the held-out test case. Printed per variant:
best validation Dice of the search, mean validation Dice of the last 50 trials (how concentrated
the search became), final test Dice, and policy entropy at the end.

    python benchmarks/archive/controller_tuning.py DATA --variant default --variant lr=0.02 \
        --variant batch_size=1 --seeds 3 --trials 150
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import optuna
import torch

from ronas_optuna import NASObjective, RONASSampler, SearchSettings, SearchSpace, Supernet, derive_best
from ronas_optuna.bench import split_three
from ronas_optuna.bench.variant import controller_variant
from ronas_optuna.controller import ControllerConfig
from ronas_optuna.data import MSDDataset, candidate_patch_sizes


def parse_variant(text: str) -> tuple[str, ControllerConfig]:
    try:
        return text, controller_variant(text)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--variant", action="append", default=[], help="'default' or field=value[,field=value]")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=150)
    p.add_argument("--steps-per-trial", type=int, default=2)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--spacing", type=float, default=3.0)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--base-width", type=int, default=8)
    p.add_argument("--max-width", type=int, default=32)
    p.add_argument("--max-patch-voxels", type=int, default=32768)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--cache", default="controller_tuning_cache")
    a = p.parse_args()
    variants = [parse_variant(text) for text in a.variant or ["default"]]  # bad input fails before any work
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ds = MSDDataset(a.data, spacing=a.spacing, cache_dir=a.cache)
    train, val, test = split_three(ds.case_ids, 0)
    patches = candidate_patch_sizes(ds.median_shape(train), depth=a.depth, n=2, max_voxels=a.max_patch_voxels)
    space = SearchSpace.default(
        depth=a.depth, base_width=a.base_width, max_width=a.max_width, patch_sizes=patches
    )
    test_cases = ds.load_all(test)
    print(
        f"train {train} val {val} test {test}; {a.trials} trials x {a.steps_per_trial} steps "
        f"(+{a.warmup_steps} warm-up), {a.seeds} seeds, torch threads {torch.get_num_threads()}"
    )
    print(
        "| variant | best val Dice | mean val, last 50 trials | final test Dice "
        "| entropy at end (nats) | s/study |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, cfg in variants:
        best, last, test_d, ent, secs = [], [], [], [], []
        for seed in range(a.seeds):
            torch.manual_seed(seed)
            sn = Supernet(space, ds.in_channels, ds.num_classes)
            settings = SearchSettings.from_options(
                steps_per_trial=a.steps_per_trial,
                batch_size=2,
                lr=a.lr,
                seed=seed,
                warmup_steps=a.warmup_steps,
            )
            obj = NASObjective.build(sn, ds, settings=settings, train_ids=train, val_ids=val, device="cpu")
            sampler = RONASSampler(space, seed=seed, controller_config=cfg)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            t0 = time.perf_counter()
            study.optimize(obj, n_trials=a.trials)
            secs.append(time.perf_counter() - t0)
            vals = np.array([t.value for t in study.trials], dtype=float)
            best.append(np.nanmax(vals))
            last.append(np.nanmean(vals[-50:]))
            final = derive_best(study, obj, top_k=3, overlap=0.25)
            test_d.append(
                obj.evaluator.evaluate(final.net, final.patch_size, cases=test_cases, overlap=0.5).mean
            )
            ent.append(sampler.entropy_history[-1][1])
        print(
            f"| {name} | {np.mean(best):.4f} ± {np.std(best):.4f} | "
            f"{np.mean(last):.4f} ± {np.std(last):.4f} | "
            f"{np.mean(test_d):.4f} ± {np.std(test_d):.4f} | {np.mean(ent):.1f} | {np.mean(secs):.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
