"""Baseline comparison on the same shared-supernet objective: RONAS vs TPE, Random, GP.

    python examples/compare_samplers.py ../shared/data/Task901_BrainTissueTemplates

Writes a Markdown/CSV/JSON table and a PNG plot beside the storage (same as `ronas benchmark`).
`--quick` runs it end to end in about a minute on a CPU (a small space, a few steps, RONAS and
Random, one seed): a check of the set-up, not a comparison.
"""

import argparse

import optuna

from ronas_optuna import SearchSettings
from ronas_optuna.bench import BenchmarkConfig, run_benchmark


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--storage", default="sqlite:///compare.db")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="a small space and a few steps (a check)")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = SearchSettings.from_options(
        spacing=3.0,
        depth=3,
        base_width=8,
        max_width=32,
        steps_per_trial=10,
        warmup_steps=100,
        lr=1e-2,
        n_patch_sizes=2,
        max_patch_voxels=40**3,
    )
    cfg = BenchmarkConfig(
        data=args.data, storage=args.storage, seeds=args.seeds, trials=args.trials, settings=settings
    )
    if args.quick:
        settings = SearchSettings.from_options(
            spacing=2.0, depth=2, base_width=4, max_width=8, n_patch_sizes=1, steps_per_trial=2,
            warmup_steps=0, finetune_steps=2, batch_size=1,
        )  # fmt: skip
        cfg = BenchmarkConfig(
            data=args.data, storage=args.storage, seeds=1, trials=min(args.trials, 4), settings=settings,
            samplers=["ronas", "random"], scratch_steps=0, hpo_trials=0, device="cpu",
        )  # fmt: skip
    result = run_benchmark(cfg)
    print(result.markdown)
    print("plot:", result.plot_path)


if __name__ == "__main__":
    main()
