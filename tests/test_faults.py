"""Faults that must not cost a user their supernet or study, each through the CLI as a user runs it:
a corrupt checkpoint, a full disk, a torn journal line, and an export while a search runs."""

from __future__ import annotations

import errno
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from ronas_optuna.cli import main
from ronas_optuna.plan import SearchPlan
from ronas_optuna.storage import open_storage

TINY = ["--device", "cpu", "--spacing", "2.0", "--depth", "2", "--base-width", "4", "--max-width", "8"]
TINY += ["--steps-per-trial", "1", "--finetune-steps", "0", "--warmup-steps", "2"]


def _search(data, storage, *extra, trials="2"):
    args = ["search", str(data), "--storage", storage, "--study", "f", "--trials", trials, *TINY, *extra]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _complete(storage):
    study = optuna.load_study(study_name="f", storage=open_storage(storage, create=False))
    return [t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("Error:", "ronas:"))]


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one_then_starts_over_on_request(
    tmp_path, synthetic_root, caplog
):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert _search(synthetic_root, storage, trials="3").exit_code == 0
    plan = SearchPlan.from_study(optuna.load_study(study_name="f", storage=storage))
    newest, prev = plan.checkpoint, plan.checkpoint.with_name("supernet.prev.pt")
    assert newest.exists() and prev.exists()  # two generations
    newest.write_bytes(newest.read_bytes()[:100])  # a disk or copy fault
    r = _search(synthetic_root, storage)
    assert r.exit_code == 0, r.output
    [said] = [m for m in caplog.messages if "previous checkpoint" in m]
    assert said.startswith(f"{newest}: unreadable or corrupt file") and said.endswith("supernet.prev.pt")
    assert _complete(storage) == [0, 1, 2, 3, 4]
    # both generations unreadable: one line naming them and the way out; nothing changed
    for p in (newest, prev):
        p.write_bytes(b"not a checkpoint")
    r = _search(synthetic_root, storage)
    assert r.exit_code == 1 and "Traceback" not in r.output
    [line] = _errors(r.output)
    assert str(newest) in line and str(prev) in line and "--fresh-supernet" in line
    assert _complete(storage) == [0, 1, 2, 3, 4] and newest.read_bytes() == b"not a checkpoint"
    r = _search(synthetic_root, storage, "--fresh-supernet")
    assert r.exit_code == 0, r.output
    aside = sorted(p.name for p in newest.parent.glob("supernet*.set-aside-*"))
    assert len(aside) == 2 and f"set aside {newest.parent}" in r.output
    assert _complete(storage) == [0, 1, 2, 3, 4, 5, 6]


def test_a_full_disk_is_one_line_and_costs_nothing_but_the_write(
    tmp_path, synthetic_root, monkeypatch, caplog
):
    import torch

    from ronas_optuna import files

    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert _search(synthetic_root, storage).exit_code == 0
    plan = SearchPlan.from_study(optuna.load_study(study_name="f", storage=storage))
    before = plan.checkpoint.read_bytes()

    def full(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.torch, "save", full)
    done = _complete(storage)
    r = _search(synthetic_root, storage, trials="3")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert not [
        rec for rec in caplog.records if rec.exc_info or "failed" in rec.getMessage()
    ]  # no logger's traceback
    study = optuna.load_study(study_name="f", storage=storage)
    assert not study.get_trials(states=(optuna.trial.TrialState.FAIL,))  # no architecture reads as failed
    # the first trial's write fails in the background; the second finds it, keeps its value, stops the study
    assert len(_complete(storage)) == len(done) + 2
    [line] = _errors(r.output)
    assert line.startswith(f"Error: {plan.checkpoint.parent}: cannot write supernet.pt (No space left")
    assert "GB free" in line
    assert plan.checkpoint.read_bytes() == before  # the last good checkpoint
    assert not list(plan.checkpoint.parent.glob(".*.tmp"))
    monkeypatch.setattr(files.torch, "save", torch.serialization.save)
    done = _complete(storage)
    r = _search(synthetic_root, storage)  # space again: the same command goes on
    assert r.exit_code == 0, r.output
    assert len(_complete(storage)) == len(done) + 2 and set(done) <= set(_complete(storage))


def test_a_torn_last_journal_line_is_cut_off_and_a_damaged_middle_line_named(tmp_path, synthetic_root):
    storage = str(tmp_path / "s.log")
    assert _search(synthetic_root, storage).exit_code == 0
    journal = Path(storage)
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 5, "worker_id": "x", "tri')  # a writer killed mid-line
    with pytest.warns(UserWarning, match=r"dropped an unfinished last line \(37 bytes\)"):
        r = _search(synthetic_root, storage)
    assert r.exit_code == 0, r.output
    assert _complete(storage) == [0, 1, 2, 3] and journal.read_bytes().startswith(whole)
    lines = journal.read_bytes().splitlines(keepends=True)
    lines.insert(3, b'{"op_code": 5, "wor\n')  # damaged, with lines after it
    journal.write_bytes(b"".join(lines))
    r = _search(synthetic_root, storage)
    assert r.exit_code == 1 and "Traceback" not in r.output
    [line] = _errors(r.output)
    assert line.startswith(f"Error: {journal}: line 4 of the journal is damaged")


def test_export_while_a_search_runs_reads_its_newest_checkpoint_and_disturbs_nothing(
    tmp_path, synthetic_root
):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    cmd = [sys.executable, "-m", "ronas_optuna", "search", str(synthetic_root), "--storage", storage]
    search = subprocess.Popen(
        [*cmd, "--study", "f", "--trials", "40", *TINY], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if len(_complete(storage)) >= 3:
                    break
            except (KeyError, ValueError):  # not created yet
                pass
            time.sleep(0.5)
        out = tmp_path / "model.pt"
        r = CliRunner().invoke(
            main, ["export", "--storage", storage, "--study", "f", "-o", str(out), "--device", "cpu"]
        )
        running = search.poll() is None
    finally:
        _, err = search.communicate(timeout=300)
    assert search.returncode == 0, err[-2000:]
    assert r.exit_code == 0, r.output
    assert out.exists() and "weights from its newest checkpoint, after" in r.output
    assert running  # the export ran beside the search
    assert len(_complete(storage)) == 40
