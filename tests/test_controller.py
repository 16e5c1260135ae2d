import math

import pytest
import torch

from ronas_optuna.controller import Controller, ControllerConfig


def test_sample_log_prob_entropy_consistent():
    c = Controller({"a": 3, "b": 2, "c": 5}, seed=0)
    g = torch.Generator().manual_seed(0)
    choices = c.sample(g)
    assert len(choices) == 3 and 0 <= choices[2] < 5
    lp = c.log_prob([choices])
    assert lp.shape == (1,) and lp.item() < 0
    assert 0 < c.entropy(4, torch.Generator().manual_seed(1)) <= c.max_entropy + 1e-6
    assert c.max_entropy == pytest.approx(math.log(3) + math.log(2) + math.log(5))


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
    before = c.log_prob([[2, 1]]).exp().item()
    for _ in range(200):
        ch = c.sample(g)
        c.observe(ch, 1.0 if ch[0] == 2 else 0.0)
    after = c.log_prob([[2, 1]]).exp().item()
    assert c.n_updates == 50
    assert c.most_likely()[0] == 2
    assert after > before * 2


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
        _, _, ent = c._run(torch.tensor([ch]), None)
        assert abs(float(ent[0].detach()) - c.last_entropy) < 1e-5
    first = torch.softmax(c._logits(c.lstm(c.start)[0], "a"), -1)[0]
    counts = torch.bincount(torch.tensor([c.sample(g)[0] for _ in range(3000)]), minlength=3) / 3000
    assert torch.allclose(counts, first.detach(), atol=0.03)


@pytest.mark.parametrize(
    "options",
    [{"replay_size": 6, "epochs": 2}, {"risk_quantile": 0.3, "risk_window": 8}],
    ids=["ppo_replay", "risk_seeking"],
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
        return float(ctrl.log_prob([[2, 0], [2, 1]]).exp().sum())

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
