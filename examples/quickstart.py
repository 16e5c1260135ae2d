"""Quickstart: a whole search in a few lines on a small synthetic MSD dataset (CPU).

    python examples/quickstart.py              # 15 trials and the fine-tuning: 79 s on 2 busy CPU cores
    python examples/quickstart.py --trials 3   # a smoke run
    python examples/quickstart.py --out runs/  # its files in runs/ (default: a new temporary folder)

``create_search`` resolves the plan as ``ronas search`` does; ``optimize`` runs the trials and the
in-supernet fine-tuning; ``export`` derives the final network from the shared weights (no retraining).
"""

import argparse
import tempfile
from pathlib import Path

from ronas_optuna import SearchSettings, create_search
from ronas_optuna.data import make_msd_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=15)
    ap.add_argument("--out", type=Path, help="the dataset, study and model (default: a new temporary folder)")
    args = ap.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="ronas_quickstart_"))
    work.mkdir(parents=True, exist_ok=True)
    root = make_msd_dataset(work / "Task000_Synthetic", n_cases=5, shape=(40, 40, 32), n_classes=3, seed=0)
    settings = SearchSettings.from_options(
        spacing=2.0, depth=2, base_width=8, max_width=16, n_patch_sizes=2,
        steps_per_trial=10, lr=1e-2, warmup_steps=100, finetune_steps=50,
    )  # fmt: skip
    search = create_search(
        root, storage=f"sqlite:///{work / 'nas.db'}", study_name="quickstart", settings=settings
    )
    print(search.objective.supernet.space.table())
    search.optimize(n_trials=args.trials)
    best = search.study.best_trial
    print("best trial:", best.number, round(best.value, 4), best.user_attrs["arch"])
    model = search.export(work / "model.pt")
    search.close()  # the run folder's lock released, the SQLite file at rest
    print(
        f"final network (shared weights, no retraining): {model.arch.code}, "
        f"validation Dice {model.metrics['val_dice']:.3f}; saved to {work / 'model.pt'}"
    )


if __name__ == "__main__":
    main()
