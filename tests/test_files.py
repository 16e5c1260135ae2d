"""The file helpers: atomic writes, the background checkpoint writer, checkpoint reads."""

from __future__ import annotations

import os

import pytest
import torch

from ronas_optuna.errors import CheckpointError, UnreadableCheckpoint, WriteError
from ronas_optuna.files import (
    BackgroundWriter,
    atomic_torch_save,
    atomic_write_text,
    cpu_copy,
    previous_path,
    read_checkpoint,
    remove_stale_temp_files,
)


def test_stale_temporary_files_are_removed_recent_ones_kept(tmp_path):
    old, new, mine = tmp_path / ".sn.pt.abc.tmp", tmp_path / ".model.pt.def.tmp", tmp_path / "keep.tmp"
    for p in (old, new, mine):
        p.write_bytes(b"x")
    os.utime(old, (1, 1))
    os.utime(mine, (1, 1))
    assert remove_stale_temp_files(tmp_path) == [old]
    assert not old.exists() and new.exists() and mine.exists()


def test_background_writer_keeps_the_newest_payload_and_reports_errors(tmp_path):
    w = BackgroundWriter()
    live = {"w": torch.zeros(3), "nested": [{"m": torch.ones(2)}, 4]}
    for _ in range(20):
        live["w"] += 1
        w.submit(cpu_copy(live), tmp_path / "c.pt")
    w.flush()
    got = torch.load(tmp_path / "c.pt", weights_only=True)
    assert torch.equal(got["w"], torch.full((3,), 20.0)) and got["nested"][1] == 4
    assert not list(tmp_path.glob(".*.tmp"))
    (tmp_path / "file").write_text("")
    w.submit({"x": torch.zeros(1)}, tmp_path / "file" / "c.pt")  # its folder is a file
    with pytest.raises(OSError):
        w.flush()
    w.flush()  # the error was reported once; the writer still works


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "plan.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two" and not list(target.parent.glob(".*.tmp"))
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_read_checkpoint_names_the_file_and_what_is_wrong(tmp_path):
    good = tmp_path / "c.pt"
    atomic_torch_save({"w": torch.ones(2)}, good)
    assert torch.equal(read_checkpoint(good)["w"], torch.ones(2))
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:20])
    with pytest.raises(CheckpointError, match=r"bad\.pt: unreadable or corrupt file"):
        read_checkpoint(bad)
    atomic_torch_save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="unexpected checkpoint content"):
        read_checkpoint(tmp_path / "list.pt")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_keep_previous_leaves_the_last_two_generations(tmp_path):
    target = tmp_path / "supernet.pt"
    for i in range(3):
        atomic_torch_save({"i": i}, target, keep_previous=True)
    assert previous_path(target) == tmp_path / "supernet.prev.pt"
    assert read_checkpoint(target)["i"] == 2 and read_checkpoint(previous_path(target))["i"] == 1
    with pytest.raises(UnreadableCheckpoint):
        read_checkpoint(tmp_path / "missing.pt")


def test_a_write_the_disk_refuses_names_the_folder_and_the_free_space(tmp_path, monkeypatch):
    import errno

    from ronas_optuna import files

    atomic_write_text(tmp_path / "plan.json", "old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(WriteError) as e:
        atomic_write_text(tmp_path / "plan.json", "new")
    assert str(e.value).startswith(f"{tmp_path}: cannot write plan.json (No space left on device; ")
    assert str(e.value).endswith("GB free)") and e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert (tmp_path / "plan.json").read_text() == "old" and not list(tmp_path.glob(".*.tmp"))
