"""RONASSampler from OptunaHub on a small architecture-like search: six categorical decisions.

python example.py
"""

from __future__ import annotations

import types

import optuna
import optunahub


OPS = ["none", "skip_connect", "conv_1x1", "conv_3x3", "avg_pool_3x3"]
#: A fixed score per (edge, operation): the best cell takes conv_3x3 on every edge.
SCORE = {"none": 0.0, "skip_connect": 0.4, "conv_1x1": 0.6, "conv_3x3": 1.0, "avg_pool_3x3": 0.3}


def objective(trial: optuna.Trial) -> float:
    return sum(SCORE[trial.suggest_categorical(f"edge{i}", OPS)] for i in range(6))


def main(module: types.ModuleType | None = None, n_trials: int = 100) -> optuna.Study:
    module = module or optunahub.load_module(package="samplers/ronas")
    study = optuna.create_study(direction="maximize", sampler=module.RONASSampler(seed=0))
    study.optimize(objective, n_trials=n_trials)
    print(f"best value {study.best_value:.2f} of 6.00 with {study.best_params}")
    return study


if __name__ == "__main__":
    main()
