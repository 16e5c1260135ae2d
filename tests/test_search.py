"""ronas_optuna.search: one object for a whole search gives what the CLI gives."""

import optuna
import pytest
import torch
from click.testing import CliRunner

from ronas_optuna import FinalModel, SearchSettings, create_search
from ronas_optuna.cli import main
from ronas_optuna.errors import SettingsError

TINY = dict(
    spacing=2.0, depth=2, base_width=4, max_width=8, steps_per_trial=1, warmup_steps=2, finetune_steps=3
)
FLAGS = [f for k, v in TINY.items() for f in (f"--{k.replace('_', '-')}", str(v))] + ["--device", "cpu"]


@pytest.mark.slow
def test_the_search_object_gives_the_cli_s_trials_fine_tuning_and_network(synthetic_root, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-equal runs
    try:
        py_storage, cli_storage = f"sqlite:///{tmp_path / 'py.db'}", f"sqlite:///{tmp_path / 'cli.db'}"
        search = create_search(
            synthetic_root,
            storage=py_storage,
            study_name="s",
            settings=SearchSettings.from_options(**TINY),
            device="cpu",
        )
        search.optimize(n_trials=3)
        model = search.export(tmp_path / "py.pt")
        alone = search.export(tmp_path / "py_alone.pt", train_alone=2)
        search.close()
        runner = CliRunner()
        args = [
            "search",
            str(synthetic_root),
            "--storage",
            cli_storage,
            "--study",
            "s",
            "--trials",
            "3",
            *FLAGS,
        ]
        assert runner.invoke(main, args, catch_exceptions=False).exit_code == 0
        out = [
            "export",
            "--storage",
            cli_storage,
            "--study",
            "s",
            "-o",
            str(tmp_path / "cli.pt"),
            "--device",
            "cpu",
        ]
        assert runner.invoke(main, out, catch_exceptions=False).exit_code == 0
        out[out.index("-o") + 1] = str(tmp_path / "cli_alone.pt")
        assert runner.invoke(main, [*out, "--train-alone", "2"], catch_exceptions=False).exit_code == 0
    finally:
        torch.set_num_threads(threads)
    py, cli = (optuna.load_study(study_name="s", storage=s).trials for s in (py_storage, cli_storage))
    assert [t.user_attrs["arch"] for t in py] == [t.user_attrs["arch"] for t in cli]
    assert [t.value for t in py] == [t.value for t in cli]
    assert len(py) == 4 and py[-1].user_attrs.get("phase") == "finetune"  # the fine-tuning, as the CLI
    other = FinalModel.load(tmp_path / "cli.pt")
    assert model.arch.code == other.arch.code and model.metrics["val_dice"] == other.metrics["val_dice"]
    retrained = FinalModel.load(tmp_path / "cli_alone.pt")  # retrained alone: the same network both ways
    assert alone.source["weights"] == retrained.source["weights"] == "trained alone"
    for (k, a), b in zip(alone.net.state_dict().items(), retrained.net.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_a_resumed_search_takes_its_plan_and_refuses_a_fixed_setting_that_differs(synthetic_root, tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    settings = SearchSettings.from_options(**{**TINY, "finetune_steps": 0})
    first = create_search(synthetic_root, storage=storage, study_name="r", settings=settings, device="cpu")
    first.optimize(n_trials=2)
    first.close()
    again = create_search(None, storage=storage, study_name="r", device="cpu")  # the plan says the rest
    assert again.settings == first.settings
    again.optimize(n_trials=1)
    assert len(again.study.trials) == 3
    again.close()
    with pytest.raises(SettingsError, match="depth 2 -> 3"):
        create_search(
            None,
            storage=storage,
            study_name="r",
            settings=SearchSettings.from_options(**{**TINY, "depth": 3}),
        )


def test_a_handmade_start_makes_the_dynunet_like_member_the_first_trial(synthetic_root, tmp_path):
    from ronas_optuna.sampler import RONASSampler

    settings = SearchSettings.from_options(**{**TINY, "finetune_steps": 0, "start_from": "handmade"})
    search = create_search(
        synthetic_root,
        storage=f"sqlite:///{tmp_path / 'h.db'}",
        study_name="h",
        settings=settings,
        device="cpu",
    )
    search.optimize(n_trials=2)
    first = search.study.trials[0]
    assert first.params == search.plan.search_space().handmade().to_params()
    assert first.user_attrs["start"] == "handmade" and first.state == optuna.trial.TrialState.COMPLETE
    sampler = search.study.sampler
    assert isinstance(sampler, RONASSampler) and sampler.controller.n_observed == 2  # it taught the policy
    search.optimize(n_trials=1)  # a resumed study is not started again
    assert sum(t.user_attrs.get("start") == "handmade" for t in search.study.trials) == 1
    search.close()
