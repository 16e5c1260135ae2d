"""Does the RL controller learn? RONAS vs TPE, Random and GP on a synthetic reward landscape.

The landscape (``ronas_optuna.bench.Landscape``) is seeded: per-decision effects, pairwise
interactions and evaluation noise over the default search space, no training. Each sampler runs once
per seed up to the largest budget; the smaller budgets are prefixes of that run. Printed per budget:
mean +- sd over seeds of the best-so-far true (noiseless) value of the architectures tried, the mean
value of the last 50 trials, then paired differences RONAS - other (same seed, same landscape) with
95% t-intervals, and RONAS's policy entropy over time. Then the sampler overhead per trial
(sampling + ``after_trial``) on SQLite, RONAS against TPE, early and late in a 1,000-trial study.

    python benchmarks/sampler_landscape.py --gp-max 100          # full (about 20 min on 2 cores)
    python benchmarks/sampler_landscape.py --budgets 50 100 --seeds 2 --overhead-trials 200
    python benchmarks/sampler_landscape.py --samplers ronas tpe --variant risk_quantile=0.2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import optuna
import torch

from ronas_optuna import SearchSpace
from ronas_optuna.bench import Landscape, TimedSampler
from ronas_optuna.bench.stats import interval
from ronas_optuna.bench.variant import controller_variant
from ronas_optuna.controller import ControllerConfig
from ronas_optuna.registry import make_sampler, sampler_names
from ronas_optuna.sampler import RONASSampler

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore")


def make(
    name: str, space: SearchSpace, seed: int, cfg: ControllerConfig | None
) -> optuna.samplers.BaseSampler:
    return make_sampler(name, space, seed, controller_config=cfg)


def run_one(name, space, seed, n, cfg):
    land = Landscape(space, seed=seed)
    sampler = make(name, space, seed, cfg)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    t = time.perf_counter()
    study.optimize(land, n_trials=n)
    secs = time.perf_counter() - t
    true = np.array([land.true_value(tr.params) for tr in study.trials])
    ent = [e for _, e in sampler.entropy_history] if isinstance(sampler, RONASSampler) else []
    return true, ent, secs


def overhead(name, space, n, seed=0):
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{os.path.join(tmp, 'o.db')}"
        timed = TimedSampler(make(name, space, seed, None))
        study = optuna.create_study(direction="maximize", sampler=timed, storage=storage)
        study.optimize(Landscape(space, seed=seed), n_trials=n)
        ms = np.array([timed.seconds[i] for i in range(n)]) * 1e3
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--samplers", nargs="+", default=list(sampler_names()), choices=sampler_names())
    ap.add_argument("--gp-max", type=int, default=300, help="GP is cubic in trials: cap its budget")
    ap.add_argument("--overhead-trials", type=int, default=1000)
    ap.add_argument(
        "--variant",
        default="",
        help="RONAS controller settings, 'field=value[,field=value]' (ControllerConfig)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)  # the policy's small LSTM: more threads only contend under load
    try:
        cfg = controller_variant(args.variant or "default")
    except ValueError as e:
        raise SystemExit(str(e)) from None
    space = SearchSpace.default()
    top = max(args.budgets)
    print(
        f"default space: {len(space)} decisions, {space.size:.3g} architectures; seeds {args.seeds}; "
        f"controller {cfg}"
    )
    results = {}
    for name in args.samplers:
        n = min(top, args.gp_max) if name == "gp" else top
        runs = [run_one(name, space, s, n, cfg) for s in range(args.seeds)]
        results[name] = runs
        print(f"  ran {name}: {n} trials x {args.seeds} seeds, {np.mean([r[2] for r in runs]):.1f} s per run")
    print()
    print("| budget | sampler | best-so-far true value (mean ± sd) | mean of last 50 trials |")
    print("|---:|---|---:|---:|")
    for b in args.budgets:
        for name, runs in results.items():
            if len(runs[0][0]) < b:
                continue
            best = [r[0][:b].max() for r in runs]
            last = [r[0][b - 50 : b].mean() for r in runs]
            print(
                f"| {b} | {name} | {np.mean(best):.4f} ± {np.std(best):.4f} | "
                f"{np.mean(last):.4f} ± {np.std(last):.4f} |"
            )
    if "ronas" in results:
        print()
        print("| budget | paired difference of best-so-far (same seed) | mean [95% CI] | verdict |")
        print("|---:|---|---:|---|")
        for b in args.budgets:
            for name, runs in results.items():
                if name == "ronas" or len(runs[0][0]) < b:
                    continue
                diff = [r[0][:b].max() - o[0][:b].max() for r, o in zip(results["ronas"], runs)]
                iv = interval(diff)
                verdict = "no difference shown"
                if iv.excludes_zero():
                    verdict = "RONAS better" if iv.mean > 0 else "RONAS worse"
                print(f"| {b} | ronas − {name} | {iv} | {verdict} |")
        ents = np.array([r[1] for r in results["ronas"]])
        marks = [0, 50, 100, 200, 300, 500, 999]
        marks = [m for m in marks if m < ents.shape[1]]
        print()
        print(
            "RONAS policy entropy (nats, mean over seeds; uniform = "
            f"{sum(np.log(len(d.choices)) for d in space.decisions):.2f}): "
            + ", ".join(f"trial {m}: {ents[:, m].mean():.2f}" for m in marks)
        )
    if args.overhead_trials:
        print()
        n = args.overhead_trials
        print(f"sampler overhead per trial on SQLite (sampling + after_trial), {n}-trial study:")
        print("| sampler | first 100 trials (ms) | last 100 trials (ms) |")
        print("|---|---:|---:|")
        for name in ("ronas", "tpe"):
            ms = overhead(name, space, n)
            print(f"| {name} | {np.mean(ms[:100]):.2f} | {np.mean(ms[-100:]):.2f} |")


if __name__ == "__main__":
    main()
