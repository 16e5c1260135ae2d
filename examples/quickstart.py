"""Quickstart: RONASSampler in study.optimize on a small synthetic MSD dataset (CPU, ~1 minute).

python examples/quickstart.py
"""

import tempfile
from pathlib import Path

import optuna

from ronas_optuna import NASObjective, RONASSampler, SearchSettings, SearchSpace, Supernet, derive_best
from ronas_optuna.data import MSDDataset, candidate_patch_sizes, make_msd_dataset


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="ronas_quickstart_"))
    root = make_msd_dataset(work / "Task000_Synthetic", n_cases=5, shape=(48, 48, 32), n_classes=3, seed=0)
    ds = MSDDataset(root, spacing=1.5, cache_dir=work / "cache")
    train, val = ds.split(0.2, seed=0)
    space = SearchSpace.default(
        depth=3,
        base_width=8,
        max_width=32,
        patch_sizes=candidate_patch_sizes(ds.median_shape(train), depth=3, n=2),
    )
    print(space, "\n" + space.table())
    supernet = Supernet(space, ds.in_channels, ds.num_classes)
    settings = SearchSettings(steps_per_trial=20, lr=1e-2, warmup_steps=300)
    objective = NASObjective.build(
        supernet,
        ds,
        settings=settings,
        train_ids=train,
        val_ids=val,
        device="auto",
        checkpoint=work / "supernet.pt",
    )
    study = optuna.create_study(
        direction="maximize",
        storage=f"sqlite:///{work / 'nas.db'}",
        study_name="quickstart",
        sampler=RONASSampler(space, seed=0),
    )
    study.optimize(objective, n_trials=15)
    objective.save()
    print("best trial:", study.best_trial.number, study.best_value, study.best_trial.user_attrs["arch"])
    model = derive_best(study, objective, output=work / "model.pt")
    print(
        f"final network (shared weights, no retraining): {model.arch.code}, "
        f"validation Dice {model.metrics['val_dice']:.3f}; saved to {work / 'model.pt'}"
    )


if __name__ == "__main__":
    main()
