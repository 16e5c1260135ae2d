"""The guard that keeps a report from writing another run's rows over a results file."""

from __future__ import annotations

import json

import pytest

from ronas_optuna.bench.report import conflicting_rows

IDENTITY = ("budget", "sampler", "seed")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _row(seed: int, dice: float, sampler: str = "ronas") -> dict:
    return {"budget": 1, "sampler": sampler, "seed": seed, "test_dice": dice, "arch": "L"}


def test_a_new_file_and_a_run_that_went_on_are_safe(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert conflicting_rows(path, [_row(0, 0.8)], IDENTITY) is None  # nothing there yet
    _write(path, [_row(0, 0.8)])
    assert conflicting_rows(path, [_row(0, 0.8), _row(1, 0.7)], IDENTITY) is None  # one row added
    assert conflicting_rows(path, [_row(0, 0.8)], IDENTITY) is None  # the same rows again
    _write(path, [_row(0, float("nan"))])
    assert conflicting_rows(path, [_row(0, float("nan"))], IDENTITY) is None  # a row without a Dice


@pytest.mark.parametrize(
    "rows, dropped, changed",
    [
        ([], 2, 0),  # an empty store (a fresh run, or one not restored)
        ([_row(0, 0.8)], 1, 0),  # a row the store lacks
        ([_row(0, 0.8), _row(1, 0.71)], 0, 1),  # the same study of another configuration
        ([_row(0, 0.8), _row(1, 0.7, sampler="random")], 1, 0),  # identity includes the sampler
    ],
)
def test_rows_a_report_would_drop_or_change_are_named_in_one_line(tmp_path, rows, dropped, changed):
    path = tmp_path / "rows.jsonl"
    _write(path, [_row(0, 0.8), _row(1, 0.7)])
    why = conflicting_rows(path, rows, IDENTITY)
    assert why is not None and "\n" not in why
    assert why.startswith(f"{path}: ") and f"drop {dropped} and change the Dice of {changed} " in why
    assert "--overwrite" in why and "--results" in why
