"""What a storage URL means (:class:`StorageURL`): the file behind it, how to open it, and the
folders that go with it.

``sqlite:///search.db`` and a journal path (``search.log``) name files; the artifact and run folders
of such a study sit beside that file. Server databases (``postgresql://...``) name no file.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import sqlite3
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import StorageError

if TYPE_CHECKING:  # imported where a storage is opened: checking a URL costs no Optuna import
    import optuna
    import sqlalchemy

_IN_MEMORY = ("sqlite://", "sqlite:///:memory:")


@dataclass(frozen=True)
class StorageURL:
    """A ``--storage`` value read once: the URL, the file behind it (``None`` for server
    databases), and the folders that go with it. Build it with :meth:`parse` at the edge (the
    command line, :func:`~ronas_optuna.search.create_search`); everything after reads its fields."""

    url: str
    file: Path | None

    @classmethod
    def parse(cls, url: str | StorageURL) -> StorageURL:
        """``url`` read (a :class:`StorageURL` is returned as it is); nothing is checked."""
        if isinstance(url, StorageURL):
            return url
        if url.startswith("sqlite:///") and url not in _IN_MEMORY:
            return cls(url, Path(url[len("sqlite:///") :]))
        return cls(url, Path(url) if "://" not in url else None)

    def __str__(self) -> str:
        return self.url

    @property
    def journal(self) -> bool:
        """A journal file (a path, not a URL)."""
        return "://" not in self.url

    @property
    def artifact_dir(self) -> Path:
        """``<stem>_artifacts`` beside a SQLite/journal file; ``./ronas_artifacts`` otherwise."""
        if self.file is None:
            return Path("ronas_artifacts")
        return self.file.with_name(f"{self.file.stem}_artifacts")

    @property
    def run_root(self) -> Path:
        """``<stem>_runs`` beside a SQLite/journal file; for a server database, a folder under
        ``./ronas_runs`` keyed by the URL, so two databases never share a supernet."""
        if self.file is not None:
            return self.file.with_name(f"{self.file.stem}_runs")
        return Path("ronas_runs") / hashlib.sha256(self.url.encode()).hexdigest()[:12]

    def check(self, *, create: bool = True) -> StorageURL:
        """What can be told without opening it (nor importing Optuna): an in-memory URL, a path
        that is neither a URL nor a journal file, a missing file (``create=False``) or folder.

        Raises:
            StorageError: the problem, in one line naming ``--storage``.
        """
        url, file = self.url, self.file
        if url in _IN_MEMORY:
            raise StorageError(
                f"--storage {url}: an in-memory database keeps nothing; give a file, e.g. sqlite:///search.db"
            )
        if self.journal and not url.endswith((".log", ".journal", ".jsonl")):
            raise StorageError(
                f"--storage {url!r}: give a URL such as sqlite:///search.db or a journal file ending in .log"
            )
        if file is not None and not file.exists():
            if not create:
                raise StorageError(f"--storage {url}: {file} does not exist")
            if not file.parent.is_dir():
                raise StorageError(f"--storage {url}: folder {file.parent} does not exist")
        return self

    def open(self, *, create: bool = True) -> optuna.storages.BaseStorage:
        """An RDB storage (with Optuna's heartbeat, so trials of a killed worker become FAIL) or,
        for a journal path, a file-backed ``JournalStorage`` that keeps a snapshot beside the file
        for fast opening (:class:`~ronas_optuna.journal.SnapshotJournalStorage`).

        Raises:
            StorageError: what :meth:`check` refuses, a missing driver or database, or a URL the
                database refuses (nothing is created when ``create=False``).
        """
        import optuna

        self.check(create=create)
        url = self.url
        if self.journal:
            from .journal import SnapshotJournalStorage

            return SnapshotJournalStorage(url)
        for attempt in range(SCHEMA_RACE_TRIES):
            try:
                with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna's terms
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    rdb = optuna.storages.RDBStorage(
                        url, heartbeat_interval=60, grace_period=180, engine_kwargs=_engine_kwargs(url)
                    )
                if url.startswith("sqlite:"):
                    _OPEN_FILES.add(rdb.engine)
                return rdb
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


def open_storage(url: str | StorageURL, *, create: bool = True) -> optuna.storages.BaseStorage:
    """``StorageURL.parse(url).open(create=create)``: the storage for a user's own study."""
    return StorageURL.parse(url).open(create=create)


#: Attempts to open a database whose tables another process may be creating at the same moment.
SCHEMA_RACE_TRIES = 3


def _schema_race(e: Exception) -> bool:
    """Two processes opening a new database both create Optuna's tables; the loser sees the
    winner's version row or tables."""
    text = str(e)
    return "alembic_version" in text or "already exists" in text


#: Seconds a SQLite connection waits for another process's write lock before it gives up. SQLite's
#: 5 s default is short for several workers and readers on one file (a heartbeat write then fails
#: with "database is locked" while another process commits a trial).
SQLITE_BUSY_TIMEOUT_S = 60.0


def _engine_kwargs(url: str) -> dict[str, object]:
    if url.startswith("sqlite:"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return {}


#: The SQLite engines this process opened (:func:`write_ahead`, :func:`close_storages` act on them),
#: and those of them in write-ahead-log mode.
_OPEN_FILES: weakref.WeakSet[sqlalchemy.engine.Engine] = weakref.WeakSet()
_WRITE_AHEAD: weakref.WeakSet[sqlalchemy.engine.Engine] = weakref.WeakSet()


def write_ahead() -> None:
    """From now on, every connection to the SQLite files this process opened is in write-ahead-
    log mode with ``synchronous=NORMAL``: a commit appends to ``<file>-wal`` without waiting for the
    disk (about 20 ms a commit in SQLite's default rollback journal, and a trial commits each
    parameter and attribute on its own), readers do not block the writer, and a killed process
    loses nothing it committed (a power cut may lose the last commits, never the file's
    consistency). A search calls it when its trials start: a command that fails before, or only
    reads, leaves the file as it was. Every process using the file must be on one host (SQLite's
    WAL does not work across a network file system: several hosts take PostgreSQL)."""
    from sqlalchemy import event

    for engine in list(_OPEN_FILES):
        if engine not in _WRITE_AHEAD:
            event.listen(engine, "connect", _wal_pragmas)
            engine.dispose()  # its pooled connections reconnect in WAL mode
            _WRITE_AHEAD.add(engine)


def _wal_pragmas(dbapi_connection: Any, _record: Any = None) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.OperationalError:  # a read-only file keeps its journal: it is only read
        pass
    finally:
        cursor.close()


@atexit.register
def close_storages(url: str | None = None) -> None:
    """Close the pooled connections of every SQLite file this process opened, or only of the file
    of ``url`` (they reopen when used again), and put each file it wrote ahead, if no other
    connection has it open, back in SQLite's rollback journal: the log is folded into the file and
    ``-wal``/``-shm`` are removed. A command that ends calls this, so the files it leaves do not
    change later, whenever garbage collection would have closed them, and a finished study's file
    reads anywhere (a WAL file cannot be read from a read-only folder); so does the process's exit."""
    engines = list(_OPEN_FILES)
    if url is not None:
        database = _database(url)
        engines = [e for e in engines if database is not None and _database(str(e.url)) == database]
    for engine in engines:
        engine.dispose()
        if engine in _WRITE_AHEAD:
            _at_rest(str(engine.url.database))


def _database(url: str) -> str | None:
    """The absolute path of a ``sqlite:///`` URL's file (``None`` for any other URL)."""
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return None
    return os.path.abspath(url[len("sqlite:///") :])


def _at_rest(path: str) -> None:
    """``path`` in the rollback journal, unless a connection (this process's or another's) still
    has it open: then it stays in WAL mode, at once (no wait for the lock), for its last user."""
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=0)) as connection:
            connection.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error:
        pass
