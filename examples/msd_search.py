"""Search a Medical Segmentation Decathlon task on one GPU, resumable, then export the final model.

    python examples/msd_search.py /data/Task04_Hippocampus --trials 300 --storage sqlite:///hippo.db

Re-running the same command continues the study: the supernet checkpoint and the controller's
learned policy are picked up where they stopped. The same as `ronas search` + `ronas export`.
"""

import argparse

import optuna

from ronas_optuna import SearchSettings, create_search


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--storage", default="sqlite:///ronas.db")
    ap.add_argument("--study", default="msd")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--memory-budget-gb", type=float, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    settings = SearchSettings(
        steps_per_trial=50, warmup_steps=1000, lr=1e-3, memory_budget_gb=args.memory_budget_gb
    )
    search = create_search(
        args.data, storage=args.storage, study_name=args.study, settings=settings, device=args.device
    )
    print(f"plan: {search.plan.path}")
    search.optimize(n_trials=args.trials)
    model = search.export(search.plan.model_path)
    print(
        f"final model {search.plan.model_path}: {model.arch.code}, "
        f"validation Dice {model.metrics['val_dice']:.4f}"
    )


if __name__ == "__main__":
    main()
