"""bench.handmade: nnU-Net's strides and reference trainings on a budget clock."""

import numpy as np
import pytest
import torch

from ronas_optuna.bench.handmade import nnunet_strides


@pytest.mark.parametrize(
    "patch,expected",
    [
        ((32, 32, 32), [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]),
        ((32, 32, 8), [[1, 1, 1], [2, 2, 2], [2, 2, 1], [2, 2, 1]]),
    ],
)
def test_nnunet_strides_pool_while_the_map_stays_at_least_4(patch, expected):
    assert nnunet_strides(patch) == expected


def test_a_reference_learning_curve_is_scored_outside_its_budget(synthetic_root, tmp_path):
    from ronas_optuna.bench.handmade import RECIPES, train_for_seconds
    from ronas_optuna.data import MSDDataset
    from ronas_optuna.network import RONASNet
    from ronas_optuna.space import SearchSpace

    cases = MSDDataset(synthetic_root, spacing=2.0, cache_dir=tmp_path / "c").load_all()
    space = SearchSpace.default(depth=2, base_width=4, max_width=8)
    net = RONASNet(space, space.sample(np.random.default_rng(0)), 1, 3)
    ticks = iter(range(10_000))  # a clock of one second per reading: steps are counted, not timed
    seen = []

    def monitor(n):
        seen.append(n.training)
        for _ in range(50):  # a slow monitor: 50 clock readings, none of them charged to the budget
            next(ticks)
        return 0.5

    _, steps, curve = train_for_seconds(
        net,
        cases,
        (8, 8, 8),
        16,
        batch_size=1,
        recipe=RECIPES["adam"],
        chunk=1,
        clock=lambda: float(next(ticks)),
        monitor=monitor,
        points=4,
    )
    assert len(curve) == 4 and [v for _, v in curve] == [0.5] * 4  # each quarter, the last at the end
    assert [s for s, _ in curve] == sorted(s for s, _ in curve) and curve[-1][0] == steps
    assert not any(seen) and steps >= 10  # scored in eval mode; the monitor took no training time


def test_a_reference_training_stopped_midway_goes_on_from_its_checkpoint(
    synthetic_root, tmp_path, monkeypatch
):
    from ronas_optuna.bench.handmade import RECIPES, train_for_seconds, training_progress
    from ronas_optuna.data import MSDDataset
    from ronas_optuna.network import RONASNet
    from ronas_optuna.space import SearchSpace
    from ronas_optuna.trainer import PathTrainer

    assert training_progress(tmp_path / "ref.pt") is None
    cases = MSDDataset(synthetic_root, spacing=2.0, cache_dir=tmp_path / "c").load_all()
    space = SearchSpace.default(depth=2, base_width=4, max_width=8)
    arch = space.sample(np.random.default_rng(0))
    real = PathTrainer.train
    clock = {"s": 0.0, "stop_at": None, "calls": 0}  # one second per step: runs are comparable

    def train(self, net, params, patch, steps, **kw):
        if clock["stop_at"] is not None and clock["calls"] == clock["stop_at"]:
            raise KeyboardInterrupt
        clock["s"] += steps
        clock["calls"] += 1
        return real(self, net, params, patch, steps, **kw)

    monkeypatch.setattr(PathTrainer, "train", train)

    def run(tag="t", stop_at=None):
        clock.update(calls=0, stop_at=stop_at)
        torch.manual_seed(0)
        net = RONASNet(space, arch, 1, 3)
        kw = dict(batch_size=1, recipe=RECIPES["nnunet-sgd"], chunk=2, clock=lambda: clock["s"])
        out = train_for_seconds(
            net, cases, (8, 8, 8), 20, checkpoint=tmp_path / "ref.pt", tag=tag, save_every=6, **kw
        )
        return out, clock["calls"]

    (whole, steps, _), calls = run()
    assert calls == 10 and steps == 20 and not (tmp_path / "ref.pt").exists()  # removed when done
    with pytest.raises(KeyboardInterrupt):
        run(stop_at=5)  # killed after 10 s: checkpoints at 6 s (and none since)
    assert training_progress(tmp_path / "ref.pt") == (6.0, 20.0)  # what --status shows: 6 of 20 s
    (resumed, steps, _), calls = run()
    assert steps == 20 and calls == 7  # steps 6 to 20
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    with pytest.raises(KeyboardInterrupt):
        run(stop_at=5)
    (_, steps, _), calls = run(tag="another")  # another training's checkpoint is not resumed
    assert steps == 20 and calls == 10
