"""PathWork: a path's training and validation on the shared weights, on one process."""

import numpy as np
import pytest
import torch

from ronas_optuna import SearchSettings, SearchSpace, Supernet
from ronas_optuna.data import MSDDataset, make_msd_dataset
from ronas_optuna.evaluator import DiceResult, Evaluator
from ronas_optuna.pathwork import PathWork
from ronas_optuna.trainer import PathTrainer

SPACE = SearchSpace.default(depth=2, base_width=4, max_width=8)
PATCH = (16, 16, 8)


class _Recording(Evaluator):
    """An evaluator that records the overlap each evaluation asked for."""

    overlaps: list

    def evaluate(self, net, patch, *, cases=None, overlap=None, mirror=False) -> DiceResult:
        self.overlaps.append(overlap)
        return super().evaluate(net, patch, cases=cases, overlap=overlap, mirror=mirror)

    def evaluate_patches(self, net, patch, n, *, seed=0, cases=None, batch_size=2) -> DiceResult:
        self.overlaps.append(f"{n} patches, seed {seed}")
        return super().evaluate_patches(net, patch, n, seed=seed, cases=cases, batch_size=batch_size)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = make_msd_dataset(tmp_path_factory.mktemp("pw") / "Task001", n_cases=3, shape=(24, 24, 16), seed=0)
    ds = MSDDataset(root, spacing=2.0)
    return ds.load_all(ds.case_ids)


def _work(cases, **settings):
    torch.manual_seed(0)
    net = Supernet(SPACE, 1, 3)
    trainer = PathTrainer(net.parameters(), cases[:1], batch_size=1, lr=1e-2)
    evaluator = _Recording(cases[1:], 3)
    evaluator.overlaps = []
    s = SearchSettings.from_options(reward_cases=1, **settings)
    return PathWork(net, trainer, evaluator, settings=s, patch_size=PATCH), evaluator


def test_a_reward_is_scored_at_the_reward_overlap_and_all_cases_at_the_evaluators(cases):
    work, evaluator = _work(cases, reward_overlap=0.0)
    arch = SPACE.sample(np.random.default_rng(0))
    reward, full = work.validate(arch), work.validate(arch, all_cases=True)
    assert evaluator.overlaps == [0.0, None]
    assert len(reward.per_case) == 1 and len(full.per_case) == 2  # the first reward_cases, or all


def test_a_reward_on_fixed_patches_and_all_cases_on_whole_cases(cases):
    work, evaluator = _work(cases, reward_patches=3, seed=5)
    arch = SPACE.sample(np.random.default_rng(0))
    reward, full = work.validate(arch), work.validate(arch, all_cases=True)
    assert evaluator.overlaps == ["3 patches, seed 5", None]
    assert len(reward.per_case) == 1 and len(full.per_case) == 2
    assert work.validate(arch) == reward  # the same patches every time


def test_a_failed_trial_puts_its_path_back(cases):
    work, _ = _work(cases)
    arch = SPACE.sample(np.random.default_rng(1))
    before = [p.detach().clone() for p in work.supernet.path_parameters(arch)]
    snap = work.begin_trial(arch)
    work.train(arch, 2, start=0)
    assert any(not torch.equal(a, b) for a, b in zip(before, work.supernet.path_parameters(arch)))
    work.undo_trial(arch, snap, RuntimeError("out of memory"))
    assert all(torch.equal(a, b) for a, b in zip(before, work.supernet.path_parameters(arch)))
