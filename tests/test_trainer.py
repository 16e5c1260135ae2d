import math

import numpy as np
import pytest
import torch

from ronas_optuna import RONASNet, SearchSpace, Supernet
from ronas_optuna.data import MSDDataset
from ronas_optuna.device import resolve_device
from ronas_optuna.trainer import PathTrainer, TrialFailure, WeightAverage, train_network, train_network_for

PATCH = (16, 16, 8)


@pytest.fixture(scope="module")
def cases(synthetic_root, tmp_path_factory):
    ds = MSDDataset(synthetic_root, spacing=2.0, cache_dir=tmp_path_factory.mktemp("cache"))
    return ds.load_all(ds.case_ids[:2])


@pytest.fixture
def supernet():
    torch.manual_seed(0)
    return Supernet(SearchSpace.default(depth=2, base_width=4, max_width=8), 1, 3)


def _trainer(sn, cases, **kw):
    opts = dict(batch_size=2, lr=1e-2, device="cpu", seed=0)
    opts.update(kw)
    return PathTrainer(sn.parameters(), cases, **opts)


def _arch(sn, seed=0):
    import numpy as np

    return sn.space.sample(np.random.default_rng(seed))


def test_training_a_path_moves_only_its_parameters(supernet, cases):
    t = _trainer(supernet, cases)
    arch = _arch(supernet)
    before = {n: p.detach().clone() for n, p in supernet.named_parameters()}
    path = supernet.path(arch).train()
    loss = t.train(path, path.parameters_on_path(), PATCH, 2)
    assert math.isfinite(loss) and loss > 0
    on_path = {id(p) for p in supernet.path_parameters(arch)}
    changed = {id(p) for n, p in supernet.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= on_path


@pytest.mark.parametrize("clip_norm", [None, 12.0, 1e-3])
def test_same_seed_and_start_give_the_same_weights(cases, clip_norm):
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        sn = Supernet(SearchSpace.default(depth=2, base_width=4, max_width=8), 1, 3)
        t = _trainer(sn, cases, clip_norm=clip_norm)
        path = sn.path(_arch(sn)).train()
        t.train(path, path.parameters_on_path(), PATCH, 2, start=10)
        results.append([p.detach().clone() for p in sn.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_clipping_bounds_the_update(cases):
    moved = {}
    for clip in (None, 1e-6):
        torch.manual_seed(0)
        sn = Supernet(SearchSpace.default(depth=2, base_width=4, max_width=8), 1, 3)
        before = [p.detach().clone() for p in sn.parameters()]
        t = PathTrainer(sn.parameters(), cases, batch_size=2, lr=1e-2, device="cpu", clip_norm=clip)
        t.optimizer = torch.optim.SGD(sn.parameters(), lr=1.0)  # plain SGD: step size = gradient
        path = sn.path(_arch(sn)).train()
        t.train(path, path.parameters_on_path(), PATCH, 1)
        moved[clip] = sum(float((p.detach() - b).norm() ** 2) for p, b in zip(sn.parameters(), before)) ** 0.5
    assert moved[1e-6] <= 1e-6 * 1.01 < moved[None]


def test_snapshot_restore_undoes_training(supernet, cases):
    t = _trainer(supernet, cases)
    arch = _arch(supernet)
    path = supernet.path(arch).train()
    t.train(path, path.parameters_on_path(), PATCH, 1)
    snap = t.snapshot(supernet.path_parameters(arch))
    values = {n: p.detach().clone() for n, p in supernet.named_parameters()}
    adam = {id(p): {k: v.clone() for k, v in s.items()} for p, s in t.optimizer.state.items()}
    t.train(path, path.parameters_on_path(), PATCH, 2, start=100)
    t.restore(snap)
    for n, p in supernet.named_parameters():
        assert torch.equal(p, values[n]), n
    for p, s in t.optimizer.state.items():
        assert all(torch.equal(v, adam[id(p)][k]) for k, v in s.items())


def test_non_finite_loss_is_a_trial_failure(supernet, cases):
    t = _trainer(supernet, cases)

    def broken(x):
        out = supernet(x, _arch(supernet))
        return [o * float("nan") for o in out]

    with pytest.raises(TrialFailure, match="non-finite"):
        t.train(broken, supernet.path_parameters(_arch(supernet)), PATCH, 1)


def test_state_dict_round_trip(supernet, cases):
    t = _trainer(supernet, cases)
    path = supernet.path(_arch(supernet)).train()
    t.train(path, path.parameters_on_path(), PATCH, 1)
    other = _trainer(supernet, cases)
    other.load_state_dict(t.state_dict())
    assert len(other.optimizer.state) == len(t.optimizer.state) > 0
    assert other.lr == t.lr == 1e-2 and other.weight_decay == t.weight_decay


def test_train_network_trains_a_standalone_net(cases):
    space = SearchSpace.default(depth=2, base_width=4, max_width=8)
    torch.manual_seed(0)
    net = RONASNet(space, _arch(Supernet(space, 1, 3)), 1, 3)
    before = [p.detach().clone() for p in net.parameters()]
    out = train_network(net, cases, PATCH, 2, batch_size=2, lr=1e-2, device="cpu")
    assert out is net and not net.training
    assert any(not torch.equal(p, b) for p, b in zip(net.parameters(), before))


def test_train_alone_is_train_network_with_the_trainer_s_settings(supernet, cases):
    space = SearchSpace.default(depth=2, base_width=4, max_width=8)
    nets = []
    for _ in range(2):
        torch.manual_seed(0)
        nets.append(RONASNet(space, _arch(Supernet(space, 1, 3)), 1, 3))
    t = _trainer(supernet, cases, lr=1e-2)
    out = t.train_alone(nets[0], PATCH, 2, seed=3, cases=cases[:1])
    train_network(
        nets[1], cases[:1], PATCH, 2, batch_size=t.batch_size, lr=1e-2, device="cpu", amp=t.amp, seed=3
    )
    assert out is nets[0] and not out.training
    assert all(torch.equal(a, b) for a, b in zip(nets[0].parameters(), nets[1].parameters()))
    assert len(t.optimizer.state) == 0  # the trainer's own optimizer is not touched


@pytest.mark.parametrize(("seconds", "steps"), [(0.0, 2), (2.5, 6), (3.0, 6)])
def test_train_network_for_seconds_is_train_network_for_the_steps_that_fit(cases, seconds, steps):
    space = SearchSpace.default(depth=2, base_width=4, max_width=8)
    nets = []
    for _ in range(2):
        torch.manual_seed(0)
        nets.append(RONASNet(space, _arch(Supernet(space, 1, 3)), 1, 3))
    ticks = iter(range(100))  # one second per look at the clock: after 0, 1, 2, ... seconds
    opts = dict(batch_size=2, lr=1e-2, device="cpu", seed=3)
    took = train_network_for(nets[0], cases, PATCH, seconds, chunk=2, clock=lambda: next(ticks), **opts)
    assert took == steps and not nets[0].training  # at least one chunk; then until the clock is past
    train_network(nets[1], cases, PATCH, steps, **opts)  # the same patches and Adam steps, in one call
    assert all(torch.allclose(a, b) for a, b in zip(nets[0].parameters(), nets[1].parameters()))


def test_resolve_device_and_bad_batch(supernet, cases):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="batch_size"):
        _trainer(supernet, cases, batch_size=0)


def test_lr_factor_scales_each_step_and_keeps_the_base_rate(supernet, cases):
    t = _trainer(supernet, cases, lr=1e-2)
    net = supernet.path(supernet.space.sample(np.random.default_rng(0))).train()
    params = net.parameters_on_path()
    before = [p.detach().clone() for p in params]
    seen = []
    t.train(net, params, PATCH, 3, lr_factor=lambda i: seen.append(i) or 0.0)
    assert seen == [0, 1, 2]
    assert all(torch.equal(a, b) for a, b in zip(before, params))  # a zero rate moves nothing
    assert t.lr == 1e-2 and t.optimizer.param_groups[0]["lr"] == 0.0
    t.train(net, params, PATCH, 1, lr_factor=lambda i: 0.5)
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)
    assert any(not torch.equal(a, b) for a, b in zip(before, params))


@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9])
def test_weight_average_follows_each_step_by_one_minus_decay(supernet, cases, decay):
    t = _trainer(supernet, cases)
    net = supernet.path(_arch(supernet)).train()
    params = net.parameters_on_path()
    expect = [p.detach().clone() for p in params]
    avg = WeightAverage(params, decay)

    def step() -> None:
        avg.update()
        for i, p in enumerate(params):
            expect[i] = decay * expect[i] + (1 - decay) * p.detach()

    t.train(net, params, PATCH, 3, after_step=step)
    last = [p.detach().clone() for p in params]
    avg.copy_to_parameters()
    for p, e in zip(params, expect):
        torch.testing.assert_close(p.detach(), e)
    same = all(torch.equal(p, v) for p, v in zip(params, last))
    assert same == (decay == 0.0)  # decay 0 is the last weights; any other is not


def test_weight_average_refuses_a_decay_outside_0_1(supernet):
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(supernet.parameters(), 1.0)


def test_distillation_adds_the_teachers_pull_and_leaves_its_own_weights_alone(supernet, cases):
    student, teacher = _arch(supernet, 0), _arch(supernet, 1)
    assert student != teacher
    start = {n: p.detach().clone() for n, p in supernet.named_parameters()}
    trained = {}
    for weight in (0.0, 1.0, None):
        supernet.load_state_dict(start)
        t = _trainer(supernet, cases)
        path = supernet.path(student).train()
        kw = {} if weight is None else {"teacher": supernet.path(teacher).train(), "distill_weight": weight}
        t.train(path, path.parameters_on_path(), PATCH, 2, **kw)
        trained[weight] = {n: p.detach().clone() for n, p in supernet.named_parameters()}
    assert all(torch.equal(trained[0.0][n], trained[None][n]) for n in start)  # weight 0: no teacher
    moved = [n for n in start if not torch.equal(trained[1.0][n], trained[None][n])]
    on_student = {id(p) for p in supernet.path_parameters(student)}
    named = dict(supernet.named_parameters())
    assert moved and all(id(named[n]) in on_student for n in moved)  # only the student learns
