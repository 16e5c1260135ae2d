"""Measured costs against a network whose numbers are computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ronas_optuna.losses import deep_supervision_loss
from ronas_optuna.measure import (
    CostCache,
    cpu_training_memory,
    forward_flops,
    inference_latency_ms,
    measure,
    saved_tensor_bytes,
)
from ronas_optuna.network import RONASNet
from ronas_optuna.space import SearchSpace


class TwoConvs(nn.Module):
    """conv(1->4, k3, no bias) -> ReLU -> conv(4->2, k1, no bias): every saved tensor is known."""

    in_channels = 1

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv3d(1, 4, 3, padding=1, bias=False)
        self.b = nn.Conv3d(4, 2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize("n, side", [(1, 4), (2, 6)])
def test_saved_bytes_of_a_small_network_by_hand(n, side):
    net, v = TwoConvs(), side**3
    x = torch.randn(n, 1, side, side, side)
    saved, out = saved_tensor_bytes(lambda: net(x))
    # conv a saves its input (n*1*v) and weight (4*27); ReLU saves its output (n*4*v), which conv b
    # saves again as its input (the same storage, counted once), with its weight (2*4)
    assert saved == 4 * (n * v + 4 * 27 + n * 4 * v + 2 * 4)
    assert out.shape == (n, 2, side, side, side)


def test_excluded_weights_are_left_out_of_the_saved_bytes():
    net, v = TwoConvs(), 4**3
    saved, _ = saved_tensor_bytes(lambda: net(torch.randn(1, 1, 4, 4, 4)), exclude=list(net.parameters()))
    assert saved == 4 * (v + 4 * v)  # conv a's input and the ReLU's output, no weight


def test_a_view_saved_twice_is_one_storage():
    w = torch.randn(8, requires_grad=True)

    def forward():
        y = w * 2
        return (y[:4] * y[4:]).sum() + (y.view(2, 4) ** 2).sum()

    saved, _ = saved_tensor_bytes(forward)
    assert saved == 8 * 4  # y (32 bytes) under three views; the constant 2 is not a tensor


def test_cpu_training_memory_adds_weights_gradients_and_optimizer_state():
    net = TwoConvs()
    weights = (4 * 27 + 2 * 4) * 4
    adam = cpu_training_memory(net, (1, 1, 4, 4, 4), 2, optimizer="adam")
    sgd = cpu_training_memory(net, (1, 1, 4, 4, 4), 2, optimizer="sgd")
    assert adam - sgd == weights  # Adam keeps two moments, SGD one momentum buffer
    # the activations once (the loss's included) and each weight once, not again where a layer saves it
    x, y = torch.randn(1, 1, 4, 4, 4), torch.zeros(1, 4, 4, 4, dtype=torch.long)
    activations, _ = saved_tensor_bytes(
        lambda: deep_supervision_loss(net(x), y), exclude=list(net.parameters())
    )
    assert sgd == activations + 3 * weights
    assert activations > 4 * (4**3 + 4 * 4**3)  # the loss keeps tensors of its own


def test_forward_flops_of_a_small_network_by_hand():
    v = 4**3
    assert forward_flops(TwoConvs(), (1, 1, 4, 4, 4)) == 2 * v * (4 * 27 + 2 * 4)
    assert forward_flops(TwoConvs(), (3, 1, 4, 4, 4)) == 3 * 2 * v * (4 * 27 + 2 * 4)


def test_forward_flops_counts_a_module_reached_twice_once_per_call():
    """MONAI's DynUNet holds its skip path under two names; the count runs it as the network does."""

    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = TwoConvs()
            self.again = self.first  # the same module under a second name

        def forward(self, x):
            return self.again(self.first(x)[:, :1])

    one = forward_flops(TwoConvs(), (1, 1, 4, 4, 4))
    assert forward_flops(Shared(), (1, 1, 4, 4, 4)) == 2 * one


@pytest.fixture
def space():
    return SearchSpace.default(depth=2, base_width=4, max_width=8, patch_sizes=[(16, 16, 16)])


def test_forward_flops_counts_evaluation_mode_and_leaves_the_network_as_it_was(space):
    net = RONASNet(space, space.sample(np.random.default_rng(1)), 1, 3).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    in_training = forward_flops(net, (1, 1, 16, 16, 16))
    assert net.training  # its mode back
    after = net.state_dict()
    assert all(v.device.type == "cpu" and torch.equal(before[k], v) for k, v in after.items())
    # evaluation mode whatever the network's: the deep-supervision heads of training are not counted
    assert in_training == forward_flops(net.eval(), (1, 1, 16, 16, 16))
    assert in_training < forward_flops(_counted_in_training(net), (1, 1, 16, 16, 16))


def _counted_in_training(net):
    """``net`` whose forward runs as in training (with its deep-supervision heads) in any mode."""

    class Training(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            self.net.train()
            return self.net(x)

    return Training()


def test_flops_scale_with_the_patch_and_a_3x3x3_conv_costs_27_1x1x1(space):
    p = space.sample(np.random.default_rng(0)).to_params()
    small = forward_flops(RONASNet(space, p, 1, 3), (1, 1, 16, 16, 16))
    big = forward_flops(RONASNet(space, p, 1, 3), (1, 1, 32, 32, 32))
    assert big == 8 * small
    w = space.widths[0]
    p1, p3 = dict(p, dec0_conv="conv1"), dict(p, dec0_conv="conv3_d1")
    f1 = forward_flops(RONASNet(space, p1, 1, 3), (1, 1, 16, 16, 16))
    f3 = forward_flops(RONASNet(space, p3, 1, 3), (1, 1, 16, 16, 16))
    assert f3 - f1 == 2 * 26 * 16**3 * w * w


def test_measure_on_the_cpu_and_its_cache(space):
    arch = space.sample(np.random.default_rng(1))
    calls = []

    def make():
        calls.append(1)
        return RONASNet(space, arch, 1, 3)

    cache = CostCache()
    state = torch.random.get_rng_state()
    one = cache.get(("a", 2), lambda: measure(make, (2, 1, 16, 16, 16), 3, latency=True))
    again = cache.get(("a", 2), lambda: measure(make, (2, 1, 16, 16, 16), 3, latency=True))
    assert one is again and len(calls) == 1 and len(cache) == 1
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's stream is untouched
    net = RONASNet(space, arch, 1, 3)
    assert one.params == sum(p.numel() for p in net.parameters())
    assert one.memory_method == "saved-tensors" and one.memory_gb == one.memory_bytes / 1e9
    assert one.memory_bytes == cpu_training_memory(net, (2, 1, 16, 16, 16), 3)
    assert one.flops == forward_flops(net, (1, 1, 16, 16, 16))
    assert one.latency_ms is not None and one.latency_ms > 0
    batch4 = measure(make, (4, 1, 16, 16, 16), 3)
    assert batch4.memory_bytes > one.memory_bytes and batch4.flops == one.flops and batch4.latency_ms is None


def test_latency_is_a_positive_median():
    assert inference_latency_ms(TwoConvs(), (4, 4, 4), torch.device("cpu"), repeats=3) > 0


@pytest.mark.parametrize("shape", [(1, 16, 16, 16), (0, 1, 4, 4, 4)])
def test_a_bad_shape_is_refused(shape):
    with pytest.raises(ValueError, match="input_shape"):
        measure(TwoConvs, shape, 2)


def test_an_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="optimizer"):
        measure(TwoConvs, (1, 1, 4, 4, 4), 2, optimizer="lamb")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_is_at_least_weights_and_the_saved_tensors():
    net = TwoConvs()
    c = measure(TwoConvs, (2, 1, 8, 8, 8), 2, device="cuda", amp=False)
    assert c.memory_method == "cuda-peak"
    assert c.memory_bytes >= sum(p.numel() * 4 for p in net.parameters()) * 4


def test_the_counted_graph_is_freed_with_its_result():
    """A tensor saved by its own grad_fn (ReLU keeps its output) must not be kept alive by the
    count: a cycle through the hook once leaked every measured graph (22 GB over a benchmark)."""
    import gc

    storages = []

    class Keeps(TwoConvs):
        def forward(self, x):
            h = torch.relu(self.a(x))
            storages.append(h.untyped_storage())  # this test's own reference to the ReLU output
            return self.b(h)

    use_count = torch._C._storage_Use_Count
    saved, out = saved_tensor_bytes(lambda: Keeps()(torch.randn(1, 1, 8, 8, 8)).sum())
    assert saved > 0 and use_count(storages[0]._cdata) > 1  # the graph holds it while it lives
    del out
    gc.collect()
    assert use_count(storages[0]._cdata) == 1  # only this test's reference is left


def test_a_trials_cost_and_its_memory_budget_are_recorded_as_attrs():
    import optuna

    from ronas_optuna.measure import Cost, record_budget, record_cost

    study = optuna.create_study()
    trial = study.ask()
    record_cost(trial, Cost(10, 2000, 1_500_000_000, "saved-tensors", None), (32, 16, 8))
    assert not record_budget(trial, 1.5, 2.0)
    attrs = study.trials[0].user_attrs
    assert attrs["params"] == 10 and attrs["flops"] == 2000 and attrs["patch"] == "32x16x8"
    assert attrs["memory_gb"] == 1.5 and attrs["memory_method"] == "saved-tensors"
    assert "latency_ms" not in attrs
    assert attrs["constraints"] == [-0.5] and "over_budget" not in attrs
    over = study.ask()
    assert record_budget(over, 2.5, 2.0)
    assert study.trials[1].user_attrs["over_budget"] is True
    assert study.trials[1].user_attrs["constraints"] == [0.5]


@pytest.mark.parametrize(
    "depth, widths, in_channels, patch",
    [(2, (4, 8), 1, None), (3, (8, 32), 2, None), (4, (16, 320), 1, (64, 48, 32))],
)
def test_the_flops_counted_from_the_architecture_equal_the_counters(depth, widths, in_channels, patch):
    from ronas_optuna.network import architecture_flops

    space = SearchSpace.default(depth=depth, base_width=widths[0], max_width=widths[1])
    rng = np.random.default_rng(depth)
    for _ in range(8):
        arch = space.sample(rng)
        p = patch or arch.patch_size or (32, 32, 32)
        net = RONASNet(space, arch, in_channels, 3)
        assert architecture_flops(arch, p, in_channels, 3) == forward_flops(net, (1, in_channels, *p))


def test_a_trials_cost_takes_the_architectures_flop_count(monkeypatch, tmp_path, synthetic_root):
    from ronas_optuna import measure as measure_module

    from conftest import build_objective

    objective = build_objective(synthetic_root, tmp_path)
    counted = []
    monkeypatch.setattr(measure_module, "forward_flops", lambda *a: counted.append(a) or 0)
    arch = objective.supernet.space.sample(np.random.default_rng(0))
    cost = objective.cost_of(arch)
    assert not counted  # no FlopCounterMode pass
    net = objective.supernet.derive(arch)
    patch = objective.patch_for(arch)
    monkeypatch.undo()
    assert cost.flops == forward_flops(net, (1, objective.supernet.in_channels, *patch)) > 0
