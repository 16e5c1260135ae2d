import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from ronas_optuna import SearchSettings
from ronas_optuna.attrs import constraints_func
from ronas_optuna.data import MSDDataset
from ronas_optuna.errors import SettingsError
from ronas_optuna.final import best_trial
from ronas_optuna.objective import NASObjective
from ronas_optuna.sampler import RONASSampler
from ronas_optuna.search_state import FinetuneProgress
from ronas_optuna.space import Architecture


def test_search_records_everything_and_works_with_any_sampler(make_objective, tmp_path):
    obj = make_objective()
    for sampler in (RONASSampler(obj.supernet.space, seed=0), optuna.samplers.TPESampler(seed=0)):
        st = optuna.create_study(direction="maximize", sampler=sampler)
        st.optimize(obj, n_trials=3)
        t = st.trials[-1]
        assert t.state == TrialState.COMPLETE and 0 <= t.value <= 1
        keys = ("arch", "dice_per_class", "params", "flops", "train_loss", "seconds", "memory_gb")
        for key in keys:
            assert key in t.user_attrs, key
        assert t.user_attrs["memory_method"] == "saved-tensors"
        assert len(t.user_attrs["dice_per_class"]) == 2
        assert t.value == pytest.approx(np.mean(t.user_attrs["dice_per_class"]), abs=1e-4)
    assert (tmp_path / "sn.pt").exists() and obj.trials_trained == 6


def test_validation_set_is_fixed_and_training_moves_only_the_path(make_objective, synthetic_root):
    obj = make_objective(checkpoint=None)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    before = {k: v.clone() for k, v in obj.supernet.state_dict().items()}
    st.optimize(obj, n_trials=1)
    arch = obj.supernet._arch(st.trials[0].params)
    on_path = {id(p) for p in obj.supernet.path_parameters(arch)}
    names = {id(p): n for n, p in obj.supernet.named_parameters()}
    changed = {n for n, p in obj.supernet.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= {names[i] for i in on_path}
    assert obj.evaluator.case_ids == MSDDataset(synthetic_root).split(seed=0)[1]


def test_failing_trial_is_recorded_and_weights_restored(make_objective, monkeypatch):
    obj = make_objective(checkpoint=None)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=1)
    state = {k: v.clone() for k, v in obj.supernet.state_dict().items()}
    opt = obj.trainer.optimizer
    opt_state = {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
    import ronas_optuna.trainer as mod

    real = mod.deep_supervision_loss
    calls = {"n": 0}

    def nan_loss(out, y, **kw):
        calls["n"] += 1
        loss = real(out, y, **kw)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(mod, "deep_supervision_loss", nan_loss)
    st.optimize(obj, n_trials=1)
    t = st.trials[-1]
    assert calls["n"] >= 2
    assert t.state == TrialState.FAIL and "non-finite" in t.user_attrs["fail_reason"]
    for k, v in obj.supernet.state_dict().items():
        assert torch.equal(v, state[k]), k
    for p, s in opt.state.items():
        if id(p) in opt_state:
            assert all(torch.equal(s[k], opt_state[id(p)][k]) for k in s)
        else:
            pytest.fail("optimizer gained state from a failed trial")
    monkeypatch.setattr(mod, "deep_supervision_loss", real)
    st.optimize(obj, n_trials=1)  # the study goes on
    assert st.trials[-1].state == TrialState.COMPLETE


def test_memory_budget_is_a_constraint_and_a_penalty(make_objective):
    obj = make_objective(checkpoint=None, memory_budget_gb=1e-9, budget_penalty=0.0)
    sampler = RONASSampler(obj.supernet.space, seed=0)
    st = optuna.create_study(direction="maximize", sampler=sampler)
    st.optimize(obj, n_trials=2)
    t = st.trials[0]
    assert t.state == TrialState.COMPLETE and t.value == 0.0 and t.user_attrs["over_budget"]
    assert constraints_func(t)[0] > 0 and t.system_attrs["constraints:memory_gb"] > 0
    assert obj.trials_trained == 0
    sampler.most_likely_params(st)
    assert sampler.controller.n_observed == 2
    tpe = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    tpe.optimize(obj, n_trials=1)
    assert tpe.trials[0].value == 0.0 and tpe.trials[0].user_attrs["over_budget"]
    with pytest.raises(ValueError, match="within budget"):
        best_trial(st)


def test_budget_that_fits_trains_normally(make_objective):
    obj = make_objective(checkpoint=None, memory_budget_gb=100.0)
    st = optuna.create_study(direction="maximize")
    st.optimize(obj, n_trials=1)
    assert obj.trials_trained == 1 and st.trials[0].user_attrs["constraints"][0] < 0


def test_pruner_gets_intermediate_values(make_objective):
    obj = make_objective(checkpoint=None, prune_checks=1, steps_per_trial=4)

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    st = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    st.optimize(obj, n_trials=1)
    t = st.trials[0]
    assert t.state == TrialState.PRUNED and list(t.intermediate_values) == [2]
    assert obj.trials_trained == 1  # its steps did train the shared weights


def test_supernet_persists_across_objectives_via_checkpoint(make_objective):
    obj = make_objective()
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=2)
    obj.save()
    again = make_objective()
    for (k, a), (_, b) in zip(obj.supernet.state_dict().items(), again.supernet.state_dict().items()):
        assert torch.equal(a, b), k
    assert again.trials_trained == 2
    assert len(again.trainer.optimizer.state) == len(obj.trainer.optimizer.state) > 0


def test_hooks_get_the_trained_path_and_its_patch(make_objective):
    obj = make_objective(checkpoint=None)
    seen = []
    obj.hooks.append(
        lambda trial, arch, value, net, patch: seen.append((trial.number, arch, value, net, patch))
    )
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=2)
    assert [s[0] for s in seen] == [0, 1]
    _number, arch, value, net, patch = seen[1]
    assert value == st.trials[1].value and patch == obj.patch_for(arch)
    # the hook's net is the supernet path itself: it scores what the trial scored
    assert obj.evaluator.evaluate(net, patch).mean == pytest.approx(value, abs=1e-6)


def test_warmup_runs_once_and_is_checkpointed(make_objective):
    obj = make_objective(warmup_steps=3)
    before = {k: v.clone() for k, v in obj.supernet.state_dict().items()}
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=1)
    assert obj.warmup_done == 3
    assert any(not torch.equal(v, before[k]) for k, v in obj.supernet.state_dict().items())
    assert make_objective(warmup_steps=3).warmup_done == 3  # resumed: not repeated


def test_fair_warmup_trains_the_fair_paths(make_objective, monkeypatch):
    obj = make_objective(warmup_steps=4, warmup_sampling="fair")
    trained = []
    train = obj.train
    monkeypatch.setattr(obj, "train", lambda arch, *a, **kw: trained.append(arch) or train(arch, *a, **kw))
    obj.warmup()
    space, seed = obj.supernet.space, obj.trainer.seed
    assert trained == [space.fair_sample(i, seed=seed) for i in range(4)] and obj.warmup_done == 4


def test_constructor_checks_its_arguments(make_objective):
    obj = make_objective(checkpoint=None)
    with pytest.raises(ValueError, match="steps_per_trial must be >= 1"):
        SearchSettings.from_options(steps_per_trial=0)
    with pytest.raises(ValueError, match="warmup_sampling must be one of uniform, fair, got 'sandwich'"):
        SearchSettings.from_options(warmup_sampling="sandwich")
    from ronas_optuna import SearchSpace, Supernet

    no_patch = Supernet(SearchSpace.default(depth=2, base_width=4, max_width=8), 1, 3)
    with pytest.raises(ValueError, match="patch_size"):
        NASObjective(no_patch, obj.trainer, obj.evaluator)


def test_each_trial_records_where_its_time_went(make_objective):
    obj = make_objective(warmup_steps=2)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=2)
    first, second = (t.user_attrs["time_s"] for t in st.trials)
    assert {"sampler", "warmup", "train", "validate"} <= set(first) and "checkpoint" not in first
    assert "warmup" not in second and "checkpoint" in second  # checkpoint_every=2
    assert all(v >= 0 for v in first.values()) and first["train"] > 0 and first["validate"] > 0


def test_the_reward_uses_a_fixed_subset_of_validation_cases(make_objective):
    full = make_objective(checkpoint=None, val_ids=["case_000", "case_001"], train_ids=["case_002"])
    part = make_objective(
        checkpoint=None, val_ids=["case_000", "case_001"], train_ids=["case_002"], reward_cases=1
    )
    assert [c.case_id for c in part.reward_cases] == ["case_000"] and len(full.reward_cases) == 2
    arch = part.supernet.space.sample(np.random.default_rng(0))
    assert part.validate(arch).per_case == full.validate(arch).per_case[:1]
    assert part.validate(arch, all_cases=True) == full.validate(arch)


def test_cosine_schedule_spans_the_planned_search_and_survives_a_resume(make_objective, tmp_path):
    obj = make_objective(lr_schedule="cosine", warmup_steps=2, finetune_steps=4, lr=1e-2)
    obj.planned_trials = 3
    assert obj.planned_steps == 2 + 3 * 3 + 4
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=2)
    from ronas_optuna.schedule import cosine_factor

    last = 2 + 1 * 3 + 2  # trial 1's last step in the plan
    assert obj.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * cosine_factor(last, 15))
    assert obj.trainer.lr == 1e-2
    obj.save()
    again = make_objective(lr_schedule="cosine", warmup_steps=2, finetune_steps=4, lr=1e-2)
    again.planned_trials = 3
    st.optimize(again, n_trials=1)  # trial 2 continues the same curve
    assert again.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * cosine_factor(10, 15))


def test_an_enqueued_trial_with_steps_trains_that_many_and_is_not_pruned(make_objective, monkeypatch):
    obj = make_objective(checkpoint=None, prune_checks=2)
    calls = []
    real = obj.trainer.train
    monkeypatch.setattr(obj.trainer, "train", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=1)
    assert calls == [1, 1, 1]  # 3 steps in prune_checks + 1 chunks
    calls.clear()
    st.enqueue_trial(st.trials[0].params, user_attrs={"steps": 7, "phase": "finetune"})
    st.optimize(obj, n_trials=1)
    assert calls == [7] and st.trials[-1].state == TrialState.COMPLETE


def test_the_fine_tuning_trial_ends_with_the_moving_average_of_its_weights(make_objective, monkeypatch):
    obj = make_objective(checkpoint=None, finetune_average=0.5)
    raw = []  # (the trained parameters, their values after each step) per train() call
    real = obj.trainer.train

    def spy(forward, params, *a, after_step=None, **k):
        raw.append((params, []))

        def record():
            raw[-1][1].append([p.detach().clone() for p in params])
            if after_step is not None:
                after_step()

        return real(forward, params, *a, after_step=record, **k)

    monkeypatch.setattr(obj.trainer, "train", spy)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=1)
    params, steps = raw[-1]
    assert all(torch.equal(p, v) for p, v in zip(params, steps[-1]))  # a trial: the last weights
    expect = [p.detach().clone() for p in params]
    st.enqueue_trial(st.trials[0].params, user_attrs={"steps": 3, "phase": "finetune"})
    st.optimize(obj, n_trials=1)
    params, steps = raw[-1]
    assert len(steps) == 3
    for values in steps:
        expect = [0.5 * e + 0.5 * v for e, v in zip(expect, values)]
    for p, e in zip(params, expect):
        torch.testing.assert_close(p.detach(), e)
    assert not all(torch.equal(p, v) for p, v in zip(params, steps[-1]))
    assert st.trials[-1].state == TrialState.COMPLETE


@pytest.mark.parametrize("optimizer", ["kept", "fresh"])
def test_the_fine_tuning_trial_starts_adam_anew_when_asked(make_objective, optimizer):
    obj = make_objective(checkpoint=None, finetune_optimizer=optimizer)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=1)  # 3 steps along this path
    st.enqueue_trial(st.trials[0].params, user_attrs={"steps": 2, "phase": "finetune"})
    st.optimize(obj, n_trials=1)
    params = obj.supernet.path(Architecture.from_params(obj.supernet.space, st.trials[0].params))
    steps = {float(obj.trainer.optimizer.state[p]["step"]) for p in params.parameters_on_path()}
    assert steps == ({2.0} if optimizer == "fresh" else {5.0})
    assert st.trials[-1].state == TrialState.COMPLETE


def test_the_fine_tuning_trial_takes_the_plans_last_steps_however_many_trials_ran(make_objective):
    obj = make_objective(checkpoint=None, lr_schedule="anneal", finetune_steps=4, lr=1e-2)
    obj.planned_trials = 5  # 15 search steps planned, only 1 trial runs
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=1)
    assert obj.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2)
    st.enqueue_trial(st.trials[0].params, user_attrs={"steps": 4, "phase": "finetune"})
    st.optimize(obj, n_trials=1)
    assert obj.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.02)  # annealed to the floor


def test_the_fine_tuning_trial_can_train_on_training_and_validation_cases(make_objective, monkeypatch):
    obj = make_objective(checkpoint=None, finetune_data="train+val", finetune_steps=2)
    seen = []
    real = obj.trainer.train
    monkeypatch.setattr(
        obj.trainer,
        "train",
        lambda *a, **k: seen.append([c.case_id for c in obj.trainer.cases]) or real(*a, **k),
    )
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=1)
    st.enqueue_trial(st.trials[0].params, user_attrs={"steps": 2, "phase": "exploit"})
    st.optimize(obj, n_trials=1)
    train, val = seen[0], obj.evaluator.case_ids
    assert seen[-1] == train + val and not set(train) & set(val)
    assert [c.case_id for c in obj.trainer.cases] == train  # back to the training cases afterwards


def test_distillation_teaches_each_trial_from_the_best_path_so_far(make_objective, monkeypatch):
    obj = make_objective(checkpoint=None, distill_weight=0.5, warmup_steps=1)
    taught = []
    real = obj.trainer.train
    monkeypatch.setattr(
        obj.trainer,
        "train",
        lambda *a, **k: taught.append((k.get("teacher"), k.get("distill_weight"))) or real(*a, **k),
    )
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=4)
    assert taught[0][0] is None and taught[1][0] is None  # warm-up, and the first trial: no best yet
    space = obj.supernet.space
    for i, trial in enumerate(st.trials[1:], start=1):
        best = max(st.trials[:i], key=lambda t: t.value)
        arch = Architecture.from_params(space, trial.params)
        teacher = taught[i + 1][0]
        if Architecture.from_params(space, best.params) == arch:
            assert teacher is None
        else:
            assert teacher.arch == Architecture.from_params(space, best.params) and taught[i + 1][1] == 0.5
    best = Architecture.from_code(space, obj.best_snapshot["arch"])
    assert obj.teacher_for(best) is None
    # the fine-tuning trains its path on its own, also a path other than the anchor
    other = next(t for t in st.trials if Architecture.from_params(space, t.params) != best)
    st.enqueue_trial(other.params, user_attrs={"steps": 2, "phase": "exploit"})
    n = len(taught)
    st.optimize(obj, n_trials=1)
    assert len(taught) > n and all(teacher is None for teacher, _ in taught[n:])
    with pytest.raises(ValueError, match="distill_weight must be >= 0"):
        SearchSettings.from_options(distill_weight=-1.0)


def _weights(obj) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in obj.supernet.state_dict().items()}


def _record_training(obj, monkeypatch) -> list[tuple[Architecture, int, int, object]]:
    """(path, steps, patch-stream start, teacher) of every ``trainer.train`` call from now on."""
    calls = []
    real = obj.trainer.train

    def train(net, params, patch, steps, **k):
        calls.append((net.arch, steps, k["start"], k["teacher"].arch if k["teacher"] is not None else None))
        return real(net, params, patch, steps, **k)

    monkeypatch.setattr(obj.trainer, "train", train)
    return calls


def test_anchoring_trains_the_best_path_after_every_kth_trial(make_objective, monkeypatch):
    obj = make_objective(checkpoint=None, anchor_every=2, steps_per_trial=2)
    calls = _record_training(obj, monkeypatch)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    space = obj.supernet.space
    before = {}  # the weights when the trial's hooks ran: after its training, before anchoring
    obj.hooks.append(lambda *a: before.update(_weights(obj)))
    for n in range(4):
        st.optimize(obj, n_trials=1)
        trial = st.trials[-1]
        if n % 2 == 0:
            assert "anchor" not in trial.user_attrs and len(calls) == 1
        else:
            best = Architecture.from_params(space, max(st.trials, key=lambda t: t.value).params)
            assert trial.user_attrs["anchor"] == best.code
            (path, _, start, _), (anchored, a_steps, a_start, _) = calls
            assert path == Architecture.from_params(space, trial.params)
            assert anchored == best and a_steps == 2 and a_start >= 2**41 > start
            ids = {id(q) for q in obj.supernet.path_parameters(best)}
            on_path = {k for k, q in obj.supernet.named_parameters() if id(q) in ids}
            moved = {k for k, q in obj.supernet.named_parameters() if not torch.equal(q, before[k])}
            assert moved and moved <= on_path  # the anchor's steps move its path only
            assert "anchor" in trial.user_attrs["time_s"]
        calls.clear()
    assert obj.trials_trained == 4
    starts = [c[2] for c in calls]
    assert len(set(starts)) == len(starts)


def test_the_fine_tuning_trial_is_never_followed_by_anchoring(make_objective, monkeypatch):
    obj = make_objective(checkpoint=None, anchor_every=1, steps_per_trial=1)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=1)
    calls = _record_training(obj, monkeypatch)
    st.enqueue_trial(st.trials[0].params, user_attrs={"steps": 2, "phase": "finetune"})
    st.optimize(obj, n_trials=1)
    assert [c[1] for c in calls] == [2] and "anchor" not in st.trials[-1].user_attrs


def test_a_handmade_anchor_teaches_every_trial_and_is_refused_where_the_space_has_none(
    make_objective, monkeypatch, synthetic_root, tmp_path
):
    obj = make_objective(checkpoint=None, anchor="handmade", distill_weight=0.5, steps_per_trial=1)
    calls = _record_training(obj, monkeypatch)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=2)  # before any best trial: the DynUNet-like member already teaches
    handmade = obj.supernet.space.handmade()
    assert [c[3] for c in calls] == [handmade, handmade] and obj.anchor_path() == handmade
    assert obj.teacher_for(handmade) is None
    from ronas_optuna import Supernet
    from ronas_optuna.space import SearchSpace

    space = SearchSpace.default(depth=2, base_width=4, activations=("relu",), patch_sizes=[(16, 16, 16)])
    sn = Supernet(space, 1, 3)
    settings = SearchSettings.from_options(anchor="handmade", anchor_every=3)
    with pytest.raises(SettingsError, match="anchor 'handmade': decision 'act' has no DynUNet-like"):
        NASObjective(sn, obj.trainer, obj.evaluator, settings=settings)
    NASObjective(sn, obj.trainer, obj.evaluator, settings=settings.replace(anchor_every=0))  # unused


def test_a_failed_anchor_puts_its_path_back_and_the_trial_keeps_its_value(make_objective, monkeypatch):
    obj = make_objective(checkpoint=None, anchor_every=1, steps_per_trial=1)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    import ronas_optuna.trainer as mod

    real, calls = mod.deep_supervision_loss, {"n": 0}

    def nan_on_the_anchor(out, y, **kw):  # the first trial's one step, then its anchor's
        calls["n"] += 1
        loss = real(out, y, **kw)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(mod, "deep_supervision_loss", nan_on_the_anchor)
    after_trial = {}
    obj.hooks.append(lambda *a: after_trial.update(_weights(obj)))
    st.optimize(obj, n_trials=1)
    t = st.trials[0]
    assert t.state == TrialState.COMPLETE and "non-finite" in t.user_attrs["anchor_fail_reason"]
    assert "anchor" not in t.user_attrs
    assert all(torch.equal(v, after_trial[k]) for k, v in obj.supernet.state_dict().items())


@pytest.mark.parametrize("error", ["bug", "failure"])
def test_a_trial_fails_only_on_a_failure_and_a_bug_propagates_with_the_weights_restored(
    make_objective, error
):
    from ronas_optuna.trainer import TrialFailure

    obj = make_objective(checkpoint=None)
    before = {k: v.clone() for k, v in obj.supernet.state_dict().items()}
    real = obj.trainer.train

    def broken(*a, **kw):
        real(*a, **kw)  # the weights move, then it goes wrong
        raise KeyError("a bug") if error == "bug" else TrialFailure("non-finite loss")

    obj.trainer.train = broken
    study = optuna.create_study(direction="maximize")
    if error == "bug":
        with pytest.raises(KeyError, match="a bug"):
            study.optimize(obj, n_trials=1)
    else:
        study.optimize(obj, n_trials=1)
        assert study.trials[0].state == optuna.trial.TrialState.FAIL
        assert study.trials[0].user_attrs["fail_reason"] == "non-finite loss"
    assert all(torch.equal(v, obj.supernet.state_dict()[k]) for k, v in before.items())


def test_two_objectives_return_dice_and_the_measured_cost_once_per_architecture(make_objective):
    obj = make_objective(checkpoint=None, objectives="dice,latency")
    st = optuna.create_study(directions=["maximize", "minimize"], sampler=RONASSampler(seed=0))
    st.optimize(obj, n_trials=3)
    for t in st.trials:
        assert t.state == TrialState.COMPLETE and len(t.values) == 2
        assert t.values[1] == pytest.approx(t.user_attrs["latency_ms"]) and t.values[1] > 0
    same = st.trials[0].params
    st.enqueue_trial(same)
    measured = len(obj.costs)
    st.optimize(obj, n_trials=1)
    assert len(obj.costs) == measured  # the repeated architecture is not measured again
    assert st.trials[-1].user_attrs["latency_ms"] == st.trials[0].user_attrs["latency_ms"]


def test_study_note_lists_the_front_cheapest_first():
    from ronas_optuna.dashboard import front_table

    st = optuna.create_study(directions=["maximize", "minimize"])
    st.set_metric_names(["dice", "memory_gb"])
    for dice, gb, arch in [(0.8, 2.0, "big"), (0.6, 1.0, "small"), (0.5, 3.0, "worse")]:
        st.add_trial(optuna.trial.create_trial(values=[dice, gb], user_attrs={"memory_gb": gb, "arch": arch}))
    rows = front_table(st)
    assert rows[2] == "| trial | Dice | memory_gb | memory GB | architecture |"
    assert [r.split("|")[-2].strip() for r in rows[4:-1]] == ["`small`", "`big`"]
    single = optuna.create_study()
    assert front_table(single) == []


def test_new_settings_reach_the_path_work_the_trials_train_with(make_objective):
    obj = make_objective()
    obj.settings = obj.settings.replace(finetune_optimizer="kept", distill_weight=0.5)
    assert obj.paths.settings is obj.settings
    assert obj.paths.settings.finetune.optimizer == "kept" and obj.settings.training.distill_weight == 0.5


def test_a_patch_size_without_three_sizes_is_refused_in_one_line(make_objective):
    with pytest.raises(SettingsError, match=r"patch_size must have 3 sizes \(z, y, x\), got \(16, 16\)"):
        make_objective(patch_size=(16, 16))


def _searched_then_finetuning(make_objective, path, **kw):
    """Two random trials on a fresh objective checkpointed under ``path``, then a 5-step
    fine-tuning trial enqueued (not run)."""
    obj = make_objective(path=path, finetune_checkpoint_steps=2, **kw)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=2)
    st.enqueue_trial(st.trials[0].params, user_attrs={"steps": 5, "phase": "finetune"})
    return obj, st


def test_a_stopped_fine_tuning_goes_on_from_its_last_checkpoint_as_if_unbroken(make_objective, tmp_path):
    unbroken, st = _searched_then_finetuning(make_objective, tmp_path / "a")
    saved = []  # what each checkpoint recorded (a benchmark's clock is recorded with them)
    unbroken.on_save.append(lambda: saved.append(unbroken.state.finetune_progress))
    st.optimize(unbroken, n_trials=1)
    whole = st.trials[-1]
    assert "resumed_at_step" not in whole.user_attrs
    assert [p.done if p else None for p in saved] == [2, 4, None]  # its parts, then its end

    stopped, st = _searched_then_finetuning(make_objective, tmp_path / "b")
    real, parts = stopped.train, []

    def killed_in_third_part(*a, **kw):
        parts.append(kw["resumed"])
        if len(parts) == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    stopped.train = killed_in_third_part  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        st.optimize(stopped, n_trials=1)
    stopped.save()  # waits for the background write of the last part's checkpoint
    assert parts == [False, True, True]

    resumed = make_objective(path=tmp_path / "b", finetune_checkpoint_steps=2)
    assert resumed.state.finetune_progress is not None and resumed.state.finetune_progress.done == 4
    st.enqueue_trial(st.trials[0].params, user_attrs={"steps": 5, "phase": "finetune"})
    st.optimize(resumed, n_trials=1)
    t = st.trials[-1]
    assert t.state == TrialState.COMPLETE and t.user_attrs["resumed_at_step"] == 4
    assert t.value == whole.value and t.user_attrs["train_loss"] == pytest.approx(
        whole.user_attrs["train_loss"]
    )
    for k, v in unbroken.supernet.state_dict().items():
        assert torch.equal(v, resumed.supernet.state_dict()[k]), k
    assert resumed.state.finetune_progress is None
    again = make_objective(path=tmp_path / "b")  # the finished fine-tuning's checkpoint: nothing to resume
    assert again.state.finetune_progress is None and again.trials_trained == 3


def test_a_fine_tuning_goes_on_only_from_its_own_path_and_length_and_runs_unbroken_with_an_average(
    make_objective, tmp_path, monkeypatch
):
    obj, st = _searched_then_finetuning(make_objective, tmp_path / "a")
    calls = _record_training(obj, monkeypatch)
    other = FinetuneProgress(arch=st.trials[1].user_attrs["arch"], steps=5, done=4, start=0, loss_sum=1.0)
    obj.state.finetune_progress = other  # another path's fine-tuning was under way
    st.optimize(obj, n_trials=1)
    assert [c[1] for c in calls] == [2, 2, 1] and "resumed_at_step" not in st.trials[-1].user_attrs
    obj.state.finetune_progress = other
    st.optimize(obj, n_trials=1)  # an ordinary trial moves the shared weights on: that one is over
    assert obj.state.finetune_progress is None

    averaged = make_objective(path=tmp_path / "b", finetune_checkpoint_steps=2, finetune_average=0.9)
    calls = _record_training(averaged, monkeypatch)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.enqueue_trial({}, user_attrs={"steps": 5, "phase": "finetune"})
    st.optimize(averaged, n_trials=1)
    assert [c[1] for c in calls] == [5]
