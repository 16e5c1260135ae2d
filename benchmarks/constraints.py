"""Constraints: the feasible share of the last trials, RONAS against Optuna's TPE and Random.

A toy with a constraint at the optimum's edge: ``DECISIONS`` categorical decisions with choices 0 to
3; the objective (maximised) is the sum of the choices plus a small per-choice bonus that makes
trade-offs matter, and the constraint is ``sum <= LIMIT`` (set with ``trial.set_constraint``), so
every better-than-average architecture sits close to infeasibility. For each sampler and seed it
reports the share of feasible trials among the last 100 and the best feasible value, as the mean and
a 95% t-interval over seeds, and RONAS against TPE as paired differences over seeds.

    python benchmarks/constraints.py --seeds 10 --trials 300
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable

import numpy as np
import optuna

from ronas_optuna import RONASSampler
from ronas_optuna.bench.stats import interval

DECISIONS, CHOICES, LIMIT = 8, 4, 12
BONUS = np.linspace(0.0, 0.3, DECISIONS)  # decision i's choice c adds c * BONUS[i] / CHOICES


def objective(trial: optuna.Trial, *, tell: bool = True) -> float:
    """The toy; ``tell=False`` keeps the constraint from the sampler (a user attr only)."""
    picks = [trial.suggest_categorical(f"d{i}", list(range(CHOICES))) for i in range(DECISIONS)]
    total = sum(picks)
    trial.set_user_attr("violation", total - LIMIT)
    if tell:
        trial.set_constraint("sum", total - LIMIT)
    return float(total + sum(c * b / CHOICES for c, b in zip(picks, BONUS)))


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    samplers: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "ronas": lambda: RONASSampler(seed=seed),
        "ronas-blind": lambda: RONASSampler(seed=seed),  # the constraint not told
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    return samplers[name]()


def run(name: str, seed: int, trials: int, last: int) -> tuple[float, float]:
    """Feasible share of the last ``last`` trials and the best feasible value."""
    study = optuna.create_study(direction="maximize", sampler=make_sampler(name, seed))
    study.optimize(lambda t: objective(t, tell=name != "ronas-blind"), n_trials=trials)
    ok = [t.user_attrs["violation"] <= 0 for t in study.trials]
    best = max((t.value for t, f in zip(study.trials, ok) if f and t.value is not None), default=float("nan"))
    return float(np.mean(ok[-last:])), float(best)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--last", type=int, default=100)
    ap.add_argument("--samplers", default="ronas,tpe,random,ronas-blind")
    a = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    names = a.samplers.split(",")
    share = {n: [] for n in names}
    best = {n: [] for n in names}
    for seed in range(a.seeds):
        for n in names:
            s, b = run(n, seed, a.trials, a.last)
            share[n].append(s)
            best[n].append(b)
    print(f"Optuna {optuna.__version__} (TPE: its defaults), Python {platform.python_version()}; ", end="")
    print(f"{a.seeds} seeds x {a.trials} trials")
    print(f"| sampler | feasible share, last {a.last} | best feasible value |")
    print("|---|---|---|")
    for n in names:
        print(f"| {n} | {interval(share[n])} | {interval(best[n])} |")
    if "ronas" in names and "tpe" in names:
        for what, d in (("feasible share", share), ("best feasible value", best)):
            diff = interval([r - t for r, t in zip(d["ronas"], d["tpe"])])
            print(f"RONAS - TPE {what} (paired over seeds): {diff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
