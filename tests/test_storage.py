"""Storage URLs: opening them, and the folders that sit beside a study's file."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from ronas_optuna.errors import StorageError
from ronas_optuna.storage import StorageURL, open_storage


def test_open_storage(tmp_path):
    rdb = open_storage(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(rdb, optuna.storages.RDBStorage) and rdb.heartbeat_interval == 60
    (tmp_path / "sub").mkdir()
    journal = open_storage(str(tmp_path / "sub" / "j.log"))
    assert isinstance(journal, optuna.storages.JournalStorage)
    with pytest.raises(ValueError, match="--storage 'nowhere'"):
        open_storage("nowhere")
    with pytest.raises(ValueError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'y.db'}", create=False)
    assert not (tmp_path / "y.db").exists()
    with pytest.raises(ValueError, match=r"folder .* does not exist"):
        open_storage(str(tmp_path / "nofolder" / "j.log"))


def test_the_run_root_is_beside_the_database(tmp_path):
    assert StorageURL.parse(f"sqlite:///{tmp_path}/a.db").run_root == tmp_path / "a_runs"
    assert StorageURL.parse(str(tmp_path / "j.log")).run_root == tmp_path / "j_runs"
    one, two = (
        StorageURL.parse("postgresql://h/db1").run_root,
        StorageURL.parse("postgresql://h/db2").run_root,
    )
    assert one != two and one.parent == two.parent == Path("ronas_runs")


def test_a_storage_url_is_read_once_into_its_file_kind_and_folders(tmp_path):
    sqlite, journal = (
        StorageURL.parse(f"sqlite:///{tmp_path}/a.db"),
        StorageURL.parse(str(tmp_path / "j.log")),
    )
    server = StorageURL.parse("postgresql://h/db")
    assert (sqlite.file, journal.file, server.file) == (tmp_path / "a.db", tmp_path / "j.log", None)
    assert (sqlite.journal, journal.journal, server.journal) == (False, True, False)
    assert StorageURL.parse("sqlite:///:memory:").file is None
    assert (
        sqlite.artifact_dir == tmp_path / "a_artifacts" and journal.artifact_dir == tmp_path / "j_artifacts"
    )
    assert str(server.artifact_dir) == "ronas_artifacts"
    assert StorageURL.parse(sqlite) is sqlite and str(sqlite) == f"sqlite:///{tmp_path}/a.db"
    assert sqlite.check(create=True) is sqlite  # a new file in an existing folder is fine
    with pytest.raises(StorageError, match="does not exist"):
        sqlite.check(create=False)
    with pytest.raises(StorageError, match="in-memory database keeps nothing"):
        open_storage("sqlite:///:memory:")


def test_sqlite_connections_wait_for_another_process_write_lock(tmp_path):
    import sqlite3
    import threading

    url = f"sqlite:///{tmp_path / 'busy.db'}"
    storage = open_storage(url)
    optuna.create_study(study_name="busy", storage=storage)
    holder = sqlite3.connect(tmp_path / "busy.db", check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another process mid-commit, for 6 s (beyond SQLite's 5 s default)
    threading.Timer(6.0, holder.rollback).start()
    study = optuna.load_study(study_name="busy", storage=open_storage(url))
    study.set_user_attr("k", 1)  # waits for the lock (SQLite's 5 s default would fail here)
    holder.close()
    assert study.user_attrs["k"] == 1


def test_a_database_another_process_is_creating_opens_on_a_second_attempt(tmp_path, monkeypatch):
    import optuna
    import sqlalchemy.exc

    from ronas_optuna import storage as st

    real, calls = optuna.storages.RDBStorage, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # what the loser of two processes creating the tables sees
            raise sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE"))
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(st.time, "sleep", lambda s: None)
    assert st.open_storage(f"sqlite:///{tmp_path / 'r.db'}") is not None and len(calls) == 2
    calls.clear()
    monkeypatch.setattr(
        optuna.storages, "RDBStorage", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad"))
    )
    with pytest.raises(st.StorageError, match="cannot open"):
        st.open_storage(f"sqlite:///{tmp_path / 'r.db'}")


def test_a_sqlite_file_is_written_ahead_without_waiting_for_the_disk(tmp_path):
    import sqlite3

    from ronas_optuna.storage import write_ahead

    storage = open_storage(f"sqlite:///{tmp_path / 'w.db'}")
    study = optuna.create_study(study_name="w", storage=storage)
    assert sqlite3.connect(tmp_path / "w.db").execute("PRAGMA journal_mode").fetchone() == ("delete",)
    write_ahead()  # a search's trials begin
    study.set_user_attr("k", 1)
    with storage.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    # the mode stays with the file: any other reader sees the committed attribute
    other = sqlite3.connect(tmp_path / "w.db")
    assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert other.execute("SELECT COUNT(*) FROM study_user_attributes").fetchone() == (1,)
    other.close()


def test_closing_the_storages_folds_the_log_into_the_file(tmp_path):
    import gc
    import sqlite3

    from ronas_optuna.storage import close_storages, write_ahead

    db = tmp_path / "f.db"
    study = optuna.create_study(study_name="f", storage=open_storage(f"sqlite:///{db}"))
    write_ahead()
    study.set_user_attr("k", 1)
    assert (tmp_path / "f.db-wal").exists()  # the commit went to the log
    close_storages()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.db"]  # folded in, log removed
    before = (db.stat().st_size, db.stat().st_mtime_ns)
    del study
    gc.collect()  # nothing is left for garbage collection to close
    assert (db.stat().st_size, db.stat().st_mtime_ns) == before
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM study_user_attributes").fetchone() == (1,)
    assert optuna.load_study(study_name="f", storage=open_storage(f"sqlite:///{db}")).user_attrs == {"k": 1}


def _two_files_written_ahead(tmp_path):
    """Two SQLite files of this process, each with a commit in its write-ahead log."""
    from ronas_optuna.storage import write_ahead

    a, b = tmp_path / "a.db", tmp_path / "b.db"
    for db in (a, b):
        study = optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{db}"))
        write_ahead()
        study.set_user_attr("k", 1)
    return a, b


def test_a_file_at_rest_is_back_in_the_rollback_journal_unless_another_has_it_open(tmp_path):
    import sqlite3
    import time

    from ronas_optuna.storage import close_storages

    a, b = _two_files_written_ahead(tmp_path)
    other = sqlite3.connect(b)  # another process reading b
    other.execute("SELECT COUNT(*) FROM studies").fetchone()
    t = time.perf_counter()
    close_storages()
    assert time.perf_counter() - t < 30  # it does not wait for the other's lock (60 s timeout)
    mode = {db.name: sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] for db in (a, b)}
    assert mode == {"a.db": "delete", "b.db": "wal"}  # b stays in WAL mode for its last user
    assert other.execute("SELECT COUNT(*) FROM study_user_attributes").fetchone() == (1,)
    other.close()


def test_a_read_only_file_is_read_in_the_journal_it_has(tmp_path):
    import sqlite3

    from ronas_optuna.storage import _wal_pragmas

    db = tmp_path / "r.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE t (x)")
        c.execute("INSERT INTO t VALUES (1)")
    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)  # as a file in a read-only folder opens
    _wal_pragmas(ro)  # cannot switch a read-only file to WAL: no error, the file is only read
    assert ro.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert ro.execute("SELECT x FROM t").fetchall() == [(1,)]
    ro.close()


def test_a_script_that_exits_leaves_its_file_at_rest(tmp_path):
    import sqlite3
    import subprocess
    import sys

    script = (
        "import optuna\n"
        "from ronas_optuna.storage import open_storage, write_ahead\n"
        f"study = optuna.create_study(storage=open_storage('sqlite:///{tmp_path / 'e.db'}'))\n"
        "write_ahead()\n"
        "study.set_user_attr('k', 1)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.db"]
    assert sqlite3.connect(tmp_path / "e.db").execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_closing_one_storage_leaves_the_others_of_the_process_as_they_are(tmp_path):
    """``Search.close`` closes its own file: another search of the same process keeps its log."""
    import sqlite3

    from ronas_optuna.storage import close_storages

    a, _ = _two_files_written_ahead(tmp_path)
    close_storages(f"sqlite:///{a}")
    close_storages("sqlite:///:memory:")  # not a file: nothing to close
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db", "b.db", "b.db-shm", "b.db-wal"]
    assert sqlite3.connect(a).execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    close_storages()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db", "b.db"]
