import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ronas_optuna import lock
from ronas_optuna.lock import LOCK_NAME, RunFolderBusy, hold, holds, read_holder, release


def _write_lock(folder, *, pid, host=None, heartbeat=None):
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    (folder / LOCK_NAME).write_text(
        json.dumps(
            {
                "host": host or socket.gethostname(),
                "pid": pid,
                "started": now - 100,
                "heartbeat": now if heartbeat is None else heartbeat,
                "purpose": "search",
            }
        )
    )


def test_hold_is_reentrant_writes_the_holder_and_release_removes_it(tmp_path):
    folder = tmp_path / "run"
    hold(folder, "search")
    hold(folder, "export")  # this process already owns it
    h = read_holder(folder)
    assert h is not None and h.pid == os.getpid() and h.purpose == "search" and holds(folder)
    release(folder)
    assert not (folder / LOCK_NAME).exists() and not holds(folder)


def test_a_live_holder_refuses_with_its_name(tmp_path, live_pid):
    _write_lock(tmp_path, pid=live_pid)
    with pytest.raises(RunFolderBusy, match=f"held by search by pid {live_pid} on {socket.gethostname()}"):
        hold(tmp_path)
    assert read_holder(tmp_path).pid == live_pid and not holds(tmp_path)  # untouched


def test_a_dead_holder_on_this_host_is_taken_over_with_a_message(tmp_path, caplog):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    _write_lock(tmp_path, pid=p.pid)
    with caplog.at_level(logging.WARNING, logger="ronas_optuna.lock"):
        hold(tmp_path)
    assert read_holder(tmp_path).pid == os.getpid()
    assert f"took over {tmp_path / LOCK_NAME} from search by pid {p.pid}" in caplog.text
    release(tmp_path)


def test_another_hosts_lock_counts_until_its_heartbeat_is_stale(tmp_path):
    _write_lock(tmp_path, pid=1, host="elsewhere")
    with pytest.raises(RunFolderBusy, match="on elsewhere"):
        hold(tmp_path)
    _write_lock(tmp_path, pid=1, host="elsewhere", heartbeat=time.time() - lock.STALE_AFTER_S - 5)
    hold(tmp_path)
    assert read_holder(tmp_path).host == socket.gethostname()
    release(tmp_path)


def test_the_heartbeat_advances_while_held(tmp_path):
    hold(tmp_path, heartbeat_s=0.05)
    first = read_holder(tmp_path).heartbeat
    deadline = time.time() + 5
    while read_holder(tmp_path) is None or read_holder(tmp_path).heartbeat == first:
        assert time.time() < deadline, "no heartbeat"
        time.sleep(0.05)
    release(tmp_path)


def test_no_heartbeat_write_follows_a_release(tmp_path, monkeypatch):
    # A beat that is writing when the lock is released must finish before the file goes, or it
    # would bring the lock file back (seen under load as a run folder changed by a failed command).
    writing = threading.Event()
    real_write = lock._write

    def slow_write(path, holder):
        writing.set()
        time.sleep(0.2)
        real_write(path, holder)

    for i in range(3):
        folder = tmp_path / f"run{i}"
        lock.hold(folder, heartbeat_s=0.01)
        monkeypatch.setattr(lock, "_write", slow_write)
        assert writing.wait(5)
        lock.release(folder)
        monkeypatch.setattr(lock, "_write", real_write)
        writing.clear()
        time.sleep(0.3)
        assert not (folder / lock.LOCK_NAME).exists()
        assert [p.name for p in folder.iterdir()] == []


def test_a_block_gives_up_what_it_took_and_keeps_what_was_held_before(tmp_path):
    import threading

    from ronas_optuna.lock import released_after

    before, inside = tmp_path / "before", tmp_path / "inside"
    hold(before)
    with pytest.raises(RuntimeError), released_after():
        hold(inside)
        hold(before)  # re-entrant: still the outer owner's
        assert holds(inside) and (inside / LOCK_NAME).exists()
        raise RuntimeError("the command failed")  # released whatever ends the block
    assert not holds(inside) and not (inside / LOCK_NAME).exists()
    assert holds(before) and read_holder(before).pid == os.getpid()
    assert not any(t.name == "ronas-lock-inside" for t in threading.enumerate())  # no heartbeat left
    release(before)


def test_a_second_search_process_is_refused_in_one_line(tmp_path, synthetic_root, live_pid):
    from ronas_optuna.runner import prepare

    storage = f"sqlite:///{tmp_path / 's.db'}"
    _, plan = prepare(str(synthetic_root), storage, "busy")
    release(plan.run_dir)
    _write_lock(Path(plan.run_dir), pid=live_pid)
    r = subprocess.run(
        [sys.executable, "-m", "ronas_optuna", "search", "--storage", storage, "--study", "busy"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"Error: {plan.run_dir}: held by search by pid {live_pid} on {socket.gethostname()} since "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(read_holder(plan.run_dir).started))}; "
        "one process trains a study's supernet (wait for it, or stop it and resume)"
    ]
