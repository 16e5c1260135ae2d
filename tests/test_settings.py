import math

import pytest
from click.testing import CliRunner

from ronas_optuna import (
    DataSettings,
    FinetuneSettings,
    ObjectiveSettings,
    SearchSettings,
    SpaceSettings,
    TrainingSettings,
)
from ronas_optuna.cli import main
from ronas_optuna.errors import SettingsError


def test_round_trip_and_unknown_keys_ignored():
    s = SearchSettings.from_options(lr=0.02, depth=3, memory_budget_gb=1.5, amp=False)
    assert SearchSettings.from_dict(s.to_dict()) == s
    assert SearchSettings.from_dict({**s.to_dict(), "data": "x", "spacing": 2.0}).data.spacing == 2.0


def test_the_groups_and_the_flat_option_names_are_one_setting():
    grouped = SearchSettings(
        space=SpaceSettings(depth=3),
        data=DataSettings(batch_size=4),
        training=TrainingSettings(steps_per_trial=7, lr=0.02),
        finetune=FinetuneSettings(steps=0, data="train"),
        objectives=ObjectiveSettings(metrics="dice,memory", reward_cases=2),
        seed=5,
    )
    flat = SearchSettings.from_options(
        depth=3,
        batch_size=4,
        steps_per_trial=7,
        lr=0.02,
        finetune_steps=0,
        finetune_data="train",
        objectives="dice,memory",
        reward_cases=2,
        seed=5,
    )
    assert grouped == flat
    d = grouped.to_dict()
    assert (d["finetune_steps"], d["objectives"], d["steps_per_trial"], d["seed"]) == (0, "dice,memory", 7, 5)
    assert set(d) == {name for name, _ in SearchSettings.option_fields()}  # every setting, once
    nested = {"training": {"steps_per_trial": 7, "lr": 0.02}, "finetune": {"steps": 0}}
    assert SearchSettings.from_dict(nested).training.steps_per_trial == 7
    assert SearchSettings.from_dict(nested).finetune.steps == 0
    again = grouped.replace(finetune_steps=50, lr=0.5)
    assert again.finetune.steps == 50 and again.training.lr == 0.5 and again.space == grouped.space
    assert grouped.finetune.steps == 0  # frozen: replace made a new one


def test_an_unknown_setting_name_or_a_wrong_group_is_refused():
    with pytest.raises(SettingsError, match="no such setting: step_per_trial"):
        SearchSettings.from_options(step_per_trial=3)
    with pytest.raises(SettingsError, match="training must be a TrainingSettings"):
        SearchSettings(training=FinetuneSettings())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("lr", math.nan, "lr must be >= 0.0"),
        ("lr", -1e-3, "lr must be >= 0.0"),
        ("steps_per_trial", 0, "steps_per_trial must be >= 1"),
        ("depth", 7, "depth must be <= 6"),
        ("spacing", 0.0, "spacing must be > 0"),
        ("memory_budget_gb", -1.0, "memory_budget_gb must be > 0"),
        ("val_fraction", 1.0, "val_fraction must be in"),
        ("finetune_average", 1.0, "finetune_average must be < 1"),
        ("finetune_average", -0.5, "finetune_average must be >= 0.0"),
    ],
)
def test_bad_values_are_refused_with_the_field_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        SearchSettings.from_options(**{field: value})


@pytest.mark.parametrize("command", ["search", "benchmark"])
def test_every_setting_is_a_command_line_option_with_its_default(command):
    text = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
    for name, _ in SearchSettings.option_fields():
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
    assert "Optimizer steps along each trial's path.  [default: 50; x>=1]" in text


def test_a_bad_option_is_a_one_line_error(synthetic_root, tmp_path):
    res = CliRunner().invoke(
        main,
        [
            "search",
            str(synthetic_root),
            "--storage",
            f"sqlite:///{tmp_path / 's.db'}",
            "--lr",
            "nan",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code != 0 and "lr must be >= 0.0" in res.output and "Traceback" not in res.output


def test_choice_settings_are_checked_and_offered_as_click_choices():
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine, anneal, got 'step'"):
        SearchSettings.from_options(lr_schedule="step")
    assert SearchSettings.from_options(lr_schedule="cosine", finetune_steps=10).finetune.steps == 10
    r = CliRunner().invoke(main, ["search", "x", "--lr-schedule", "step"])
    assert r.exit_code == 2 and "'step' is not one of 'constant', 'cosine', 'anneal'" in r.output


def test_settings_stored_under_their_old_names_are_read():
    old = {"exploit_steps": 7, "exploit_data": "train", "exploit_average": 0.5, "exploit_optimizer": "kept"}
    s = SearchSettings.from_dict(old)
    assert (s.finetune.steps, s.finetune.data, s.finetune.average, s.finetune.optimizer) == (
        7,
        "train",
        0.5,
        "kept",
    )
