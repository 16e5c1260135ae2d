"""Multi-objective samplers on the synthetic cost landscape: hypervolume of the front each returns.

Each seed draws its own :class:`~ronas_optuna.bench.CostLandscape` over the README space (value to
maximise with evaluation noise; a noiseless cost to minimise that tends to grow with the value),
and each sampler, as a user would start it (default arguments, that seed), runs a two-direction
study. At each budget, the front the study returns (``best_trials`` among its first trials, by
observed values) is scored by its hypervolume in true (noiseless) values, against a reference
point fixed per landscape: the 5th percentile of the value and the 95th of the cost over 2,000
random architectures. Seeds are the units (one landscape and run each); differences are paired by
seed. Larger hypervolume is better.

    python benchmarks/pareto_landscape.py --seeds 10 --budgets 100 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume

from ronas_optuna import RONASSampler, SearchSpace
from ronas_optuna.bench import CostLandscape, Landscape
from ronas_optuna.bench.stats import seed_table

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLERS = ("ronas", "nsga2", "tpe", "random")


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    return {
        "ronas": lambda: RONASSampler(seed=seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }[name]()


def reference(land: CostLandscape, space: SearchSpace) -> np.ndarray:
    """The hypervolume's reference point, in minimised units: (-value, cost)."""
    rng = np.random.default_rng(12345)
    archs = [space.sample(rng).to_params() for _ in range(2000)]
    values = [land.landscape.true_value(a) for a in archs]
    costs = [land.cost(a) for a in archs]
    return np.array([-np.quantile(values, 0.05), np.quantile(costs, 0.95)])


def hypervolume(land: CostLandscape, trials: list[optuna.trial.FrozenTrial], ref: np.ndarray) -> float:
    """The true-value hypervolume of the observed front of ``trials``."""
    observed = np.array([[-t.values[0], t.values[1]] for t in trials])
    front = [
        t for t, p in zip(trials, observed) if not ((observed <= p).all(1) & (observed < p).any(1)).any()
    ]
    true = np.array([[-land.landscape.true_value(t.params), land.cost(t.params)] for t in front])
    true = true[(true < ref).all(1)]
    return float(compute_hypervolume(true, ref)) if len(true) else 0.0


def run(space: SearchSpace, sampler: str, seed: int, budgets: list[int]) -> list[dict[str, Any]]:
    land = CostLandscape(Landscape(space, seed=seed), seed=seed)
    ref = reference(land, space)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(sampler, seed))
    t0 = time.perf_counter()
    study.optimize(land, n_trials=max(budgets))
    seconds = time.perf_counter() - t0
    done = study.trials
    return [
        {
            "sampler": sampler,
            "seed": seed,
            "budget": b,
            "hypervolume": hypervolume(land, done[:b], ref),
            "seconds": round(seconds * b / len(done), 2),
        }
        for b in budgets
    ]


def report(rows: list[dict[str, Any]], budgets: list[int], first: str = "ronas") -> str:
    return seed_table(rows, "hypervolume", budgets, first=first, digits=4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budgets", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--results", type=Path, default=RESULTS)
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.default(depth=3)
    rows = []
    for seed in range(a.seeds):
        for s in a.samplers.split(","):
            rows += run(space, s, seed, sorted(a.budgets))
            print(json.dumps(rows[-1]), flush=True)
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / "pareto_landscape.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = report(rows, sorted(a.budgets))
    (a.results / "pareto_landscape.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
