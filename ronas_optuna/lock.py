"""One owner per run folder: a lock file with host, pid, start time and a heartbeat.

A search trains one supernet; two processes training copies of it would overwrite each other's
checkpoint. :func:`hold` takes ``<run folder>/run.lock`` for this process (re-entrant, released at
exit, by :func:`release`, or at the end of a :func:`released_after` block) and refreshes its
heartbeat on a daemon thread. A lock whose process is gone (same host) or whose heartbeat is older
than ``stale_after_s`` (any host) is taken over, with a log message;
a live one raises :class:`RunFolderBusy` naming its holder.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import RunFolderBusy

LOCK_NAME = "run.lock"
#: Seconds between heartbeats, and after which a silent holder counts as gone.
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0

log = logging.getLogger(__name__)
_held: dict[Path, _Heartbeat] = {}
_mutex = threading.Lock()


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float
    heartbeat: float
    purpose: str

    @classmethod
    def me(cls, purpose: str) -> Holder:
        now = time.time()
        return cls(socket.gethostname(), os.getpid(), now, now, purpose)

    def same_process(self, other: Holder) -> bool:
        return (self.host, self.pid, self.started) == (other.host, other.pid, other.started)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"{self.purpose} by pid {self.pid} on {self.host} since {since}"


def read_holder(folder: str | os.PathLike[str]) -> Holder | None:
    """The lock's holder, or ``None`` when there is no (readable) lock."""
    try:
        d: dict[str, Any] = json.loads((Path(folder) / LOCK_NAME).read_text())
        return Holder(
            str(d["host"]), int(d["pid"]), float(d["started"]), float(d["heartbeat"]), str(d["purpose"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_gone(holder: Holder, *, stale_after_s: float = STALE_AFTER_S, now: float | None = None) -> bool:
    """Its process has exited (same host) or its heartbeat is older than ``stale_after_s``."""
    if (now if now is not None else time.time()) - holder.heartbeat > stale_after_s:
        return True
    if holder.host != socket.gethostname():
        return False
    if holder.pid == os.getpid():  # this process, which does not hold it (see hold): a reused pid
        return True
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def hold(
    folder: str | os.PathLike[str],
    purpose: str = "search",
    *,
    stale_after_s: float = STALE_AFTER_S,
    heartbeat_s: float = HEARTBEAT_S,
) -> None:
    """Make this process the owner of ``folder`` until it exits (or :func:`release`).

    Raises:
        RunFolderBusy: a live process holds it.
    """
    path = Path(folder).resolve()
    with _mutex:
        if path in _held:
            return
        path.mkdir(parents=True, exist_ok=True)
        me = Holder.me(purpose)
        if not _create(path / LOCK_NAME, me):
            old = read_holder(path)
            if old is not None and not is_gone(old, stale_after_s=stale_after_s):
                raise RunFolderBusy(_busy_message(path, old))
            _write(path, me)
            time.sleep(0.05)  # two takers: the last writer wins, the other sees it and stops
            now = read_holder(path)
            if now is None or not now.same_process(me):
                raise RunFolderBusy(_busy_message(path, now or old or me))
            log.warning(
                "took over %s from %s (%s)",
                path / LOCK_NAME,
                old.describe() if old else "an unreadable lock",
                "process gone" if old else "no holder",
            )
        beat = _Heartbeat(path, me, heartbeat_s)
        _held[path] = beat
        beat.start()


def holds(folder: str | os.PathLike[str]) -> bool:
    """Whether this process holds ``folder``."""
    with _mutex:
        return Path(folder).resolve() in _held


def release(folder: str | os.PathLike[str]) -> None:
    """Give up ``folder`` (the lock file goes, if it is still this process's)."""
    path = Path(folder).resolve()
    with _mutex:
        beat = _held.pop(path, None)
    if beat is not None:
        beat.stop()
        cur = read_holder(path)
        if cur is not None and cur.same_process(beat.me):
            (path / LOCK_NAME).unlink(missing_ok=True)


def _busy_message(path: Path, holder: Holder) -> str:
    return (
        f"{path}: held by {holder.describe()}; one process trains a study's supernet (wait for it, "
        "or stop it and resume)"
    )


def _create(file: Path, me: Holder) -> bool:
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(asdict(me)))
    return True


def _write(path: Path, holder: Holder) -> None:
    from .files import atomic_write_text  # (files imports torch; the CLI imports this module at start)

    atomic_write_text(path / LOCK_NAME, json.dumps(asdict(holder)))


class _Heartbeat(threading.Thread):
    def __init__(self, path: Path, me: Holder, every_s: float) -> None:
        super().__init__(name=f"ronas-lock-{path.name}", daemon=True)
        self.path, self.me, self.every_s = path, me, every_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.every_s):
            cur = read_holder(self.path)
            if cur is None or not cur.same_process(self.me):
                log.error("lost %s to %s", self.path / LOCK_NAME, cur.describe() if cur else "nobody")
                return
            _write(self.path, Holder(**{**asdict(self.me), "heartbeat": time.time()}))

    def stop(self) -> None:
        """Stop beating and wait for a beat in progress, so no write follows the release."""
        self._stop_event.set()
        if self is not threading.current_thread() and self.is_alive():
            self.join()


@contextlib.contextmanager
def released_after() -> Iterator[None]:
    """Give up, when the block ends, every folder this process took inside it (those it held
    before stay held): a command run in-process (a notebook, a test's ``CliRunner``) leaves no lock
    and no heartbeat thread behind."""
    with _mutex:
        before = set(_held)
    try:
        yield
    finally:
        with _mutex:
            taken = [p for p in _held if p not in before]
        for path in taken:
            release(path)


@atexit.register
def _release_all() -> None:
    for path in list(_held):
        release(path)
