"""Controller variants against TPE and GP on the synthetic landscape, paired over seeds (issue 15).

Each run (a sampler or a RONAS controller variant, over ``--seeds`` seeds, up to ``--trials``
trials) is the same as in ``sampler_landscape.py`` (same landscapes, same sampler seeds) and is kept
in ``--cache`` as the best-so-far true value per trial (``<name>.npy``, seeds x trials), so that
variants can be added one at a time. Printed per budget: each run's mean best-so-far, then every
RONAS variant minus TPE (and minus GP where GP ran that far, and minus the default controller where it
ran) with a 95% t-interval over seeds.

    python benchmarks/archive/controller_variants.py --variant default --variant risk_quantile=0.2 \\
        --variant replay_size=10,epochs=2 --gp-trials 100
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import torch

from ronas_optuna import SearchSpace
from ronas_optuna.bench import Landscape
from ronas_optuna.bench.stats import interval
from ronas_optuna.bench.variant import controller_variant
from ronas_optuna.controller import ControllerConfig
from ronas_optuna.registry import make_sampler

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore")


def parse_variant(text: str) -> ControllerConfig:
    try:
        return controller_variant(text)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def best_so_far(name: str, seeds: int, trials: int, cfg: ControllerConfig | None) -> np.ndarray:
    space = SearchSpace.default()
    out = []
    for seed in range(seeds):
        land = Landscape(space, seed=seed)
        study = optuna.create_study(
            direction="maximize", sampler=make_sampler(name, space, seed, controller_config=cfg)
        )
        study.optimize(land, n_trials=trials)
        out.append(np.maximum.accumulate([land.true_value(t.params) for t in study.trials]))
    return np.array(out)


def cached(cache: Path, label: str, seeds: int, trials: int, run: object) -> np.ndarray:
    path = cache / f"{label.replace('=', '-').replace(',', '_')}.npy"
    if path.exists():
        arr = np.load(path)
        if arr.shape[0] >= seeds and arr.shape[1] >= trials:
            return arr[:seeds, :trials]
    t0 = time.perf_counter()
    arr = run()  # type: ignore[operator]
    np.save(path, arr)
    print(f"  ran {label}: {seeds} seeds x {trials} trials in {time.perf_counter() - t0:.0f} s", flush=True)
    return arr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=[], help="'default' or field=value[,...]")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--budgets", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--gp-trials", type=int, default=100, help="GP is cubic in trials (0: no GP)")
    ap.add_argument("--cache", type=Path, default=Path("controller_variants_cache"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    a.cache.mkdir(parents=True, exist_ok=True)
    variants = a.variant or ["default"]
    runs = {
        "tpe": cached(a.cache, "tpe", a.seeds, a.trials, lambda: best_so_far("tpe", a.seeds, a.trials, None))
    }
    if a.gp_trials:
        runs["gp"] = cached(
            a.cache, "gp", a.seeds, a.gp_trials, lambda: best_so_far("gp", a.seeds, a.gp_trials, None)
        )
    for v in variants:
        cfg = parse_variant(v)
        runs[f"ronas {v}"] = cached(
            a.cache,
            f"ronas_{v}",
            a.seeds,
            a.trials,
            lambda cfg=cfg: best_so_far("ronas", a.seeds, a.trials, cfg),
        )
    print(f"\nbest-so-far true value, mean over {a.seeds} seeds")
    print("| run | " + " | ".join(f"{b} trials" for b in a.budgets) + " |")
    print("|---|" + "---:|" * len(a.budgets))
    for label, arr in runs.items():
        cells = [f"{arr[:, b - 1].mean():.4f}" if arr.shape[1] >= b else "–" for b in a.budgets]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\npaired difference (same seed), mean [95% CI]; 'better'/'worse' only where it excludes 0")
    print("| variant | vs | " + " | ".join(f"{b} trials" for b in a.budgets) + " |")
    print("|---|---|" + "---:|" * len(a.budgets))
    for v in variants:
        mine = runs[f"ronas {v}"]
        for other in ("tpe", "gp", "ronas default"):
            if other not in runs or other == f"ronas {v}":
                continue
            cells = []
            for b in a.budgets:
                if runs[other].shape[1] < b:
                    cells.append("–")
                    continue
                iv = interval(list(mine[:, b - 1] - runs[other][:, b - 1]))
                tag = ("better" if iv.mean > 0 else "worse") if iv.n > 1 and iv.excludes_zero() else "level"
                cells.append(f"{iv} {tag}")
            print(f"| {v} | {other} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
