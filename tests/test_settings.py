import math

import pytest
from click.testing import CliRunner

from ronas_optuna import SearchSettings
from ronas_optuna.cli import main


def test_round_trip_and_unknown_keys_ignored():
    s = SearchSettings(lr=0.02, depth=3, memory_budget_gb=1.5, amp=False)
    assert SearchSettings.from_dict(s.to_dict()) == s
    assert SearchSettings.from_dict({**s.to_dict(), "data": "x", "spacing": 2.0}).spacing == 2.0


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
        SearchSettings(**{field: value})


@pytest.mark.parametrize("command", ["search", "benchmark"])
def test_every_setting_is_a_command_line_option_with_its_default(command):
    text = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
    for f in SearchSettings.option_fields():
        flag = "--" + f.name.replace("_", "-")
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
        SearchSettings(lr_schedule="step")
    assert SearchSettings(lr_schedule="cosine", finetune_steps=10).finetune_steps == 10
    r = CliRunner().invoke(main, ["search", "x", "--lr-schedule", "step"])
    assert r.exit_code == 2 and "'step' is not one of 'constant', 'cosine', 'anneal'" in r.output


def test_settings_stored_under_their_old_names_are_read():
    old = {"exploit_steps": 7, "exploit_data": "train", "exploit_average": 0.5, "exploit_optimizer": "kept"}
    s = SearchSettings.from_dict(old)
    assert (s.finetune_steps, s.finetune_data, s.finetune_average, s.finetune_optimizer) == (
        7,
        "train",
        0.5,
        "kept",
    )
