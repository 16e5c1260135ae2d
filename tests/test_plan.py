import json

import optuna
import pytest

from ronas_optuna import SearchSettings
from ronas_optuna.plan import PLAN_ATTR, SearchPlan
from ronas_optuna.space import parse_patch

SETTINGS = SearchSettings.from_options(
    spacing=2.0, depth=2, base_width=4, max_width=8, n_patch_sizes=2, steps_per_trial=3, lr=0.02, seed=1
)


@pytest.fixture
def plan(synthetic_root, tmp_path):
    return SearchPlan.resolve(synthetic_root, tmp_path / "run", SETTINGS)


def test_resolve_fills_in_what_the_dataset_decides(plan, synthetic_root):
    assert plan.spacing == [2.0, 2.0, 2.0] and plan.settings == SETTINGS
    assert plan.in_channels == 1 and plan.num_classes == 3
    assert set(plan.train_ids).isdisjoint(plan.val_ids) and len(plan.train_ids) + len(plan.val_ids) == 4
    space = plan.search_space()
    assert space.depth == 2 and len(space["patch"].choices) == len(plan.patch_sizes) <= 2
    assert plan.data == str(synthetic_root.resolve())


def test_save_and_load_from_file_and_study(plan):
    study = optuna.create_study()
    plan.save(study)
    assert SearchPlan.from_dict(json.loads(plan.path.read_text())) == plan
    assert SearchPlan.from_study(study) == plan
    assert study.user_attrs[PLAN_ATTR]["settings"]["lr"] == 0.02
    assert not list(plan.path.parent.glob("*.tmp"))
    assert SearchPlan.from_study(optuna.create_study()) is None


def test_a_version_0_1_flat_plan_still_loads(plan):
    flat = {k: v for k, v in plan.to_dict().items() if k != "settings"}
    flat.update(depth=2, base_width=4, max_width=8, steps_per_trial=3, lr=0.02, seed=1, checkpoint_every=5)
    old = SearchPlan.from_dict(flat)
    assert (
        old.spacing == plan.spacing
        and old.settings.training.lr == 0.02
        and old.settings.training.steps_per_trial == 3
    )
    assert old.settings.data.spacing is None  # the flat plan's spacing was the resolved list


def test_space_for_fits_the_patches_to_the_training_cases_and_keeps_the_settings_space(
    synthetic_root, tmp_path
):
    from ronas_optuna.data.msd import MSDDataset
    from ronas_optuna.data.patches import candidate_patch_sizes
    from ronas_optuna.plan import space_for

    ds = MSDDataset(synthetic_root, spacing=2.0, cache_dir=tmp_path / "c")
    train = ds.case_ids[:2]
    space = space_for(ds, train, SETTINGS)
    expected = candidate_patch_sizes(
        ds.median_shape(train), depth=2, n=2, max_voxels=SETTINGS.space.max_patch_voxels
    )
    assert space["patch"].choices == space_for(ds, train, SETTINGS)["patch"].choices
    assert [list(parse_patch(str(c))) for c in space["patch"].choices] == [list(p) for p in expected]
    assert space.depth == 2 and max(space.widths) <= 8
