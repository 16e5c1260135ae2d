"""Storage URLs: opening them, and the folders that sit beside a study's file."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from ronas_optuna.errors import StorageError
from ronas_optuna.storage import default_artifact_dir, default_run_root, open_storage, storage_file


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


def test_default_run_root_is_beside_the_database(tmp_path):
    assert default_run_root(f"sqlite:///{tmp_path}/a.db") == tmp_path / "a_runs"
    assert default_run_root(str(tmp_path / "j.log")) == tmp_path / "j_runs"
    one, two = default_run_root("postgresql://h/db1"), default_run_root("postgresql://h/db2")
    assert one != two and one.parent == two.parent == Path("ronas_runs")


def test_storage_file_and_artifact_folder_read_the_url_one_way(tmp_path):
    assert storage_file(f"sqlite:///{tmp_path}/a.db") == tmp_path / "a.db"
    assert storage_file(str(tmp_path / "j.log")) == tmp_path / "j.log"
    assert storage_file("postgresql://h/db") is None and storage_file("sqlite:///:memory:") is None
    assert default_artifact_dir(f"sqlite:///{tmp_path}/a.db") == tmp_path / "a_artifacts"
    assert default_artifact_dir(str(tmp_path / "j.log")) == tmp_path / "j_artifacts"
    assert str(default_artifact_dir("postgresql://h/db")) == "ronas_artifacts"
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
