import optuna
import pytest

from ronas_optuna import ControllerConfig, RONASSampler, SearchSpace
from ronas_optuna.registry import SAMPLERS, check_sampler_names, make_sampler, sampler_names

SPACE = SearchSpace.default(depth=2, base_width=4, max_width=8)


@pytest.mark.parametrize(
    "name,kind",
    [
        ("ronas", RONASSampler),
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("gp", optuna.samplers.GPSampler),
    ],
)
def test_every_name_makes_its_sampler(name, kind):
    assert isinstance(make_sampler(name, SPACE, 0), kind)


def test_names_are_the_registry_and_unknown_names_are_refused():
    assert sampler_names() == tuple(SAMPLERS) == ("ronas", "tpe", "random", "gp")
    with pytest.raises(ValueError, match="unknown sampler 'cmaes'; choose from ronas, tpe, random, gp"):
        make_sampler("cmaes", SPACE, 0)
    with pytest.raises(ValueError, match="'x'"):
        check_sampler_names(["ronas", "x"])


def test_controller_config_and_seed_reach_the_ronas_sampler():
    cfg = ControllerConfig(lr=0.05)
    a, b = make_sampler("ronas", SPACE, 3, controller_config=cfg), make_sampler("ronas", SPACE, 3)
    assert a._config.lr == 0.05 and b._config.lr == ControllerConfig().lr and a._seed == 3


def test_same_seed_same_proposals():
    def proposals(seed):
        st = optuna.create_study(sampler=make_sampler("random", SPACE, seed))
        st.optimize(lambda t: len(SPACE.suggest(t).code), n_trials=3)
        return [t.params for t in st.trials]

    assert proposals(1) == proposals(1) != proposals(2)
