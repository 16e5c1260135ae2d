"""Search a Medical Segmentation Decathlon task on one GPU, resumable, then export the final model.

    python examples/msd_search.py /data/Task04_Hippocampus --trials 300 --storage sqlite:///hippo.db

Re-running the same command continues the study: the supernet checkpoint and the controller's
learned policy are picked up where they stopped. The same as `ronas search` + `ronas export`.
`--quick` tries it end to end in about a minute on a CPU (a small space, a few steps): a check of
the set-up, not a search.
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
    ap.add_argument("--quick", action="store_true", help="a small space and a few steps (a check)")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    settings = SearchSettings.from_options(
        steps_per_trial=50, warmup_steps=1000, lr=1e-3, memory_budget_gb=args.memory_budget_gb
    )
    if args.quick:
        settings = SearchSettings.from_options(
            depth=2, base_width=4, max_width=8, n_patch_sizes=1, max_patch_voxels=16**3,
            steps_per_trial=2, warmup_steps=0, finetune_steps=2, batch_size=1,
            memory_budget_gb=args.memory_budget_gb,
        )  # fmt: skip
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
