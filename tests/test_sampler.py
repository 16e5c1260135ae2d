import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from ronas_optuna import ControllerConfig, SearchSpace
from ronas_optuna.bench import CostLandscape, Landscape
from ronas_optuna.sampler import RONASSampler, TrialKeyedRandomSampler, pareto_reward

SPACE = SearchSpace.default(depth=3)


def _run(study, n, landscape=None):
    study.optimize(landscape or Landscape(SPACE, seed=0), n_trials=n)


def test_controller_space_known_at_trial_zero():
    s = RONASSampler(SPACE, seed=0)
    study = optuna.create_study(direction="maximize", sampler=s)
    trial = study.ask()
    SPACE.suggest(trial)
    assert s.controller is not None and set(trial.params) == set(SPACE)
    drawn = study._storage.get_trial(trial._trial_id).system_attrs["ronas:drawn"]
    assert [trial.params[n] for n in SPACE] == [d.choices[i] for d, i in zip(SPACE.decisions, drawn)]


def test_learns_on_a_landscape_better_than_random():
    land = Landscape(SPACE, seed=1, noise=0.005)
    r = optuna.create_study(direction="maximize", sampler=RONASSampler(SPACE, seed=0))
    r.optimize(land, n_trials=200)
    q = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    q.optimize(land, n_trials=200)
    last = lambda st: np.mean([t.value for t in st.trials[-50:]])
    assert last(r) > last(q) + 0.03
    ent = r.sampler.entropy_history
    assert ent[-1][1] < ent[0][1]


def test_minimize_direction_is_respected():
    land = Landscape(SPACE, seed=2, noise=0.0)
    st = optuna.create_study(direction="minimize", sampler=RONASSampler(SPACE, seed=0))
    st.optimize(lambda t: land(t), n_trials=150)
    first = np.mean([t.value for t in st.trials[:30]])
    last = np.mean([t.value for t in st.trials[-30:]])
    assert last < first


def test_other_params_go_to_the_independent_sampler():
    s = RONASSampler(SPACE, seed=0, independent_sampler=optuna.samplers.RandomSampler(seed=1))

    def obj(t):
        SPACE.suggest(t)
        lr = t.suggest_float("lr", 1e-4, 1e-1, log=True)
        return -math.log(lr)

    st = optuna.create_study(sampler=s)
    st.optimize(obj, n_trials=12)
    assert all(1e-4 <= t.params["lr"] <= 1e-1 for t in st.trials)
    assert len({t.params["lr"] for t in st.trials}) == 12


def test_fail_pruned_and_nan_do_not_poison_the_baseline():
    s = RONASSampler(SPACE, seed=0)
    land = Landscape(SPACE, seed=0)

    def obj(t):
        v = land(t)
        if t.number % 5 == 1:
            raise RuntimeError("boom")
        if t.number % 5 == 2:
            return float("nan")
        if t.number % 5 == 3:
            t.report(0.1, 1)
            raise optuna.TrialPruned()
        if t.number % 5 == 4:
            raise optuna.TrialPruned()  # no intermediate value: skipped
        return v

    st = optuna.create_study(direction="maximize", sampler=s)
    st.optimize(obj, n_trials=40, catch=(RuntimeError,))
    states = [t.state for t in st.trials]
    assert states.count(TrialState.FAIL) == 16 and states.count(TrialState.PRUNED) == 16
    ctrl = s.controller
    # COMPLETE (8) and pruned-with-intermediate (8) are learned; FAIL, NaN and bare pruned are not
    assert ctrl.n_observed == 16
    assert ctrl.baseline is not None and math.isfinite(ctrl.baseline)
    s2 = RONASSampler(SPACE, seed=0, failure_reward=0.0, pruned_reward=None)
    st2 = optuna.create_study(direction="maximize", sampler=s2)
    st2.optimize(obj, n_trials=20, catch=(RuntimeError,))
    assert s2.controller.n_observed == 4 + 8  # complete + (fail, nan) at reward 0.0


@pytest.mark.parametrize(
    "value, earlier, expected",
    [
        ([1, 1], [[0, 0]], 1.0),  # dominates the only earlier point: ranks 1 vs 0
        ([0, 0], [[1, 1]], -1.0),  # dominated by it
        ([0, 1], [[1, 0]], 1.0),  # a trade-off: not dominated, leads by a full rank in one objective
        ([1, 1], [[1, 1]], 0.0),  # a tie: ranks 0.5 and 0.5
        # ranks among {a, b, front, value} per objective; the lead over each earlier point is the
        # max over objectives, the reward the min over points: min(2/3, 2/3, 1/3) = 1/3
        ([2, 2], [[0, 3], [3, 0], [1, 1]], 1 / 3),
        ([0.5, 0.5], [[0, 3], [3, 0], [1, 1]], -1 / 3),  # behind [1, 1] by one rank step in both
    ],
)
def test_pareto_reward_by_hand(value, earlier, expected):
    assert pareto_reward(np.array(value, float), np.array(earlier, float)) == pytest.approx(expected)


def test_pareto_reward_ignores_units_and_dominated_earlier_points():
    earlier = np.array([[0.8, -2.0], [0.6, -1.0], [0.5, -3.0]])  # the last is dominated by both
    v = np.array([0.7, -1.5])
    r = pareto_reward(v, earlier)
    assert r == pytest.approx(pareto_reward(v * [10, 1000], earlier * [10, 1000]))
    assert r == pytest.approx(pareto_reward(v, earlier[:2]), abs=0.2) and r > 0


def test_pareto_reward_in_values_keeps_how_far_a_point_advances_the_front():
    earlier = np.array([[0.0, 1.0], [1.0, 0.0]])
    near, far = np.array([1.1, 0.0]), np.array([2.0, 0.0])  # both extend the front past (1, 0)
    # values min-max normalised over the three points: near leads (1, 0) by 0.1 / 1.1, far by 1 / 2
    assert pareto_reward(near, earlier, scale="value") == pytest.approx(0.1 / 1.1)
    assert pareto_reward(far, earlier, scale="value") == pytest.approx(0.5)
    # ranks cannot tell them apart: both lead (1, 0) by one rank step of two
    assert pareto_reward(near, earlier) == pareto_reward(far, earlier) == pytest.approx(0.5)
    # more earlier points on the front: the value reward stays, the rank reward shrinks as 1 / n
    xs = np.linspace(0.1, 0.9, 40)
    crowded = np.vstack([earlier, np.column_stack([xs, 1 - xs])])
    assert pareto_reward(far, crowded, scale="value") == pytest.approx(0.5)
    assert pareto_reward(far, crowded) == pytest.approx(1 / 42)
    # a dominated point: how far it would have to move, in normalised units
    assert pareto_reward(np.array([-1.0, -1.0]), earlier, scale="value") == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="pareto_scale must be 'rank' or 'value'"):
        ControllerConfig(pareto_scale="hv")


def test_multi_objective_pruned_trials_earn_pruned_reward_when_it_is_a_number():
    def sometimes_pruned(trial):
        v = _two_objectives(trial)
        if trial.number % 3 == 2:
            raise optuna.TrialPruned()
        return v

    for pruned_reward, learned in ((-0.5, 5 + 3), ("last", 5), (None, 5)):  # trials 2, 5, 8 pruned
        s = RONASSampler(SPACE, seed=0, pruned_reward=pruned_reward)
        st = optuna.create_study(directions=["maximize", "minimize"], sampler=s)
        st.optimize(sometimes_pruned, n_trials=9)
        assert s.controller.n_observed == learned, pruned_reward  # the complete ones but the first


def _two_objectives(trial):
    arch = SPACE.suggest(trial)
    code = sum(SPACE[n].choices.index(arch[n]) for n in SPACE)
    return code / 40 + 0.01 * (trial.number % 3), 1.0 + code  # better costs more


def test_multi_objective_study_learns_and_replays_deterministically():
    s = RONASSampler(SPACE, seed=0)
    st = optuna.create_study(directions=["maximize", "minimize"], sampler=s)
    st.optimize(_two_objectives, n_trials=15)
    assert all(t.state == TrialState.COMPLETE for t in st.trials)
    assert s.controller.n_observed == 14  # every trial but the first (nothing to compare with)
    assert st.best_trials and all(set(t.params) == set(SPACE) for t in st.best_trials)
    again = optuna.create_study(directions=["maximize", "minimize"], sampler=RONASSampler(SPACE, seed=0))
    again.optimize(_two_objectives, n_trials=15)
    assert [t.params for t in again.trials] == [t.params for t in st.trials]
    # a new process on the same storage replays the same rewards: same next architecture
    fresh = optuna.load_study(study_name=st.study_name, storage=st._storage)
    joined = RONASSampler(SPACE, seed=0)
    joined._bind(fresh)
    joined._catch_up(fresh)
    assert torch.equal(
        torch.tensor(joined.controller.most_likely()), torch.tensor(s.controller.most_likely())
    )


def test_multi_objective_failures_use_failure_reward_in_reward_units():
    def flaky(trial):
        v = _two_objectives(trial)
        return (float("nan"), v[1]) if trial.number % 2 else v

    s = RONASSampler(SPACE, seed=0, failure_reward=-1.0)
    st = optuna.create_study(directions=["maximize", "minimize"], sampler=s)
    st.optimize(flaky, n_trials=8)
    assert s.controller.n_observed == 4 + 3  # the failures at -1, the complete ones but the first


def test_multi_objective_front_beats_random_on_a_cost_landscape():
    land = CostLandscape(Landscape(SPACE, seed=3, noise=0.005), seed=3)

    def front_quality(sampler):
        st = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        st.optimize(land, n_trials=200)
        # the share of the last 50 trials no earlier trial dominates: the policy samples the front
        return np.mean(
            [
                pareto_reward(
                    np.array([t.values[0], -t.values[1]]),
                    np.array([[u.values[0], -u.values[1]] for u in st.trials[: t.number]]),
                )
                > 0
                for t in st.trials[-50:]
            ]
        )

    assert front_quality(RONASSampler(SPACE, seed=0)) > front_quality(optuna.samplers.RandomSampler(seed=0))


def test_search_space_none_infers_categoricals_from_first_complete_trial():
    s = RONASSampler(None, seed=0)
    st = optuna.create_study(direction="maximize", sampler=s)
    _run(st, 30)
    assert s.controller is not None and s.controller.names == list(SPACE)
    assert s.controller.n_observed == 30
    with pytest.raises(ValueError, match="CategoricalDistribution"):
        RONASSampler({"lr": optuna.distributions.FloatDistribution(0, 1)})


def test_same_seed_same_architectures_and_no_duplicates_across_seeds():
    a = optuna.create_study(direction="maximize", sampler=RONASSampler(SPACE, seed=5))
    b = optuna.create_study(direction="maximize", sampler=RONASSampler(SPACE, seed=5))
    c = optuna.create_study(direction="maximize", sampler=RONASSampler(SPACE, seed=6))
    for st in (a, b, c):
        _run(st, 30)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.params for t in a.trials] != [t.params for t in c.trials]


def test_thread_safe_with_n_jobs_2():
    s = RONASSampler(SPACE, seed=0)
    st = optuna.create_study(direction="maximize", sampler=s)
    st.optimize(Landscape(SPACE, seed=0), n_trials=40, n_jobs=2)
    assert len(st.trials) == 40 and all(t.state == TrialState.COMPLETE for t in st.trials)
    s.most_likely_params(st)
    assert s.controller.n_observed == 40
    assert len({tuple(t.params.values()) for t in st.trials}) == 40


SCRIPT = textwrap.dedent(
    """
    import json, sys, optuna
    from ronas_optuna import SearchSpace
    from ronas_optuna.bench import Landscape
    from ronas_optuna.sampler import RONASSampler
    from ronas_optuna.storage import open_storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    space = SearchSpace.default(depth=3)
    sampler = RONASSampler(space, seed=11)
    study = optuna.create_study(study_name="s", storage=open_storage(storage), direction="maximize",
                                sampler=sampler, load_if_exists=True)
    mine = []
    land = Landscape(space, seed=0)
    def obj(t):
        mine.append(t.number)
        return land(t)
    study.optimize(obj, n_trials=n)
    json.dump({"mine": mine, "learned": sorted(sampler._learned)}, open(out, "w"))
    """
)


def _proc(tmp_path, storage, n, tag):
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    out = tmp_path / f"{tag}.json"
    return subprocess.Popen([sys.executable, str(script), storage, str(n), str(out)]), out


def test_resume_in_a_new_process_equals_an_uninterrupted_run(tmp_path):
    one = f"sqlite:///{tmp_path / 'one.db'}"
    two = f"sqlite:///{tmp_path / 'two.db'}"
    p, _ = _proc(tmp_path, one, 50, "one")
    assert p.wait() == 0
    for tag in ("a", "b"):
        p, _ = _proc(tmp_path, two, 25, tag)
        assert p.wait() == 0
    full = optuna.load_study(study_name="s", storage=one).trials
    resumed = optuna.load_study(study_name="s", storage=two).trials
    assert len(full) == len(resumed) == 50
    assert [t.params for t in full] == [t.params for t in resumed]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_processes_share_one_storage_and_learn_from_all(tmp_path, kind):
    storage = f"sqlite:///{tmp_path / 'shared.db'}" if kind == "sqlite" else str(tmp_path / "shared.log")
    # create the study first so both workers load it
    p, _ = _proc(tmp_path, storage, 1, "init")
    assert p.wait() == 0
    (pa, oa), (pb, ob) = _proc(tmp_path, storage, 20, "a"), _proc(tmp_path, storage, 20, "b")
    assert pa.wait() == 0 and pb.wait() == 0
    ra, rb = json.loads(oa.read_text()), json.loads(ob.read_text())
    assert set(ra["mine"]).isdisjoint(rb["mine"]) and len(ra["mine"]) == len(rb["mine"]) == 20
    for own in (ra, rb):
        assert set(own["mine"][:-1]) <= set(own["learned"])
    # workers learn from the other's finished trials (how many depends on the interleaving; a worker
    # that runs all its trials before the other finishes one has nothing to learn from it)
    assert set(ra["learned"]) & set(rb["mine"]) or set(rb["learned"]) & set(ra["mine"])
    later = ra if max(ra["mine"]) > max(rb["mine"]) else rb
    other = rb if later is ra else ra
    assert set(other["mine"]) & set(later["learned"])


@pytest.mark.parametrize("direction,sign", [("maximize", 1.0), ("minimize", -1.0)])
def test_numeric_fail_and_pruned_rewards_follow_the_direction(direction, sign):
    s = RONASSampler(SPACE, seed=0, failure_reward=5.0, pruned_reward=3.0)
    st = optuna.create_study(direction=direction, sampler=s)

    def obj(t):
        SPACE.suggest(t)
        if t.number == 1:
            raise optuna.TrialPruned()
        if t.number == 2:
            raise RuntimeError("fails")
        return 1.0

    st.optimize(obj, n_trials=1)
    seen = _spy(s)
    st.optimize(obj, n_trials=2, catch=(RuntimeError,))
    # a "worst loss" penalty stays the worst reward in a minimize study
    assert [reward for _, reward, _ in seen] == [sign * 3.0, sign * 5.0]


def test_parameters_outside_the_space_are_keyed_by_trial_number(tmp_path):
    def obj(t):
        SPACE.suggest(t)
        return t.suggest_float("lr", 1e-4, 1e-1, log=True)

    full = optuna.create_study(sampler=RONASSampler(SPACE, seed=0))
    full.optimize(obj, n_trials=6)
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    first = optuna.create_study(storage=storage, study_name="r", sampler=RONASSampler(SPACE, seed=0))
    first.optimize(obj, n_trials=3)
    resumed = optuna.load_study(storage=storage, study_name="r", sampler=RONASSampler(SPACE, seed=0))
    resumed.optimize(obj, n_trials=3)
    assert [t.params["lr"] for t in resumed.trials] == [t.params["lr"] for t in full.trials]
    assert len({t.params["lr"] for t in full.trials}) == 6
    other = optuna.create_study(sampler=RONASSampler(SPACE, seed=1))
    other.optimize(obj, n_trials=2)
    assert other.trials[0].params["lr"] != full.trials[0].params["lr"]


def _spy(sampler):
    seen, real = [], sampler.controller.observe

    def observe(idx, reward, *, mask=None):
        seen.append((list(idx), reward, mask))
        return real(idx, reward, mask=mask)

    sampler.controller.observe = observe
    return seen


def test_conditional_decisions_are_learned_from_masked():
    s = RONASSampler(SPACE, seed=0)
    land = Landscape(SPACE, seed=0)

    def obj(t):  # the deepest level's ops are asked only when it is pooled into
        params = {}
        for name, d in SPACE.items():
            if name.startswith(f"enc{SPACE.depth}_") and params.get(f"down{SPACE.depth}") == "none":
                continue
            params[name] = t.suggest_categorical(name, d.choices)
        full = {n: params.get(n, SPACE[n].choices[0]) for n in SPACE}
        return land.true_value(full)

    st = optuna.create_study(direction="maximize", sampler=s)
    st.optimize(obj, n_trials=1)
    seen = _spy(s)
    st.optimize(obj, n_trials=40)
    deep = f"enc{SPACE.depth}_conv1"
    skipped = [t for t in st.trials[1:] if deep not in t.params]
    assert skipped and len(seen) == 40  # every trial teaches, conditional ones included
    k = list(SPACE).index(deep)
    for t, (idx, _, mask) in zip(st.trials[1:], seen):
        assert mask[k] == (deep in t.params) and idx == t.system_attrs["ronas:drawn"]


@pytest.mark.parametrize("learn", [True, False])
def test_enqueued_choices_teach_the_policy_unless_told_not_to(learn):
    s = RONASSampler(SPACE, seed=0, learn_from_enqueued=learn)
    st = optuna.create_study(direction="maximize", sampler=s)
    land = Landscape(SPACE, seed=0)
    st.optimize(land, n_trials=1)
    seen = _spy(s)
    arch = SPACE.sample(np.random.default_rng(3))
    st.enqueue_trial(arch.to_params())  # fully fixed
    st.enqueue_trial({"act": "elu", "down1": "none"})  # partly fixed
    st.optimize(land, n_trials=2)
    names = list(SPACE)
    if learn:  # every decision of both trials counts
        assert len(seen) == 2 and all(all(mask) for _, _, mask in seen)
        return
    assert len(seen) == 1  # the fully fixed trial was not learned from
    (_, _, mask) = seen[0]
    assert not mask[names.index("act")] and not mask[names.index("down1")] and sum(mask) == len(SPACE) - 2


def test_a_good_enqueued_architecture_makes_the_policy_propose_it_more():
    """A warm start teaches: the same enqueued architecture, scored high, raises its probability
    under the policy; masked, it leaves the policy as it was."""
    arch = SPACE.sample(np.random.default_rng(3))

    code = [d.choices.index(arch[n]) for n, d in SPACE.items()]

    def log_prob(learn):
        s = RONASSampler(SPACE, seed=0, learn_from_enqueued=learn)
        st = optuna.create_study(direction="maximize", sampler=s)
        st.optimize(lambda t: (SPACE.suggest(t), 0.0)[1], n_trials=4)  # a baseline of 0
        for _ in range(20):
            st.enqueue_trial(arch.to_params())
        st.optimize(lambda t: (SPACE.suggest(t), 1.0)[1], n_trials=20)
        with torch.no_grad():
            return float(s.controller.log_prob([code])[0])

    assert log_prob(True) > log_prob(False) + 5  # about 15 nats measured


def test_a_fixed_space_that_disagrees_falls_back_with_one_warning():
    other = {n: optuna.distributions.CategoricalDistribution(d.choices) for n, d in SPACE.items()}
    other["act"] = optuna.distributions.CategoricalDistribution(("relu", "gelu"))
    s = RONASSampler(other, seed=0)
    st = optuna.create_study(direction="maximize", sampler=s)
    with pytest.warns(UserWarning, match="'act'") as record:
        st.optimize(Landscape(SPACE, seed=0), n_trials=5)
    assert sum("'act'" in str(w.message) for w in record) == 1
    assert all(t.state == TrialState.COMPLETE for t in st.trials)
    assert s.controller.n_observed == 5


def _joined(storage, **kw):
    """A new sampler on the stored study, after it caught up (as a joining worker would)."""
    study = optuna.load_study(study_name="j", storage=storage)
    s = RONASSampler(SPACE, seed=3, **kw)
    credited = []
    real = s._credit
    s._credit = lambda t, r: credited.append(t.number) or real(t, r)
    params = s.most_likely_params(study)
    return s, params, credited


def test_a_joining_worker_starts_from_the_stored_snapshot_bit_equal_to_a_replay(tmp_path):
    storage = f"sqlite:///{tmp_path / 'j.db'}"
    land = Landscape(SPACE, seed=0)
    study = optuna.create_study(study_name="j", storage=storage, direction="maximize")
    study.sampler = RONASSampler(SPACE, seed=3, snapshot_every=10)
    study.optimize(land, n_trials=35)
    snap = study._storage.get_study_system_attrs(study._study_id)["ronas:controller"]
    assert snap["upto"] == 29  # trial 30 was told after the last sample
    fast, p_fast, credited_fast = _joined(storage, snapshot_every=10)
    slow, p_slow, credited_slow = _joined(storage, snapshot_every=0)  # full replay
    assert credited_fast == list(range(30, 35)) and credited_slow == list(range(35))
    assert p_fast == p_slow
    for a, b in zip(fast.controller.state_dict().values(), slow.controller.state_dict().values()):
        assert torch.equal(a, b)
    assert fast.controller.baseline == slow.controller.baseline
    # and draw the same architecture for the next trial
    assert fast.controller.sample(fast._generator(35)) == slow.controller.sample(slow._generator(35))
    # every attr fits MySQL's 64 KiB TEXT column (the controller's state is chunked)
    attrs = study._storage.get_study_system_attrs(study._study_id)
    assert max(len(json.dumps(v).encode()) for v in attrs.values()) < 64 * 1024
    assert snap["chunks"] == len([k for k in attrs if k.startswith("ronas:controller:")]) > 1


def test_a_snapshot_whose_chunks_were_overwritten_mid_read_is_replayed_instead(tmp_path):
    storage = f"sqlite:///{tmp_path / 'j.db'}"
    study = optuna.create_study(study_name="j", storage=storage, direction="maximize")
    study.sampler = RONASSampler(SPACE, seed=3, snapshot_every=10)
    study.optimize(Landscape(SPACE, seed=0), n_trials=12)
    study._storage.set_study_system_attr(study._study_id, "ronas:controller:0", "AAAA")  # a newer write
    _, _, credited = _joined(storage, snapshot_every=10)
    assert credited == list(range(12))  # the digest does not match: a full replay


def test_a_snapshot_of_another_configuration_is_ignored(tmp_path):
    storage = f"sqlite:///{tmp_path / 'j.db'}"
    study = optuna.create_study(study_name="j", storage=storage, direction="maximize")
    study.sampler = RONASSampler(SPACE, seed=3, snapshot_every=5)
    study.optimize(Landscape(SPACE, seed=0), n_trials=12)
    assert study._storage.get_study_system_attrs(study._study_id)["ronas:controller"]["upto"] == 9
    other = RONASSampler(SPACE, seed=4)  # another seed: another controller
    seen = []
    real = other._credit
    other._credit = lambda t, r: seen.append(t.number) or real(t, r)
    other.most_likely_params(optuna.load_study(study_name="j", storage=storage))
    assert seen == list(range(12))


def test_a_snapshot_from_another_learning_version_is_ignored(tmp_path, monkeypatch):
    """A state stored by a version whose learning arithmetic differed would not equal a replay."""
    from ronas_optuna.controller import Controller

    storage = f"sqlite:///{tmp_path / 'j.db'}"
    study = optuna.create_study(study_name="j", storage=storage, direction="maximize")
    study.sampler = RONASSampler(SPACE, seed=3, snapshot_every=5)
    study.optimize(Landscape(SPACE, seed=0), n_trials=12)
    monkeypatch.setattr(Controller, "learning_version", Controller.learning_version + 1)
    _, _, credited = _joined(storage, snapshot_every=5)
    assert credited == list(range(12))


def test_no_snapshot_once_trials_were_learned_out_of_order():
    study = optuna.create_study(direction="maximize", sampler=RONASSampler(SPACE, seed=0, snapshot_every=2))
    a, b = study.ask(), study.ask()
    for t in (a, b):
        SPACE.suggest(t)
    study.tell(b, 0.5)  # trial 1 finishes first: the in-order prefix is broken for this sampler
    study.tell(a, 0.4)
    study.optimize(Landscape(SPACE, seed=0), n_trials=6)
    assert "ronas:controller" not in study._storage.get_study_system_attrs(study._study_id)


def test_a_study_keeps_the_controller_config_it_was_started_with(tmp_path):
    from ronas_optuna.controller import ControllerConfig

    storage = f"sqlite:///{tmp_path / 'c.db'}"
    old = ControllerConfig(temperature=1.0)  # e.g. an earlier version's default
    study = optuna.create_study(study_name="c", storage=storage, direction="maximize")
    study.sampler = RONASSampler(SPACE, seed=3, controller_config=old)
    _run(study, 12)
    assert (
        study._storage.get_study_system_attrs(study._study_id)["ronas:controller_config"]["temperature"]
        == 1.0
    )
    resumed = RONASSampler(SPACE, seed=3)  # no config given: the study's own
    same = RONASSampler(SPACE, seed=3, controller_config=old)
    assert resumed.most_likely_params(optuna.load_study(study_name="c", storage=storage)) == (
        same.most_likely_params(optuna.load_study(study_name="c", storage=storage))
    )
    assert resumed.controller.config == old
    changed = RONASSampler(SPACE, seed=3, controller_config=ControllerConfig(temperature=2.0))
    with pytest.warns(UserWarning, match=r"temperature=2.0 \(study: 1.0\)"):
        changed.most_likely_params(optuna.load_study(study_name="c", storage=storage))
    assert changed.controller.config.temperature == 2.0
    fresh = optuna.create_study(direction="maximize", sampler=resumed)  # another study: the sampler's own
    _run(fresh, 1)
    assert resumed.controller.config == ControllerConfig()


def _scored(trial: optuna.Trial) -> float:
    """A deterministic objective of the architecture (a fixed score per decision and choice)."""
    arch = SPACE.suggest(trial)
    return sum(hash_score(name, str(choice)) for name, choice in arch.to_params().items())


def hash_score(name: str, choice: str) -> float:
    import hashlib

    return int(hashlib.sha256(f"{name}={choice}".encode()).hexdigest()[:6], 16) / 16**6


def test_a_pickled_sampler_resumes_the_study_exactly_and_deep_copies(tmp_path):
    import copy
    import pickle

    def proposals(study):
        return [t.params for t in study.trials]

    whole = optuna.create_study(
        direction="maximize", sampler=RONASSampler(SPACE, seed=4), storage=f"sqlite:///{tmp_path / 'a.db'}"
    )
    whole.optimize(_scored, n_trials=14)
    url = f"sqlite:///{tmp_path / 'b.db'}"
    first = optuna.create_study(direction="maximize", sampler=RONASSampler(SPACE, seed=4), storage=url)
    first.optimize(_scored, n_trials=8)
    (tmp_path / "sampler.pkl").write_bytes(pickle.dumps(first.sampler))
    restored = pickle.loads((tmp_path / "sampler.pkl").read_bytes())
    resumed = optuna.load_study(study_name=first.study_name, storage=url, sampler=restored)
    resumed.optimize(_scored, n_trials=6)
    assert proposals(resumed) == proposals(whole)
    twin = copy.deepcopy(resumed.sampler)
    assert twin is not resumed.sampler and twin.most_likely_params(resumed) == restored.most_likely_params(
        resumed
    )


@pytest.mark.parametrize("mode, expected", [("last", [0.2, 0.4, 0.6]), ("mean", [0.2, 0.3, 0.4])])
def test_repeat_reward_averages_the_evaluations_of_one_architecture(mode, expected):
    from ronas_optuna import ControllerConfig

    s = RONASSampler(SPACE, seed=0, controller_config=ControllerConfig(repeat_reward=mode))
    st = optuna.create_study(direction="maximize", sampler=s)
    values = iter([0.2, 0.4, 0.6])
    st.optimize(lambda t: (SPACE.suggest(t), next(values))[1], n_trials=1)
    for _ in range(2):
        st.enqueue_trial(st.trials[0].params)  # the same architecture twice more
    st.optimize(lambda t: (SPACE.suggest(t), next(values))[1], n_trials=2)
    assert [s._reward(st, t.state, t.values, t) for t in st.trials] == pytest.approx(expected)


def test_repeat_reward_is_checked():
    from ronas_optuna import ControllerConfig

    with pytest.raises(ValueError, match="repeat_reward must be"):
        ControllerConfig(repeat_reward="max")


def test_a_parameter_outside_the_controller_is_named_once_and_failure_reward_must_be_finite():
    import warnings

    with pytest.raises(ValueError, match="failure_reward must be a finite number"):
        RONASSampler(seed=0, failure_reward=float("nan"))
    space = {"op": optuna.distributions.CategoricalDistribution(["a", "b"])}
    study = optuna.create_study(sampler=RONASSampler(space, seed=0), direction="maximize")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study.optimize(
            lambda t: (
                (t.suggest_categorical("op", ["a", "b"]) == "a") + t.suggest_float("lr", 1e-4, 1e-1, log=True)
            ),
            n_trials=4,
        )
    named = [str(w.message) for w in caught if "'lr' is not a controller decision" in str(w.message)]
    assert len(named) == 1 and "sampled by univariate TPE" in named[0]  # once, not per trial
    quiet = RONASSampler(space, seed=0, independent_sampler=optuna.samplers.RandomSampler(seed=0))
    study = optuna.create_study(sampler=quiet, direction="maximize")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study.optimize(
            lambda t: (
                t.suggest_float("lr", 1e-4, 1e-1, log=True) + (t.suggest_categorical("op", ["a", "b"]) == "a")
            ),
            n_trials=3,
        )
    assert not [w for w in caught if "RONASSampler" in str(w.message)]  # a sampler the user chose


def test_numeric_parameters_are_searched_by_tpe_by_default():
    """A learning rate beside the architecture: the default independent sampler finds its optimum
    (1e-3) as TPE does; uniform draws do not."""

    def obj(t):
        SPACE.suggest(t)
        return abs(math.log10(t.suggest_float("lr", 1e-6, 1.0, log=True)) + 3)

    def distance(**kw):
        st = optuna.create_study(sampler=RONASSampler(SPACE, seed=0, **kw))
        st.optimize(obj, n_trials=60)
        return np.mean([t.value for t in st.trials[-30:]])

    uniform = distance(independent_sampler=TrialKeyedRandomSampler(0))
    assert distance() < uniform / 2


def test_a_study_without_categorical_parameters_is_said_to_be_random():
    import warnings

    study = optuna.create_study(sampler=RONASSampler(seed=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=5)
    said = [str(w.message) for w in caught if "no decision to learn" in str(w.message)]
    assert len(said) == 1


# ---------------------------------------------------------------------------- constraints
def _constrained_toy(trial, *, tell="set_constraint"):
    """Eight 4-way decisions; maximise their sum, feasible while it is at most 12."""
    picks = [trial.suggest_categorical(f"d{i}", [0, 1, 2, 3]) for i in range(8)]
    trial.set_user_attr("violation", sum(picks) - 12)
    if tell == "set_constraint":
        trial.set_constraint("sum", sum(picks) - 12)
    return float(sum(picks) + 0.01 * picks[0])


@pytest.mark.parametrize("tell", ["set_constraint", "constraints_func"])
def test_constraints_keep_the_policy_feasible(tell):
    """Told the constraint (either way), the policy stays on the feasible side of the optimum; not
    told, it climbs over it: the reward is what keeps it feasible."""

    def feasible_share(sampler, how):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(lambda t: _constrained_toy(t, tell=how), n_trials=150)
        return np.mean([t.user_attrs["violation"] <= 0 for t in study.trials[-50:]]), study

    func = (lambda t: [t.user_attrs["violation"]]) if tell == "constraints_func" else None
    told, study = feasible_share(RONASSampler(seed=0, constraints_func=func), tell)
    blind, _ = feasible_share(RONASSampler(seed=0), "none")
    assert told >= 0.7 and blind <= 0.1
    assert all(len(t.constraints) == 1 for t in study.trials)  # constraints_func's values are stored


def test_an_infeasible_trial_earns_less_than_every_earlier_feasible_one_and_never_shadows_the_front():
    sampler = RONASSampler(seed=0)
    single = optuna.create_study(direction="maximize", sampler=sampler)
    for value, violation in [(0.5, 0.0), (0.7, 0.0), (0.9, 0.0), (0.99, 2.0), (0.99, 0.5)]:
        t = optuna.trial.create_trial(value=value, system_attrs={"constraints": [violation]})
        single.add_trial(t)
    trials = single.trials
    rewards = [sampler._reward(single, t.state, t.values, t) for t in trials]
    assert rewards[:3] == [0.5, 0.7, 0.9]
    assert rewards[3] < rewards[4] < 0.5  # below every feasible one, lower the further out

    multi = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for values, violation in [((0.9, 1.0), 1.0), ((0.5, 2.0), 0.0), ((0.6, 1.5), 0.0)]:
        multi.add_trial(optuna.trial.create_trial(values=values, system_attrs={"constraints": [violation]}))
    infeasible, _, feasible = multi.trials
    assert sampler._reward(multi, feasible.state, feasible.values, feasible) > 0  # not shadowed
    assert sampler._reward(multi, infeasible.state, infeasible.values, infeasible) < -1


def test_constraints_func_must_be_callable():
    with pytest.raises(ValueError, match="constraints_func must be callable"):
        RONASSampler(constraints_func=3)


@pytest.mark.parametrize("attrs", [{"ronas:no_credit": True}, {"phase": "finetune"}])
def test_a_trial_marked_no_credit_or_a_finetuning_trial_teaches_nothing(attrs):
    s = RONASSampler(SPACE, seed=0)
    st = optuna.create_study(direction="maximize", sampler=s)
    land = Landscape(SPACE, seed=0)
    st.optimize(land, n_trials=1)
    seen = _spy(s)
    st.enqueue_trial(SPACE.sample(np.random.default_rng(3)).to_params(), user_attrs=attrs)
    st.optimize(land, n_trials=2)
    assert len(seen) == 1  # only the drawn trial


def test_a_multi_objective_reward_does_not_depend_on_which_worker_computes_it(tmp_path):
    """Worker B finishes trial 2 while A's trial 1 still runs: B waits for it before rewarding trial
    2 (whose reward reads the earlier trials), so B's rewards equal those of a replay afterwards."""
    storage = f"sqlite:///{tmp_path / 'w.db'}"
    optuna.create_study(study_name="w", storage=storage, directions=["maximize", "minimize"])

    def worker():
        s = RONASSampler(SPACE, seed=0)
        rewards = {}
        real = s._credit

        def credit(t, r):
            rewards[t.number] = r
            real(t, r)

        s._credit = credit
        return optuna.load_study(study_name="w", storage=storage, sampler=s), s, rewards

    a, _, _ = worker()
    b, _, rewards_b = worker()
    first = b.ask()
    SPACE.suggest(first)
    b.tell(first, [0.5, 2.0])  # trial 0: nothing to compare with
    slow = a.ask()  # trial 1, running on A
    SPACE.suggest(slow)
    fast = b.ask()  # trial 2, on B
    SPACE.suggest(fast)
    b.tell(fast, [0.6, 1.5])
    assert 2 not in rewards_b  # waited: trial 1 may still change trial 2's comparison set
    a.tell(slow, [0.9, 1.0])  # trial 1 dominates trial 2
    nxt = b.ask()  # B catches up before it samples
    SPACE.suggest(nxt)
    _, replay, rewards_replay = worker()
    replay.most_likely_params(optuna.load_study(study_name="w", storage=storage))
    assert rewards_b[2] == rewards_replay[2] < 0  # dominated by trial 1, as the replay says
    assert rewards_b[1] == rewards_replay[1]


def test_new_options_are_marked_experimental_as_optuna_marks_them():
    with pytest.warns(optuna.exceptions.ExperimentalWarning, match="constraints_func"):
        RONASSampler(SPACE, seed=0, constraints_func=lambda t: [0.0])
    with pytest.warns(optuna.exceptions.ExperimentalWarning, match="pareto_scale"):
        RONASSampler(SPACE, seed=0, controller_config=ControllerConfig(pareto_scale="value"))
