import os

import numpy as np
import pytest
import torch

from ronas_optuna import CheckpointError, RONASNet, SearchSpace, Supernet


@pytest.fixture
def net(small_space):
    torch.manual_seed(0)
    return Supernet(small_space, 2, 3)


def test_derived_matches_supernet_path_for_random_architectures(net, small_space):
    rng = np.random.default_rng(0)
    net.eval()
    x = torch.randn(1, 2, 16, 16, 16)
    for _ in range(24):
        arch = small_space.sample(rng)
        d = net.derive(arch).eval()
        with torch.no_grad():
            assert torch.allclose(net(x, arch), d(x), atol=1e-5)
        assert sum(p.numel() for p in d.parameters()) == sum(p.numel() for p in net.path_parameters(arch))
        # standalone rebuild from config + state dict gives the same function
        rebuilt = RONASNet.from_config(d.config())
        rebuilt.load_state_dict(d.state_dict())
        with torch.no_grad():
            assert torch.allclose(rebuilt.eval()(x), d(x), atol=1e-6)


@pytest.mark.parametrize("shape", [(16, 16, 16), (32, 16, 8)])
def test_output_shapes_and_deep_supervision(net, small_space, shape):
    p = small_space.sample(np.random.default_rng(1)).to_params()
    p.update(down1="222", down2="221", down3="none")
    net.train()
    outs = net(torch.randn(2, 2, *shape), p)
    assert isinstance(outs, list) and len(outs) == 3
    assert outs[0].shape == (2, 3, *shape)
    assert outs[1].shape == (2, 3, shape[0] // 2, shape[1] // 2, shape[2] // 2)
    assert outs[2].shape == (2, 3, shape[0] // 4, shape[1] // 4, shape[2] // 2)
    net.eval()
    assert net(torch.randn(1, 2, *shape), p).shape == (1, 3, *shape)


def test_only_the_path_gets_gradients(net, small_space):
    arch = small_space.sample(np.random.default_rng(2))
    net.train()
    out = net(torch.randn(1, 2, 16, 16, 16), arch)
    sum(o.sum() for o in out).backward()
    on_path = {id(p) for p in net.path_parameters(arch)}
    for p in net.parameters():
        assert (p.grad is not None) == (id(p) in on_path)


def test_indivisible_input_is_a_clear_error(net, small_space):
    p = small_space.sample(np.random.default_rng(0)).to_params()
    p.update(down1="222", down2="222", down3="222")
    with pytest.raises(ValueError, match="not divisible by the architecture's total stride"):
        net(torch.randn(1, 2, 12, 16, 16), p)


def test_checkpoint_round_trip_and_mismatch(tmp_path, net, small_space):
    path = tmp_path / "sn.pt"
    net.save(path, extra={"step": 3})
    loaded = Supernet.load(path, expect=net)
    for (k, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert not hasattr(loaded, "checkpoint_extra")
    assert Supernet.load_checkpoint(path, expect=net).extra == {"step": 3}
    other = Supernet(SearchSpace.default(depth=2, base_width=4), 2, 3)
    with pytest.raises(CheckpointError, match="another search space"):
        Supernet.load(path, expect=other)


def test_corrupt_and_truncated_checkpoints(tmp_path, net):
    path = tmp_path / "sn.pt"
    net.save(path)
    data = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        Supernet.load(tmp_path / "trunc.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        Supernet.load(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no such"):
        Supernet.load(tmp_path / "missing.pt")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_failed_save_keeps_previous_checkpoint(tmp_path, net, monkeypatch):
    path = tmp_path / "sn.pt"
    net.save(path)
    before = path.read_bytes()
    with torch.no_grad():
        next(net.parameters()).add_(1.0)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        net.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["sn.pt"]  # no temp file left behind
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()  # not mkstemp's 0600
    monkeypatch.undo()
    Supernet.load(path)  # still loads


def test_checkpoint_loads_with_weights_only(tmp_path, net):
    path = tmp_path / "sn.pt"
    net.save(path)
    payload = torch.load(path, weights_only=True)
    assert payload["format"].startswith("ronas_optuna.supernet")
    assert payload["fingerprint"] == net.fingerprint()
    assert set(payload["state_dict"]) == set(net.state_dict())


@pytest.mark.parametrize("shape", [(2, 4, 10, 11, 7), (1, 3, 8, 8, 8), (1, 2, 5, 3, 4)])
@pytest.mark.parametrize("d", [2, 3])
def test_cpu_dilated_conv_equals_native(shape, d):
    from ronas_optuna.ops import dilated_conv_cpu

    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, generator=g)
    w = torch.randn(5, shape[1], 3, 3, 3, dtype=torch.float64, generator=g)
    ref = torch.nn.functional.conv3d(x, w, padding=d, dilation=d)
    assert torch.allclose(dilated_conv_cpu(x, w, d), ref, atol=1e-10)
