import numpy as np
import pytest
import torch

from ronas_optuna import Evaluator
from ronas_optuna.data import MSDDataset


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
