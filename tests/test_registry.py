import optuna
import pytest

from ronas_optuna import ControllerConfig, RONASSampler, SearchSpace
from ronas_optuna.registry import SAMPLERS, check_sampler_names, make_sampler, sampler_names, worker_seed

SPACE = SearchSpace.default(depth=2, base_width=4, max_width=8)


@pytest.mark.parametrize(
    "name,kind",
    [
        ("ronas", RONASSampler),
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("gp", optuna.samplers.GPSampler),
        ("nsga2", optuna.samplers.NSGAIISampler),
    ],
)
def test_every_name_makes_its_sampler(name, kind):
    assert isinstance(make_sampler(name, SPACE, 0), kind)


def test_names_are_the_registry_and_unknown_names_are_refused():
    assert sampler_names() == tuple(SAMPLERS) == ("ronas", "tpe", "random", "gp", "nsga2")
    known = "ronas, tpe, random, gp, nsga2"
    with pytest.raises(ValueError, match=f"unknown sampler 'cmaes'; choose from {known}"):
        make_sampler("cmaes", SPACE, 0)
    with pytest.raises(ValueError, match="'x'"):
        check_sampler_names(["ronas", "x"])


def test_controller_config_and_seed_reach_the_ronas_sampler():
    cfg = ControllerConfig(lr=0.05)
    a, b = make_sampler("ronas", SPACE, 3, controller_config=cfg), make_sampler("ronas", SPACE, 3)
    assert a._config.lr == 0.05 and b._config.lr == ControllerConfig().lr and a._seed == 3


def test_a_supernet_search_samples_hotter_than_a_sampler_on_its_own():
    from ronas_optuna import RONASSampler
    from ronas_optuna.controller import SEARCH_CONTROLLER

    searched = make_sampler("ronas", SPACE, 0)  # what ronas search, create_search and benchmarks use
    assert searched._config == SEARCH_CONTROLLER and searched._config.temperature == 5.0
    assert RONASSampler(seed=0)._config.temperature == ControllerConfig().temperature == 3.0


def test_same_seed_same_proposals():
    def proposals(seed):
        st = optuna.create_study(sampler=make_sampler("random", SPACE, seed))
        st.optimize(lambda t: len(SPACE.suggest(t).code), n_trials=3)
        return [t.params for t in st.trials]

    assert proposals(1) == proposals(1) != proposals(2)


def _params(sampler, n, study=None):
    st = study or optuna.create_study(sampler=sampler)
    st.sampler = sampler
    st.optimize(lambda t: len(SPACE.suggest(t).code), n_trials=n)
    return [t.params for t in st.trials[-n:]]


def test_two_workers_never_share_a_stream(monkeypatch):
    # random is keyed by trial number: two workers on one study continue it without repeating a draw
    st = optuna.create_study()
    first = _params(make_sampler("random", SPACE, 0), 4, st)
    second = _params(make_sampler("random", SPACE, 0), 4, st)  # same seed, next trial numbers
    assert all(a != b for a in first for b in second)
    # tpe and gp get a seed from the plan seed, the trials so far and the process id
    seeds = {worker_seed("tpe", 0, 10)}
    monkeypatch.setattr("os.getpid", lambda: 999_999)
    seeds.add(worker_seed("tpe", 0, 10))
    seeds.add(worker_seed("tpe", 0, 11))
    assert len(seeds) == 3 and worker_seed("tpe", 0, 11) == worker_seed("tpe", 0, 11)
    assert worker_seed("ronas", 7, 10) == worker_seed("random", 7, 123) == 7


def test_a_resumed_random_search_reproduces_an_uninterrupted_one():
    whole = _params(make_sampler("random", SPACE, 5), 6)
    st = optuna.create_study()
    parts = _params(make_sampler("random", SPACE, 5), 3, st)
    parts += _params(make_sampler("random", SPACE, 5), 3, st)  # a new process resumes the study
    assert parts == whole
