"""Weight-sharing fidelity: do shared-weight scores rank architectures as training them alone would?

One RONAS search trains the supernet (the ``ronas benchmark`` settings). Then ``--archs``
architectures drawn uniformly over the space (seeded) are scored twice on the validation case(s):
with the final shared weights (no training), and trained alone from scratch for
``--standalone-steps`` steps. Printed: both scores per architecture, Kendall's tau and Spearman's rho
between them, and the no-retraining gap of the search's final network: the same architecture
trained alone for the search's total steps minus the derived network, on the held-out test case(s).
``--ceiling`` trains every architecture alone a second time (another seed): the tau between the two
stand-alone runs is the most any shared-weight ranking can agree with one of them.
``--warmup-sampling fair`` draws the warm-up paths in FairNAS strict-fairness rounds;
``--distill-weight`` searches with in-place distillation from the best path so far.
``--anchor-every K`` (with ``--anchor best|handmade``) searches with anchoring. ``--population DIR``
takes a population of ``population.py``: the search trains and validates on its train subjects as
``population_curve.py`` does, and the no-retraining gap is measured on its tuning subjects (never
its test subjects). ``--policy`` is the controller: ``search`` (``SEARCH_CONTROLLER``, as ``ronas
search``) or ``sampler`` (the sampler's own defaults, with which the Task901 files were made).
``--reward-steps K`` also scores every architecture as a trial's reward is computed: K steps along
it from the final shared weights (without a distillation teacher), then validation (weights and
Adam state restored afterwards).

    python benchmarks/weight_sharing.py ../shared/data/Task901_BrainTissueTemplates --archs 20 --ceiling
    python benchmarks/weight_sharing.py p901 --population --policy search --archs 20 --ceiling
    python benchmarks/weight_sharing.py --compare RUN_A.txt RUN_B.txt   # τ of A minus B, paired
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import torch
from scipy import stats

from ronas_optuna import (
    SEARCH_CONTROLLER,
    Architecture,
    NASObjective,
    RONASSampler,
    SearchSettings,
    SearchSpace,
    Supernet,
    derive_best,
)
from ronas_optuna.bench import split_three, train_from_scratch
from ronas_optuna.bench.stats import tau_difference
from ronas_optuna.controller import ControllerConfig
from ronas_optuna.data import MSDDataset, candidate_patch_sizes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from population_curve import splits_for


def standalone(objective: NASObjective, arch: Architecture, steps: int, seed: int) -> float:
    """Validation Dice of ``arch`` trained alone from scratch for ``steps`` steps."""
    net = train_from_scratch(objective, arch, steps, seed)
    return objective.evaluator.evaluate(net, objective.patch_for(arch)).mean


def trial_reward(objective: NASObjective, arch: Architecture, steps: int, start: int) -> float:
    """Validation Dice of ``arch`` after ``steps`` steps along it on the shared weights, as a trial
    scores it; the weights and Adam state are put back afterwards."""
    snap = objective.trainer.snapshot(objective.supernet.path_parameters(arch))
    objective.train(arch, steps, start=start)
    dice = objective.validate(arch, all_cases=True).mean
    objective.trainer.restore(snap)
    return dice


def agreement(x: list[float], y: list[float]) -> str:
    tau, p_tau = stats.kendalltau(x, y)
    rho, p_rho = stats.spearmanr(x, y)
    return f"Kendall tau {tau:.3f} (p {p_tau:.3g}), Spearman rho {rho:.3f} (p {p_rho:.3g})"


def read_scores(path: Path) -> tuple[list[str], list[float], list[float]]:
    """The architectures, shared-weight scores and (first) stand-alone scores of a printed run."""

    def cells(line: str) -> list[str]:  # " | " separates cells; an architecture's code holds "|"
        return [c.strip(" `") for c in line.strip().strip("|").split(" | ")]

    lines = path.read_text().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| # |"))
    cols = cells(lines[head])
    shared = cols.index("shared-weight val Dice")
    alone = next(i for i, c in enumerate(cols) if c.startswith("alone,"))
    rows = [cells(line) for line in lines[head + 2 :] if line.startswith("| ")]
    return [r[1] for r in rows], [float(r[shared]) for r in rows], [float(r[alone]) for r in rows]


def compare(a: Path, b: Path) -> None:
    """Kendall's τ (shared vs alone) of run ``a`` minus run ``b``, paired over their architectures."""
    archs_a, shared_a, alone_a = read_scores(a)
    archs_b, shared_b, alone_b = read_scores(b)
    if archs_a != archs_b or alone_a != alone_b:
        raise SystemExit(f"{a} and {b}: not the same architectures and stand-alone scores")
    d = tau_difference(shared_a, shared_b, alone_a)
    print(f"Kendall tau, {a.name} - {b.name}, over {d.n} architectures: {d} (paired bootstrap, 95%)")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--compare":
        compare(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--archs", type=int, default=20)
    p.add_argument("--standalone-steps", type=int, default=200)
    p.add_argument("--trials", type=int, default=150)
    p.add_argument("--steps-per-trial", type=int, default=2)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--warmup-sampling", choices=["uniform", "fair"], default="uniform")
    p.add_argument("--distill-weight", type=float, default=0.0)
    p.add_argument("--anchor-every", type=int, default=0)
    p.add_argument("--anchor", choices=["best", "handmade"], default="best")
    p.add_argument("--population", action="store_true", help="DATA is a population (population.py)")
    p.add_argument("--policy", choices=["search", "sampler"], default="sampler")
    p.add_argument("--reward-steps", type=int, default=0, help="also score as a trial does (K steps)")
    p.add_argument("--ceiling", action="store_true", help="train each architecture alone twice")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--spacing", type=float, default=3.0)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--base-width", type=int, default=8)
    p.add_argument("--max-width", type=int, default=32)
    p.add_argument("--max-patch-voxels", type=int, default=32768)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default="weight_sharing_cache")
    a = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ds = MSDDataset(a.data, spacing=a.spacing, cache_dir=a.cache)
    if a.population:  # the gap on tuning subjects: a population's test subjects are never read here
        train, val, splits = splits_for(Path(a.data))
        test, held = splits["tuning"], "tuning"
    else:
        train, val, test = split_three(ds.case_ids, 0)
        held = "test"
    patches = candidate_patch_sizes(ds.median_shape(train), depth=a.depth, n=2, max_voxels=a.max_patch_voxels)
    space = SearchSpace.default(
        depth=a.depth, base_width=a.base_width, max_width=a.max_width, patch_sizes=patches
    )
    settings = SearchSettings.from_options(
        steps_per_trial=a.steps_per_trial,
        lr=a.lr,
        warmup_steps=a.warmup_steps,
        warmup_sampling=a.warmup_sampling,
        distill_weight=a.distill_weight,
        anchor_every=a.anchor_every,
        anchor=a.anchor,
        seed=a.seed,
    )
    torch.manual_seed(a.seed)
    objective = NASObjective.build(
        Supernet(space, ds.in_channels, ds.num_classes),
        ds,
        settings=settings,
        train_ids=train,
        val_ids=val,
        device="cpu",
    )
    policy = SEARCH_CONTROLLER if a.policy == "search" else ControllerConfig()
    sampler = RONASSampler(space, seed=a.seed, controller_config=policy)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=a.trials)
    anchors = a.trials // a.anchor_every if a.anchor_every else 0
    total_steps = a.warmup_steps + (a.trials + anchors) * a.steps_per_trial
    print(
        f"train {train}, validation {val}, {held} {test}; search: {a.trials} trials, "
        f"{total_steps} shared-weight steps ({a.warmup_sampling} warm-up, distillation weight "
        f"{a.distill_weight}, anchoring every {a.anchor_every} on {a.anchor}, policy {a.policy}: "
        f"temperature {policy.temperature}), {time.perf_counter() - t0:.0f} s; "
        f"best trial Dice {study.best_value:.4f}"
    )
    rng = np.random.default_rng([a.seed, 99])
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(a.archs)))
    again = " alone again, other seed |" if a.ceiling else ""
    rewarded = f" shared, after {a.reward_steps} steps (a trial's reward) |" if a.reward_steps else ""
    alone_head = f"alone, {a.standalone_steps} steps, val Dice"
    print(f"\n| # | architecture | shared-weight val Dice |{rewarded} {alone_head} |{again}")
    print("|---:|---|---:|---:|" + ("---:|" if a.ceiling else "") + ("---:|" if a.reward_steps else ""))
    shared, reward, alone, alone2 = [], [], [], []
    for i, arch in enumerate(archs):
        shared.append(objective.validate(arch, all_cases=True).mean)
        if a.reward_steps:
            reward.append(trial_reward(objective, arch, a.reward_steps, start=10**7 + i * 1000))
        alone.append(standalone(objective, arch, a.standalone_steps, a.seed + i))
        if a.ceiling:
            alone2.append(standalone(objective, arch, a.standalone_steps, a.seed + i + len(archs)))
        more = f" {alone2[-1]:.4f} |" if a.ceiling else ""
        after = f" {reward[-1]:.4f} |" if a.reward_steps else ""
        print(f"| {i} | `{arch.code}` | {shared[-1]:.4f} |{after} {alone[-1]:.4f} |{more}", flush=True)
    print(f"\nrank agreement over {len(archs)} architectures: {agreement(shared, alone)}")
    if a.reward_steps:
        how = f"a trial's reward ({a.reward_steps} steps, then validation)"
        print(f"{how} vs alone: {agreement(reward, alone)}")
    if a.ceiling:
        print(f"shared weights vs the second stand-alone run: {agreement(shared, alone2)}")
        print(f"ceiling, stand-alone run vs stand-alone run: {agreement(alone, alone2)}")
    final = derive_best(study, objective, top_k=3, overlap=0.25)
    test_cases = ds.load_all(test)
    derived = objective.evaluator.evaluate(final.net, final.patch_size, cases=test_cases, overlap=0.5).mean
    scratch = train_from_scratch(objective, final.arch, total_steps, a.seed)
    retrained = objective.evaluator.evaluate(scratch, final.patch_size, cases=test_cases, overlap=0.5).mean
    print(
        f"no-retraining gap on {test}: final architecture `{final.arch.code}` derived (no retraining) "
        f"{derived:.4f}, trained alone for {total_steps} steps {retrained:.4f}, "
        f"gap {retrained - derived:+.4f}"
    )


if __name__ == "__main__":
    main()
