import math

import nibabel as nib
import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from ronas_optuna import SearchSpace, Supernet
from ronas_optuna.data import MSDDataset
from ronas_optuna.final import FinalModel, best_trial, derive_best
from ronas_optuna.inference import predict_files, sliding_window
from ronas_optuna.objective import NASObjective, constraints_func
from ronas_optuna.sampler import RONASSampler


def make_objective(root, tmp_path, **kw):
    ds = MSDDataset(root, spacing=1.5, cache_dir=tmp_path / "cache")
    space = SearchSpace.default(depth=3, base_width=4, max_width=16, patch_sizes=[(16, 16, 16), (16, 16, 8)])
    torch.manual_seed(0)
    sn = Supernet(space, ds.in_channels, ds.num_classes)
    opts = dict(steps_per_trial=3, batch_size=2, device="cpu", seed=0, checkpoint=tmp_path / "sn.pt",
                checkpoint_every=2)
    opts.update(kw)
    return NASObjective(sn, ds, **opts)


def test_search_records_everything_and_works_with_any_sampler(tmp_path, synthetic_root):
    obj = make_objective(synthetic_root, tmp_path)
    for sampler in (RONASSampler(obj.supernet.space, seed=0), optuna.samplers.TPESampler(seed=0)):
        st = optuna.create_study(direction="maximize", sampler=sampler)
        st.optimize(obj, n_trials=3)
        t = st.trials[-1]
        assert t.state == TrialState.COMPLETE and 0 <= t.value <= 1
        for key in ("arch", "dice_per_class", "params", "macs", "train_loss", "seconds", "peak_memory_gb"):
            assert key in t.user_attrs, key
        assert len(t.user_attrs["dice_per_class"]) == 2
        assert t.value == pytest.approx(np.mean(t.user_attrs["dice_per_class"]), abs=1e-4)
    assert (tmp_path / "sn.pt").exists() and obj.trials_trained == 6


def test_validation_set_is_fixed_and_training_moves_only_the_path(tmp_path, synthetic_root):
    obj = make_objective(synthetic_root, tmp_path, checkpoint=None)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    before = {k: v.clone() for k, v in obj.supernet.state_dict().items()}
    st.optimize(obj, n_trials=1)
    arch = obj.supernet._arch(st.trials[0].params)
    on_path = {id(p) for p in obj.supernet.path_parameters(arch)}
    names = {id(p): n for n, p in obj.supernet.named_parameters()}
    changed = {n for n, p in obj.supernet.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= {names[i] for i in on_path}
    assert obj.val_ids == MSDDataset(synthetic_root).split(seed=0)[1]


def test_failing_trial_is_recorded_and_weights_restored(tmp_path, synthetic_root, monkeypatch):
    obj = make_objective(synthetic_root, tmp_path, checkpoint=None)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=1)
    state = {k: v.clone() for k, v in obj.supernet.state_dict().items()}
    opt_state = {id(p): {k: v.clone() for k, v in s.items()} for p, s in obj.optimizer.state.items()}
    import ronas_optuna.objective as mod

    real = mod.deep_supervision_loss
    calls = {"n": 0}

    def nan_loss(out, y):
        calls["n"] += 1
        loss = real(out, y)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(mod, "deep_supervision_loss", nan_loss)
    st.optimize(obj, n_trials=1)
    t = st.trials[-1]
    assert t.state == TrialState.FAIL and "non-finite" in t.user_attrs["fail_reason"]
    for k, v in obj.supernet.state_dict().items():
        assert torch.equal(v, state[k]), k
    for p, s in obj.optimizer.state.items():
        if id(p) in opt_state:
            assert all(torch.equal(s[k], opt_state[id(p)][k]) for k in s)
        else:
            pytest.fail("optimizer gained state from a failed trial")
    monkeypatch.setattr(mod, "deep_supervision_loss", real)
    st.optimize(obj, n_trials=1)  # the study goes on
    assert st.trials[-1].state == TrialState.COMPLETE


def test_memory_budget_is_a_constraint_and_a_penalty(tmp_path, synthetic_root):
    obj = make_objective(synthetic_root, tmp_path, checkpoint=None, memory_budget_gb=1e-9, budget_penalty=0.0)
    sampler = RONASSampler(obj.supernet.space, seed=0)
    st = optuna.create_study(direction="maximize", sampler=sampler)
    st.optimize(obj, n_trials=2)
    t = st.trials[0]
    assert t.state == TrialState.COMPLETE and t.value == 0.0 and t.user_attrs["over_budget"]
    assert constraints_func(t)[0] > 0 and t.system_attrs["constraints:memory_gb"] > 0
    assert obj.trials_trained == 0
    sampler.most_likely_params(st)
    assert sampler.controller.n_observed == 2
    tpe = optuna.create_study(direction="maximize",
                              sampler=optuna.samplers.TPESampler(seed=0))
    tpe.optimize(obj, n_trials=1)
    with pytest.raises(ValueError, match="within budget"):
        best_trial(st)


def test_budget_that_fits_trains_normally(tmp_path, synthetic_root):
    obj = make_objective(synthetic_root, tmp_path, checkpoint=None, memory_budget_gb=100.0)
    st = optuna.create_study(direction="maximize")
    st.optimize(obj, n_trials=1)
    assert obj.trials_trained == 1 and st.trials[0].user_attrs["constraints"][0] < 0


def test_pruner_gets_intermediate_values(tmp_path, synthetic_root):
    obj = make_objective(synthetic_root, tmp_path, checkpoint=None, prune_checks=1, steps_per_trial=4)

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    st = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    st.optimize(obj, n_trials=1)
    t = st.trials[0]
    assert t.state == TrialState.PRUNED and list(t.intermediate_values) == [2]


def test_supernet_persists_across_objectives_via_checkpoint(tmp_path, synthetic_root):
    obj = make_objective(synthetic_root, tmp_path)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    st.optimize(obj, n_trials=2)
    obj.save()
    again = make_objective(synthetic_root, tmp_path)
    for (k, a), (_, b) in zip(obj.supernet.state_dict().items(), again.supernet.state_dict().items()):
        assert torch.equal(a, b), k
    assert again.trials_trained == 2 and len(again.optimizer.state) == len(obj.optimizer.state)


def test_derive_best_without_retraining_and_predict_keeps_geometry(tmp_path, synthetic_root):
    obj = make_objective(synthetic_root, tmp_path, steps_per_trial=6)
    st = optuna.create_study(direction="maximize", sampler=RONASSampler(obj.supernet.space, seed=0))
    st.optimize(obj, n_trials=4)
    model = derive_best(st, obj, output=tmp_path / "model.pt", overlap=0.25)
    assert model.source["weights"] in ("shared", "snapshot")
    winner = max(model.source["revalidated"], key=lambda row: row[-1])
    assert [model.arch.code, model.source["trial"], model.source["weights"]] == winner[:3]
    if model.source["weights"] == "shared":  # the derived net equals the supernet path (same weights)
        expected = obj.validate(model.arch, overlap=0.25)[0]
    else:  # the best trial's weights as they were when it scored
        expected = obj.best_snapshot["value"]
    assert model.metrics["val_dice"] == pytest.approx(expected, abs=1e-6)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["format"] == "ronas_optuna.model/1"
    loaded = FinalModel.load(tmp_path / "model.pt")
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.net.eval()(x), model.net.eval()(x), atol=1e-6)
    policy = derive_best(st, obj, use="policy")
    assert policy.source["trial"] is None
    src = obj.dataset.cases[0].images[0]
    out = predict_files(loaded.net, loaded.preprocessor, loaded.patch_size, [str(src), str(src)],
                        tmp_path / "pred", num_classes=3, overlap=0.25, mirror=True)
    ref, pred = nib.load(str(src)), nib.load(str(out[0]))
    assert pred.shape == ref.shape and np.allclose(pred.affine, ref.affine)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}
    fine = derive_best(st, obj, finetune_steps=2)
    assert fine.metrics["finetune_steps"] == 2


def test_best_snapshot_survives_later_damage_and_checkpoints(tmp_path, synthetic_root):
    kw = dict(steps_per_trial=20, lr=1e-2, warmup_steps=150)
    obj = make_objective(synthetic_root, tmp_path, **kw)
    st = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    st.optimize(obj, n_trials=3)
    snap = obj.best_snapshot
    assert st.best_value > 0.2
    assert snap["trial"] == st.best_trial.number and snap["value"] == pytest.approx(st.best_value)
    assert snap["arch"] == st.best_trial.user_attrs["arch"]
    obj.save()
    again = make_objective(synthetic_root, tmp_path, **kw)
    assert again.best_snapshot["trial"] == snap["trial"]
    assert all(torch.equal(again.best_snapshot["state"][k], v) for k, v in snap["state"].items())
    with torch.no_grad():  # later training wrecks the shared weights
        for p in obj.supernet.parameters():
            p.copy_(torch.randn_like(p))
    model = derive_best(st, obj, top_k=3, overlap=obj.val_overlap)
    assert model.source["weights"] == "snapshot" and model.source["trial"] == snap["trial"], model.source
    assert model.metrics["val_dice"] == pytest.approx(st.best_value, abs=1e-5)
    # a snapshot from another study is ignored
    other = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=2))
    other.optimize(make_objective(synthetic_root, tmp_path / "o", checkpoint=None), n_trials=1)
    assert derive_best(other, obj, top_k=3).source["weights"] == "shared"


def test_sliding_window_handles_small_volumes_and_uniform_overlap():
    net = lambda x: torch.stack([x[:, 0], -x[:, 0]], 1)  # noqa: E731
    img = np.random.default_rng(0).normal(size=(1, 10, 23, 7)).astype(np.float32)
    probs = sliding_window(net, img, (8, 8, 8), 2, overlap=0.5, mirror=True)
    assert probs.shape == (2, 10, 23, 7)
    expected = torch.softmax(torch.stack([torch.tensor(img[0]), -torch.tensor(img[0])]), 0)
    assert torch.allclose(probs, expected, atol=1e-5)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window(net, img, (8, 8, 8), 2, overlap=1.0)


def test_model_file_errors_are_clear(tmp_path):
    from ronas_optuna import CheckpointError

    (tmp_path / "x.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="corrupt"):
        FinalModel.load(tmp_path / "x.pt")
    torch.save({"format": "other"}, tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match="not a ronas_optuna model"):
        FinalModel.load(tmp_path / "y.pt")
    assert math.isfinite(1.0)
