import optuna
import pytest
import torch

from ronas_optuna import CheckpointError, SettingsError
from ronas_optuna.bench import TimedSampler
from ronas_optuna.final import FinalModel, best_trial, derive_best, policy_sampler, train_from_scratch
from ronas_optuna.sampler import RONASSampler


@pytest.fixture
def searched(make_objective):
    obj = make_objective(steps_per_trial=6)
    st = optuna.create_study(direction="maximize", sampler=RONASSampler(obj.supernet.space, seed=0))
    st.optimize(obj, n_trials=4)
    return obj, st


def test_derive_best_without_retraining_saves_a_loadable_model(searched, tmp_path):
    obj, st = searched
    model = derive_best(st, obj, output=tmp_path / "model.pt", overlap=0.25)
    assert model.source["weights"] in ("shared", "snapshot")
    winner = max(model.source["revalidated"], key=lambda row: row[-1])
    assert [model.arch.code, model.source["trial"], model.source["weights"]] == winner[:3]
    if model.source["weights"] == "shared":  # the derived net equals the supernet path (same weights)
        expected = obj.validate(model.arch).mean
    else:  # the best trial's weights as they were when it scored
        expected = obj.best_snapshot["value"]
    assert model.metrics["val_dice"] == pytest.approx(expected, abs=1e-6)
    assert model.metrics["val_cases"] == obj.evaluator.case_ids
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["format"] == "ronas_optuna.model/1"
    loaded = FinalModel.load(tmp_path / "model.pt")
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.net.eval()(x), model.net.eval()(x), atol=1e-6)
    assert loaded.labels == model.labels and loaded.patch_size == model.patch_size


def test_policy_and_retrained_variants(searched):
    obj, st = searched
    policy = derive_best(st, obj, use="policy")
    assert policy.source["trial"] is None
    assert policy.arch == obj.supernet._arch(st.sampler.most_likely_params(st))
    before = {k: v.clone() for k, v in obj.supernet.state_dict().items()}
    plain = derive_best(st, obj)
    alone = derive_best(st, obj, train_alone=2)
    # the architecture is chosen with the shared weights, then trained alone from scratch
    assert alone.arch == plain.arch and alone.metrics["train_alone_steps"] == 2
    assert alone.source["weights"] == "trained alone" and alone.source["trained_on"] == "train+val"
    assert obj.finetune_cases  # the default: the fine-tuning's cases, training and validation
    fresh = train_from_scratch(obj, alone.arch, 2, obj.trainer.seed, cases=obj.finetune_cases).cpu()
    for (k, a), b in zip(alone.net.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), k  # the same steps from a fresh network, not from the shared weights
    assert any(
        not torch.equal(a, b)
        for a, b in zip(alone.net.state_dict().values(), plain.net.state_dict().values())
    )
    for (
        k,
        v,
    ) in obj.supernet.state_dict().items():  # retraining copies nothing back; the supernet is untouched
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="use must be"):
        derive_best(st, obj, use="worst")


def test_retraining_for_a_time_says_how_many_steps_it_took(searched):
    obj, st = searched
    alone = derive_best(st, obj, train_alone_seconds=0.01)  # shorter than a chunk: one chunk of steps
    assert alone.source["weights"] == "trained alone" and alone.metrics["train_alone_steps"] == 5
    assert alone.metrics["train_alone_seconds"] >= 0.0
    assert alone.arch == derive_best(st, obj).arch
    for steps, seconds in [(2, 1.0), (-1, 0.0), (0, -1.0)]:
        with pytest.raises(SettingsError, match="train_alone"):
            derive_best(st, obj, train_alone=steps, train_alone_seconds=seconds)


def test_a_timed_ronas_sampler_keeps_its_policy_features(make_objective):
    obj = make_objective(checkpoint=None)
    inner = RONASSampler(obj.supernet.space, seed=0)
    st = optuna.create_study(direction="maximize", sampler=TimedSampler(inner))
    st.optimize(obj, n_trials=3)
    assert policy_sampler(st) is inner
    model = derive_best(st, obj, top_k=2)
    policy_arch = obj.supernet._arch(inner.most_likely_params(st)).code
    assert policy_arch in [row[0] for row in model.source["revalidated"]]
    assert derive_best(st, obj, use="policy").arch.code == policy_arch
    tpe = optuna.create_study(direction="maximize", sampler=TimedSampler(optuna.samplers.TPESampler(seed=0)))
    assert policy_sampler(tpe) is None


def test_best_snapshot_survives_later_damage_and_checkpoints(make_objective, tmp_path):
    kw = dict(steps_per_trial=20, lr=1e-2, warmup_steps=150)
    obj = make_objective(**kw)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    st.optimize(obj, n_trials=3)
    snap = obj.best_snapshot
    assert st.best_value > 0.2
    assert snap["trial"] == st.best_trial.number and snap["value"] == pytest.approx(st.best_value)
    assert snap["arch"] == st.best_trial.user_attrs["arch"]
    obj.save()
    again = make_objective(**kw)
    assert again.best_snapshot["trial"] == snap["trial"]
    assert all(torch.equal(again.best_snapshot["state"][k], v) for k, v in snap["state"].items())
    with torch.no_grad():  # later training wrecks the shared weights
        for p in obj.supernet.parameters():
            p.copy_(torch.randn_like(p))
    model = derive_best(st, obj, top_k=3, overlap=obj.evaluator.overlap)
    assert model.source["weights"] == "snapshot" and model.source["trial"] == snap["trial"], model.source
    assert model.metrics["val_dice"] == pytest.approx(st.best_value, abs=1e-5)
    # a snapshot from another study is ignored
    other = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=2))
    other.optimize(make_objective(path=tmp_path / "o", checkpoint=None), n_trials=1)
    assert derive_best(other, obj, top_k=3).source["weights"] == "shared"


def test_best_trial_respects_direction_and_needs_a_complete_trial():
    st = optuna.create_study(direction="minimize")
    with pytest.raises(ValueError, match="no completed trial"):
        best_trial(st)
    for v in (0.5, 0.2, 0.2, 0.9):
        st.add_trial(optuna.trial.create_trial(value=v))
    assert best_trial(st).number == 1  # lowest value, earliest on ties


def test_model_file_errors_are_clear(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="corrupt"):
        FinalModel.load(tmp_path / "x.pt")
    torch.save({"format": "other"}, tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match="not a ronas_optuna model"):
        FinalModel.load(tmp_path / "y.pt")
    torch.save({"format": "ronas_optuna.model/1", "net": "{}"}, tmp_path / "z.pt")
    with pytest.raises(CheckpointError, match="incomplete or inconsistent"):
        FinalModel.load(tmp_path / "z.pt")


def test_finetune_keeps_training_the_policys_choice_inside_the_supernet(searched):
    from ronas_optuna.final import finetune

    obj, st = searched
    params = policy_sampler(st).most_likely_params(st)
    t = finetune(st, obj, 5)
    assert t is not None and t.number == 4 and t.state.is_finished()
    assert t.params == {k: v for k, v in params.items() if k in t.params}
    assert t.user_attrs["phase"] == "finetune" and t.user_attrs["steps"] == 5
    assert finetune(st, obj, 0) is None and len(st.trials) == 5


def test_finetune_with_another_sampler_takes_the_best_trial(make_objective):
    from ronas_optuna.final import finetune

    obj = make_objective(checkpoint=None)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    assert finetune(st, obj, 3) is None  # nothing to choose yet
    st.optimize(obj, n_trials=3)
    best = best_trial(st)
    t = finetune(st, obj, 3)
    assert t is not None and t.params == best.params and t.user_attrs["phase"] == "finetune"
