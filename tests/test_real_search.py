"""Integration: a real search on Task901 (brain tissue) at 3 mm, two cases train, one validates."""

import numpy as np
import optuna
import torch

from ronas_optuna import NASObjective, RONASSampler, SearchSettings, SearchSpace, Supernet, derive_best
from ronas_optuna.data import MSDDataset, candidate_patch_sizes

from conftest import TASK901, needs_task901


@needs_task901
def test_task901_search_beats_an_untrained_network(tmp_path):
    ds = MSDDataset(TASK901, spacing=3.0, cache_dir=tmp_path / "cache")
    train, val = ["tissue_001", "tissue_002"], ["tissue_003"]
    patches = candidate_patch_sizes(ds.median_shape(train), depth=3, n=2, max_voxels=32**3)
    space = SearchSpace.default(depth=3, base_width=8, max_width=32, patch_sizes=patches)
    torch.manual_seed(0)
    settings = SearchSettings.from_options(steps_per_trial=10, lr=1e-2, warmup_steps=100, seed=0)
    objective = NASObjective.build(
        Supernet(space, 1, 3), ds, settings=settings, train_ids=train, val_ids=val, device="cpu"
    )
    untrained = objective.validate(space.sample(np.random.default_rng(0))).mean
    study = optuna.create_study(direction="maximize", sampler=RONASSampler(space, seed=0))
    study.optimize(objective, n_trials=5)
    model = derive_best(study, objective, top_k=2, overlap=0.25)
    print(
        f"Task901: untrained Dice {untrained:.3f}, best search Dice {study.best_value:.3f}, "
        f"final {model.metrics['val_dice']:.3f} {model.metrics['val_dice_per_class']}"
    )
    assert untrained < 0.4
    assert model.metrics["val_dice"] > 0.6
    assert min(model.metrics["val_dice_per_class"]) > 0.45
