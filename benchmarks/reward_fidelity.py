"""A cheaper trial validation: does a reward at another sliding-window overlap, or on a few fixed
patches per case, rank architectures as the full validation does, and what does it save?

One RONAS search trains the supernet (the ``ronas benchmark`` settings, as in ``weight_sharing.py``).
Then ``--archs`` architectures drawn uniformly over the space (seeded) are scored on the validation
case(s) with the final shared weights, at the reference overlap (0.25, a trial's reward today), at
each ``--overlaps`` candidate and on ``--patches`` N fixed patches per case (``reward_patches``).
Printed per candidate: Kendall's tau and Spearman's rho against the reference, the largest absolute
Dice difference, and the validation's CPU time as a ratio of the reference's (measured side by side,
one thread); and the share of a trial's time its validation took in the search (from the trials'
``time_s``), so the saving on a whole trial can be read off. ``--population``: DATA is a population
of ``population.py``, searched and validated on its train subjects as ``population_curve.py`` does.

    python benchmarks/reward_fidelity.py ../shared/data/Task901_BrainTissueTemplates --archs 20
    python benchmarks/reward_fidelity.py p901 --population --archs 20 --overlaps 0 --patches 4 8
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import torch
from population_curve import splits_for
from scipy import stats

from ronas_optuna import NASObjective, RONASSampler, SearchSettings, SearchSpace, Supernet
from ronas_optuna.bench import split_three
from ronas_optuna.data import MSDDataset, candidate_patch_sizes

REFERENCE = 0.25


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--archs", type=int, default=20)
    p.add_argument("--overlaps", type=float, nargs="*", default=[0.0, 0.125])
    p.add_argument("--patches", type=int, nargs="*", default=[], help="fixed patches per case")
    p.add_argument("--population", action="store_true", help="DATA is a population (population.py)")
    p.add_argument("--trials", type=int, default=150)
    p.add_argument("--steps-per-trial", type=int, default=2)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--spacing", type=float, default=3.0)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--base-width", type=int, default=8)
    p.add_argument("--max-width", type=int, default=32)
    p.add_argument("--max-patch-voxels", type=int, default=32768)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default="reward_fidelity_cache")
    a = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    ds = MSDDataset(a.data, spacing=a.spacing, cache_dir=a.cache)
    train, val = splits_for(Path(a.data))[:2] if a.population else split_three(ds.case_ids, 0)[:2]
    patches = candidate_patch_sizes(ds.median_shape(train), depth=a.depth, n=2, max_voxels=a.max_patch_voxels)
    space = SearchSpace.default(
        depth=a.depth, base_width=a.base_width, max_width=a.max_width, patch_sizes=patches
    )
    settings = SearchSettings.from_options(
        steps_per_trial=a.steps_per_trial, lr=a.lr, warmup_steps=a.warmup_steps, seed=a.seed, finetune_steps=0
    )
    torch.manual_seed(a.seed)
    supernet = Supernet(space, ds.in_channels, ds.num_classes)
    objective = NASObjective.build(
        supernet, ds, settings=settings, train_ids=train, val_ids=val, device="cpu"
    )
    study = optuna.create_study(direction="maximize", sampler=RONASSampler(space, seed=a.seed))
    study.optimize(objective, n_trials=a.trials)
    times = [t.user_attrs["time_s"] for t in study.trials]
    share = sum(t.get("validate", 0.0) for t in times) / sum(sum(t.values()) for t in times)
    print(f"search: {a.trials} trials on {train}, validation {val}; validation {share:.1%} of a trial's time")

    rng = np.random.default_rng([a.seed, 99])
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(a.archs)))
    ev = objective.evaluator
    Score = Callable[[torch.nn.Module, tuple[int, int, int]], float]
    rewards: dict[str, Score] = {
        f"overlap {o}": lambda net, patch, o=o: ev.evaluate(net, patch, overlap=o).mean
        for o in [REFERENCE, *a.overlaps]
    }
    for n in a.patches:
        rewards[f"{n} patches"] = lambda net, patch, n=n: ev.evaluate_patches(net, patch, n, seed=a.seed).mean
    ref = f"overlap {REFERENCE}"
    dice: dict[str, list[float]] = {r: [] for r in rewards}
    seconds: dict[str, float] = dict.fromkeys(rewards, 0.0)
    for arch in archs:
        net, patch = objective.supernet.path(arch), objective.patch_for(arch)
        for r, score in rewards.items():  # side by side, so load drifts hit every reward alike
            t0 = time.process_time()
            dice[r].append(score(net, patch))
            seconds[r] += time.process_time() - t0
    print(f"\n| reward | Kendall tau vs {ref} | Spearman rho | largest Dice difference | CPU vs {ref} |")
    print("|---|---:|---:|---:|---:|")
    for r in rewards:
        tau = stats.kendalltau(dice[ref], dice[r])[0]
        rho = stats.spearmanr(dice[ref], dice[r])[0]
        gap = float(np.max(np.abs(np.subtract(dice[ref], dice[r]))))
        print(f"| {r} | {tau:.3f} | {rho:.3f} | {gap:.4f} | {seconds[r] / seconds[ref]:.2f} |")
    print(f"\n{len(archs)} architectures; Dice at {ref}: {np.round(dice[ref], 4).tolist()}")


if __name__ == "__main__":
    main()
