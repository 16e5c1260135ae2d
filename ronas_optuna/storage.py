"""What a storage URL means: the file behind it, how to open it, and the folders that go with it.

``sqlite:///search.db`` and a journal path (``search.log``) name files; the artifact and run folders
of such a study sit beside that file. Server databases (``postgresql://...``) name no file.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import StorageError

if TYPE_CHECKING:  # imported where a storage is opened: checking a URL costs no Optuna import
    import optuna

_IN_MEMORY = ("sqlite://", "sqlite:///:memory:")


def storage_file(url: str) -> Path | None:
    """The file behind a SQLite URL or a journal path (``None`` for server databases)."""
    if url.startswith("sqlite:///") and url not in _IN_MEMORY:
        return Path(url[len("sqlite:///") :])
    if "://" not in url:
        return Path(url)
    return None


def check_storage_url(url: str, *, create: bool = True) -> None:
    """What can be told of ``url`` without opening it (nor importing Optuna): an in-memory URL, a
    path that is neither a URL nor a journal file, a missing file (``create=False``) or folder.

    Raises:
        StorageError: the problem, in one line naming ``--storage``.
    """
    if url in _IN_MEMORY:
        raise StorageError(
            f"--storage {url}: an in-memory database keeps nothing; give a file, e.g. sqlite:///search.db"
        )
    file = storage_file(url)
    if "://" not in url and not url.endswith((".log", ".journal", ".jsonl")):
        raise StorageError(
            f"--storage {url!r}: give a URL such as sqlite:///search.db or a journal file ending in .log"
        )
    if file is not None and not file.exists():
        if not create:
            raise StorageError(f"--storage {url}: {file} does not exist")
        if not file.parent.is_dir():
            raise StorageError(f"--storage {url}: folder {file.parent} does not exist")


def open_storage(url: str, *, create: bool = True) -> optuna.storages.BaseStorage:
    """An RDB storage (with Optuna's heartbeat, so trials of a killed worker become FAIL) or, for a
    ``.log``/``.journal`` path, a file-backed ``JournalStorage`` that keeps a snapshot beside the
    file for fast opening (:class:`~ronas_optuna.journal.SnapshotJournalStorage`).

    Raises:
        ValueError: a bad URL, a missing driver or database, an in-memory URL (a search there
            would keep nothing), or ``create=False`` and the file does not exist (nothing is
            created then).
    """
    import optuna

    check_storage_url(url, create=create)
    if "://" not in url:
        from .journal import SnapshotJournalStorage

        return SnapshotJournalStorage(url)
    for attempt in range(SCHEMA_RACE_TRIES):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna's terms
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=60, grace_period=180, engine_kwargs=_engine_kwargs(url)
                )
        except ImportError:
            scheme = url.split("://", 1)[0]
            raise StorageError(
                f"--storage {url}: the database driver for {scheme} is not installed "
                "(for PostgreSQL: pip install -e '.[postgres]', which brings psycopg2)"
            ) from None
        except Exception as e:  # sqlalchemy's errors for bad URLs, refused connections, ...
            if attempt + 1 < SCHEMA_RACE_TRIES and _schema_race(e):
                time.sleep(0.5 * (attempt + 1))  # another process is creating the tables: they exist now
                continue
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise StorageError(f"--storage {url}: cannot open ({type(e).__name__}: {first})") from None
    raise AssertionError("unreachable")


#: Attempts to open a database whose tables another process may be creating at the same moment.
SCHEMA_RACE_TRIES = 3


def _schema_race(e: Exception) -> bool:
    """Two processes opening a new database both create Optuna's tables; the loser sees the
    winner's version row or tables."""
    text = str(e)
    return "alembic_version" in text or "already exists" in text


def default_artifact_dir(storage_url: str) -> Path:
    """``<stem>_artifacts`` beside a SQLite/journal file; ``./ronas_artifacts`` otherwise."""
    file = storage_file(storage_url)
    return file.with_name(f"{file.stem}_artifacts") if file is not None else Path("ronas_artifacts")


def default_run_root(storage_url: str) -> Path:
    """``<stem>_runs`` beside a SQLite/journal file; for a server database, a folder under
    ``./ronas_runs`` keyed by the URL, so two databases never share a supernet."""
    if storage_file(storage_url) is not None:
        art = default_artifact_dir(storage_url)
        return art.with_name(art.name[: -len("_artifacts")] + "_runs")
    key = hashlib.sha256(storage_url.encode()).hexdigest()[:12]
    return Path("ronas_runs") / key


#: Seconds a SQLite connection waits for another process's write lock before it gives up. SQLite's
#: 5 s default is short for several workers and readers on one file (a heartbeat write then fails
#: with "database is locked" while another process commits a trial).
SQLITE_BUSY_TIMEOUT_S = 60.0


def _engine_kwargs(url: str) -> dict[str, object]:
    if url.startswith("sqlite:"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return {}
