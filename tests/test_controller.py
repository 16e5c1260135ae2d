import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ronas_optuna.controller import Controller, ControllerConfig, rank_scores


def test_sample_log_prob_entropy_consistent():
    c = Controller({"a": 3, "b": 2, "c": 5}, seed=0)
    g = torch.Generator().manual_seed(0)
    choices = c.sample(g)
    assert len(choices) == 3 and 0 <= choices[2] < 5
    lp = c.log_prob([choices])
    assert lp.shape == (1,) and lp.item() < 0
    assert 0 < c.entropy(4, torch.Generator().manual_seed(1)) <= c.max_entropy + 1e-6
    assert c.max_entropy == pytest.approx(math.log(3) + math.log(2) + math.log(5))


def _stepped_controller(*args, **kwargs) -> Controller:
    """The same controller with the previous, stepped arithmetic (``benchmarks/controller_speed.py``)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "controller_speed.py"
    spec = importlib.util.spec_from_file_location("controller_speed", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Stepped(*args, **kwargs)


@pytest.mark.parametrize("sizes", [[4], [3, 2, 5], [2, 6, 3, 3, 4]], ids=["one", "three", "five"])
@pytest.mark.parametrize("tanh_constant", [1.5, None])
def test_fused_score_is_the_stepped_lstm(sizes, tanh_constant):
    cfg = ControllerConfig(hidden_size=16, tanh_constant=tanh_constant, temperature=2.0)
    decisions = {f"d{i}": k for i, k in enumerate(sizes)}
    c, stepped = Controller(decisions, cfg, seed=2), _stepped_controller(decisions, cfg, seed=2)
    g = torch.Generator().manual_seed(0)
    choices = torch.tensor([c.sample(g) for _ in range(5)])
    mask = (torch.rand(choices.shape, generator=g) < 0.7).float()
    fused, ref = c._score(choices, mask), stepped._score(choices, mask)
    for a, b in zip(fused, ref):
        assert a.shape == (5,) and torch.allclose(a, b, atol=1e-5)
    grads = []
    for net, (logp, ent) in ((c, fused), (stepped, ref)):
        (logp.sum() + 0.1 * ent.sum()).backward()
        grads.append([torch.zeros_like(p) if p.grad is None else p.grad for p in net.parameters()])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads))
    assert sum(float(p.abs().sum()) for p in grads[0]) > 0


def test_same_seed_same_weights_and_samples():
    a, b = Controller({"x": 4, "y": 4}, seed=3), Controller({"x": 4, "y": 4}, seed=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert a.sample(torch.Generator().manual_seed(5)) == b.sample(torch.Generator().manual_seed(5))
    c = Controller({"x": 4, "y": 4}, seed=4)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_reinforce_moves_probability_towards_rewarded_choice():
    cfg = ControllerConfig(batch_size=4, lr=1e-2)
    c = Controller({"x": 4, "y": 3}, cfg, seed=0)
    g = torch.Generator().manual_seed(0)

    def p_x2() -> float:  # the marginal probability of the rewarded choice x = 2 (y is not rewarded)
        return c.log_prob([[2, y] for y in range(3)]).exp().sum().item()

    before = p_x2()
    for _ in range(200):
        ch = c.sample(g)
        c.observe(ch, 1.0 if ch[0] == 2 else 0.0)
    assert c.n_updates == 50
    assert c.most_likely()[0] == 2
    assert p_x2() > 0.8 > before * 2


def test_update_only_after_a_full_batch_and_bad_rewards_refused():
    c = Controller({"x": 2}, ControllerConfig(batch_size=3), seed=0)
    assert not c.observe([0], 0.5) and not c.observe([1], 0.1)
    assert c.observe([0], 0.9) and c.n_updates == 1 and c.baseline is not None
    with pytest.raises(ValueError, match="finite"):
        c.observe([0], float("nan"))


def test_fast_numpy_sampler_is_the_same_policy():
    c = Controller({"a": 3, "b": 5, "c": 2, "d": 4}, seed=1)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # train a little so the policy is not uniform
        ch = c.sample(g)
        c.observe(ch, float(ch[1] == 3))
    for _ in range(10):
        ch = c.sample(g)
        _, ent = c._score(torch.tensor([ch]))
        assert abs(float(ent[0].detach()) - c.last_entropy) < 1e-5
    first = torch.softmax(c._logits(c.lstm(c.start)[0], "a"), -1)[0]
    counts = torch.bincount(torch.tensor([c.sample(g)[0] for _ in range(3000)]), minlength=3) / 3000
    assert torch.allclose(counts, first.detach(), atol=0.03)


@pytest.mark.parametrize(
    "options",
    [{"replay_size": 6, "epochs": 2}, {"risk_quantile": 0.3, "risk_window": 8}, {"rank_rewards": True}],
    ids=["ppo_replay", "risk_seeking", "rank_rewards"],
)
def test_replay_and_risk_seeking_learn_and_resume_bit_exact(options):
    cfg = ControllerConfig(batch_size=2, lr=0.05, **options)
    decisions = {"a": 3, "b": 2}
    rng = torch.Generator().manual_seed(0)

    def feed(ctrl, n):
        for _ in range(n):
            c = ctrl.sample(rng)
            ctrl.observe(c, 1.0 if c[0] == 2 else 0.0)

    def p_a2(ctrl):  # marginal probability of the rewarded choice
        return float(ctrl.log_prob([[2, 0], [2, 1]]).detach().exp().sum())

    ctrl = Controller(decisions, cfg, seed=0)
    before = p_a2(ctrl)
    feed(ctrl, 60)
    assert p_a2(ctrl) > before + 0.2 and ctrl.most_likely()[0] == 2
    # A controller restored from the bytes continues exactly like the original.
    twin = Controller(decisions, cfg, seed=0)
    twin.load_state_bytes(ctrl.state_bytes())
    for c, r in [([2, 1], 1.0), ([0, 0], 0.0), ([1, 1], 0.0), ([2, 0], 1.0)]:
        ctrl.observe(c, r)
        twin.observe(c, r)
    assert all(torch.equal(x, y) for x, y in zip(ctrl.state_dict().values(), twin.state_dict().values()))


def test_controller_adam_is_torch_adam_bit_for_bit():
    from ronas_optuna.controller import _Adam

    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen), torch.randn(2, 2, generator=gen)]
    ours_p = [torch.nn.Parameter(t.clone()) for t in init]
    ref_p = [torch.nn.Parameter(t.clone()) for t in init]
    ours, ref = _Adam(ours_p, lr=0.01), torch.optim.Adam(ref_p, lr=0.01, foreach=True)
    for step in range(8):
        ours.zero_grad()
        ref.zero_grad(set_to_none=True)
        for i, (a, b) in enumerate(zip(ours_p, ref_p)):
            if i == 1 and step < 3:
                continue  # no gradient yet: skipped, its step count unchanged
            g = torch.randn(a.shape, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
        assert all(torch.equal(a, b) for a, b in zip(ours_p, ref_p))
    mine, theirs = ours.state_dict(), ref.state_dict()
    assert (
        mine["param_groups"] == theirs["param_groups"]
    )  # torch.optim.Adam's format: snapshots load both ways
    assert mine["state"].keys() == theirs["state"].keys() and float(mine["state"][1]["step"]) == 5
    for i, s in mine["state"].items():
        assert all(torch.equal(v, theirs["state"][i][k]) for k, v in s.items())
    again = _Adam(ours_p, lr=0.01)
    again.load_state_dict(theirs)
    assert all(torch.equal(v, mine["state"][i][k]) for i, s in again.state.items() for k, v in s.items())


def test_learning_does_not_import_torch_dynamo():
    """torch.optim.Optimizer imports torch._dynamo on first use (seconds); joining must not pay it."""
    code = (
        "import sys\n"
        "from ronas_optuna.controller import Controller\n"
        "c = Controller({'a': 3, 'b': 4})\n"
        "for i in range(8):\n"
        "    c.observe([i % 3, i % 4], float(i % 5))\n"
        "c.load_state_bytes(c.state_bytes())\n"
        "assert c.n_updates == 4\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_temperature_schedule_falls_geometrically_and_samples_at_the_current_temperature():
    cfg = ControllerConfig(
        hidden_size=16, temperature=4.0, final_temperature=1.0, anneal_rewards=4, batch_size=100
    )
    c = Controller({"a": 3, "b": 5}, cfg, seed=0)
    seen = []
    for _ in range(6):
        seen.append(c.temperature)
        c.observe([0, 0], 0.5)  # no update (batch of 100): only the count moves
    assert seen == pytest.approx([4.0, 4.0 * 0.25**0.25, 2.0, 4.0 * 0.25**0.75, 1.0, 1.0])
    # annealed to T = 1 (no update yet): sampling and learning are those of a controller at T = 1
    flat = Controller({"a": 3, "b": 5}, ControllerConfig(hidden_size=16, temperature=1.0), seed=0)
    for seed in range(5):
        choices = c.sample(torch.Generator().manual_seed(seed))
        assert choices == flat.sample(torch.Generator().manual_seed(seed))
        assert c.log_prob([choices]).item() == pytest.approx(flat.log_prob([choices]).item())
    hot = Controller({"a": 3, "b": 5}, ControllerConfig(hidden_size=16, temperature=4.0), seed=0)
    assert hot.log_prob([choices]).item() != pytest.approx(c.log_prob([choices]).item())
    assert (
        Controller({"a": 3}, ControllerConfig(final_temperature=2.0), seed=0).temperature
        == ControllerConfig().temperature
    )  # no length: the constant temperature
    with pytest.raises(ValueError, match="final_temperature must be > 0"):
        Controller({"a": 3}, ControllerConfig(final_temperature=0.0, anneal_rewards=5))


def test_startup_trials_draw_uniformly_then_the_policy_takes_over():
    import optuna

    from ronas_optuna import RONASSampler

    space = {f"d{i}": optuna.distributions.CategoricalDistribution(list(range(5))) for i in range(4)}
    sampler = RONASSampler(space, seed=0, controller_config=ControllerConfig(startup_trials=30))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: float(sum(t.suggest_categorical(n, list(range(5))) for n in space)), n_trials=60)
    counts = np.zeros(5)
    for t in study.trials[:30]:
        for v in t.params.values():
            counts[v] += 1
    assert counts.min() > 10  # 120 uniform draws: every choice appears (expected 24 each)
    assert [n for n, _ in sampler.entropy_history] == list(range(30, 60))  # the policy drew from 30 on
    late = np.mean([t.value for t in study.trials[45:]])
    assert late > np.mean([t.value for t in study.trials[:30]])  # it learned from the random start


def test_rank_scores_are_normal_scores_of_the_ranks_and_ignore_the_scale():
    scores = rank_scores([0.3, -5.0, 0.9, 0.3])  # ranks 2.5, 1, 4, 2.5 of 4
    from scipy.stats import norm

    assert np.allclose(scores, norm.ppf((np.array([2.5, 1, 4, 2.5]) - 0.5) / 4))
    assert abs(scores.sum()) < 1e-12  # centred: the median is the baseline
    values = np.array([1e-5, 3e-4, 0.2, 7.0, 1e-3])
    assert np.array_equal(rank_scores(values), rank_scores(np.log(values)))  # any increasing map


def test_rank_rewards_learn_the_same_from_a_heavy_tail_as_from_its_order():
    decisions = {"a": 4, "b": 3}

    def train(transform):
        ctrl = Controller(decisions, ControllerConfig(rank_rewards=True, risk_window=20), seed=0)
        rng = torch.Generator().manual_seed(0)
        for _ in range(40):
            c = ctrl.sample(rng)
            ctrl.observe(c, transform(float(c[0] + c[1])))
        return ctrl

    plain, tail = train(lambda r: r), train(lambda r: -math.exp(-3 * r))  # same order, heavy tail
    assert all(torch.equal(x, y) for x, y in zip(plain.state_dict().values(), tail.state_dict().values()))
    assert plain.most_likely() == [3, 2]
    with pytest.raises(ValueError, match="choose one"):
        ControllerConfig(rank_rewards=True, risk_quantile=0.2)
