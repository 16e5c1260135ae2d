import numpy as np
import optuna
import pytest

from ronas_optuna import Architecture, SearchSpace
from ronas_optuna.space import Decision, patch_decision


def test_default_space_decisions_and_size():
    s = SearchSpace.default()
    assert s.depth == 4 and s.widths == [16, 32, 64, 128, 256]
    assert s["enc0_conv1"].choices == ("conv3_d1", "conv3_d2", "conv3_d3", "conv331")
    assert "identity" in s["enc3_conv2"].choices
    assert s["down1"].choices == ("222", "221", "none")
    assert s["skip0"].choices == ("add", "none")
    assert "conv1" in s["dec0_conv"].choices
    assert s["act"].choices == ("relu", "lrelu", "elu")
    assert s.size == int(np.prod([len(d.choices) for d in s.decisions]))
    assert len(s) == 1 + 5 * 2 + 4 + 4 * 2


def test_width_cap_and_per_level_activation():
    s = SearchSpace.default(depth=5, base_width=32, max_width=320, per_level_activation=True)
    assert s.widths == [32, 64, 128, 256, 320, 320]
    assert "act" not in s and "act3" in s


def test_suggest_calls_each_decision_once_and_round_trips():
    s = SearchSpace.default(depth=3, patch_sizes=[(32, 32, 16), (16, 16, 16)])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    arch = s.suggest(trial)
    assert set(trial.params) == set(s) and trial.params == arch.to_params()
    assert Architecture.from_params(s, trial.params | {"lr": 0.1}) == arch
    assert Architecture.from_code(s, arch.code) == arch
    assert arch.patch_size in {(32, 32, 16), (16, 16, 16)}
    assert hash(arch) == hash(Architecture.from_code(s, arch.code))
    assert len({arch, Architecture.from_code(s, arch.code)}) == 1


@pytest.mark.parametrize("seed", range(10))
def test_code_round_trip_random(seed):
    s = SearchSpace.default()
    a = s.sample(np.random.default_rng(seed))
    assert Architecture.from_code(s, a.code) == a
    assert s.from_indices(a.indices()) == a


def test_validation_errors():
    s = SearchSpace.default(depth=2)
    params = s.sample(np.random.default_rng(0)).to_params()
    with pytest.raises(ValueError, match="unknown decision"):
        Architecture(s, params | {"bogus": 1})
    with pytest.raises(ValueError, match="unknown choice"):
        Architecture(s, params | {"down1": "333"})
    with pytest.raises(ValueError, match="lacks"):
        Architecture(s, {k: v for k, v in params.items() if k != "act"})
    with pytest.raises(ValueError, match="does not match"):
        Architecture.from_code(s, "zzz")
    with pytest.raises(ValueError):
        SearchSpace.default(encoder_ops=["conv9"])
    with pytest.raises(ValueError):
        Decision("x", ())
    with pytest.raises(ValueError, match="multiples"):
        patch_decision([(30, 32, 32)], depth=4)


def test_extra_decisions_and_serialisation():
    s = SearchSpace.default(depth=2).with_decision(Decision("lr_scale", (1, 2, 4)), first=False)
    assert list(s)[-1] == "lr_scale"
    assert isinstance(s.distributions()["lr_scale"], optuna.distributions.CategoricalDistribution)
    s2 = SearchSpace.from_dict(s.to_dict())
    assert s2 == s and s2.fingerprint() == s.fingerprint()
    a = s.sample(np.random.default_rng(3))
    assert Architecture.from_code(s, a.code) == a
    assert "lr_scale" in s.table()


def test_total_stride():
    s = SearchSpace.default(depth=3)
    p = s.sample(np.random.default_rng(0)).to_params()
    p.update(down1="222", down2="221", down3="none")
    assert Architecture(s, p).total_stride() == (4, 4, 2)


@pytest.mark.parametrize("depth", [2, 3])
def test_fair_sample_trains_every_choice_each_round(depth):
    s = SearchSpace.default(depth=depth, patch_sizes=[(32, 32, 16), (16, 16, 16)])
    k = max(len(d.choices) for d in s.decisions)
    for rnd in range(3):
        paths = [s.fair_sample(rnd * k + j, seed=5) for j in range(k)]
        for name, d in s.items():
            used = [p[name] for p in paths]
            assert set(used) == set(d.choices), name  # every choice, every round
            counts = [used.count(c) for c in d.choices]
            assert max(counts) - min(counts) <= 1 or k % len(d.choices), name
    # a pure function of (step, seed): a resumed warm-up continues exactly; other seeds differ
    assert [s.fair_sample(i, seed=5) for i in range(2 * k)] == [
        s.fair_sample(i, seed=5) for i in range(2 * k)
    ]
    assert [s.fair_sample(i, seed=5) for i in range(k)] != [s.fair_sample(i, seed=6) for i in range(k)]


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_the_handmade_member_is_dynunet_like_and_in_the_space(depth):
    space = SearchSpace.default(depth=depth, patch_sizes=[(32, 32, 32), (64, 48, 32), (48, 48, 48)])
    arch = space.handmade()
    assert Architecture.from_code(space, arch.code) == arch  # a member of the space
    assert arch["patch"] == "48x48x48"  # the most voxels
    assert arch["act"] == "lrelu" and arch.total_stride() == (2**depth,) * 3
    for name, choice in arch.items():
        if "conv" in name:
            assert choice == "conv3_d1", name
        elif name.startswith("skip"):
            assert choice == "add", name
    narrow = SearchSpace([Decision("act", ("relu", "elu"))])
    with pytest.raises(ValueError, match="'act' has no DynUNet-like choice"):
        narrow.handmade()
