import numpy as np
import pytest
import torch

from ronas_optuna.data import MSDDataset
from ronas_optuna.data.msd import PreprocessedCase
from ronas_optuna.evaluator import Evaluator, patch_centres


@pytest.fixture(scope="module")
def cases(synthetic_root, tmp_path_factory):
    ds = MSDDataset(synthetic_root, spacing=2.0, cache_dir=tmp_path_factory.mktemp("cache"))
    return ds.load_all(ds.case_ids[:2])


def test_a_network_that_predicts_the_labels_scores_one(cases):
    ev = Evaluator(cases, 3)

    def perfect_for(case):
        onehot = torch.nn.functional.one_hot(torch.as_tensor(case.label).long(), 3).movedim(-1, 0).float()
        return lambda x: 20 * onehot[None].expand(x.shape[0], -1, -1, -1, -1)

    for c in cases:  # a window as large as the volume: the logits are the one-hot labels
        res = ev.evaluate(perfect_for(c), c.label.shape, cases=[c])
        assert res.mean == pytest.approx(1.0) and res.per_class == [1.0, 1.0]


def test_result_shapes_and_a_constant_network(cases):
    ev = Evaluator(cases, 3, overlap=0.5)
    background = lambda x: torch.stack([x[:, 0] * 0 + 1, x[:, 0] * 0, x[:, 0] * 0], 1)
    res = ev.evaluate(background, (16, 16, 8))
    assert len(res.per_case) == 2 and all(len(r) == 2 for r in res.per_case)
    assert res.mean == pytest.approx(np.mean(res.per_case))
    assert res.per_class == pytest.approx(np.mean(res.per_case, axis=0).tolist())
    for c, per_class in zip(cases, res.per_case):  # nothing predicted: 0 where a class exists
        present = [(c.label == k).any() for k in (1, 2)]
        assert per_class == [0.0 if p else 1.0 for p in present]
    assert ev.case_ids == [c.case_id for c in cases]


def test_predict_puts_a_module_in_eval_mode(cases):
    ev = Evaluator(cases, 3)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 1), torch.nn.Dropout(0.5)).train()
    pred = ev.predict(net, cases[0], (16, 16, 8))
    assert not net.training and pred.shape == cases[0].label.shape
    assert np.array_equal(pred, ev.predict(net, cases[0], (16, 16, 8)))  # deterministic


def test_patch_centres_are_fixed_in_bounds_and_take_each_foreground_class_in_turn(cases):
    for c in cases:
        centres = patch_centres(c, 6, seed=3)
        assert centres.shape == (6, 3) and np.array_equal(centres, patch_centres(c, 6, seed=3))
        assert not np.array_equal(centres, patch_centres(c, 6, seed=4))
        assert ((centres >= 0) & (centres < np.array(c.label.shape))).all()
        classes = [k for k in (1, 2) if (c.label == k).any()]
        assert [int(c.label[tuple(x)]) for x in centres[::2]] == [classes[i % len(classes)] for i in range(3)]
    empty = PreprocessedCase("empty", np.zeros((1, 4, 4, 4), np.float32), np.zeros((4, 4, 4), np.uint8), {})
    assert patch_centres(empty, 3).shape == (3, 3)  # no foreground: anywhere


@pytest.mark.parametrize("patch", [(8, 8, 8), (16, 8, 4), (40, 40, 40)])
def test_patch_dice_pools_a_cases_patches(patch):
    label = np.zeros((12, 12, 12), np.uint8)
    label[2:6, 2:6, 2:6] = 1  # 64 voxels of class 1, no class 2
    case = PreprocessedCase("c", np.zeros((1, 12, 12, 12), np.float32), label, {})
    ev = Evaluator([case], 3)

    def class_one_everywhere(x):
        return torch.stack([x[:, 0] * 0, x[:, 0] * 0 + 1, x[:, 0] * 0], 1)

    res = ev.evaluate_patches(class_one_everywhere, patch, 4, seed=0)
    pooled = pred = tp = 0  # by hand: every voxel of every patch predicted 1
    from ronas_optuna.data.patches import extract_patch

    for centre in patch_centres(case, 4, seed=0):
        _, lab = extract_patch(case.image, case.label, centre, patch)
        pooled, pred, tp = pooled + int((lab == 1).sum()), pred + lab.size, tp + int((lab == 1).sum())
    assert res.per_case == [[pytest.approx(2 * tp / (pooled + pred)), 1.0]]  # class 2: absent from both
    perfect = lambda x: torch.nn.functional.one_hot((x[:, 0] > 0.5).long(), 3).movedim(-1, 1).float()
    onehot = PreprocessedCase("c", (label[None] == 1).astype(np.float32), label, {})
    assert Evaluator([onehot], 3).evaluate_patches(perfect, patch, 4).mean == pytest.approx(1.0)
