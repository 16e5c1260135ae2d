"""Files the package writes and reads: atomic writes, a background checkpoint writer, checkpoint
reads with clear errors, and the removal of what an interrupted write left behind.

Nothing here knows about networks or studies; every module that writes a file uses these.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch

from .errors import CheckpointError, UnreadableCheckpoint, WriteError

__all__ = [
    "BackgroundWriter",
    "CheckpointError",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "cpu_copy",
    "previous_path",
    "read_checkpoint",
    "remove_stale_temp_files",
]


def atomic_torch_save(obj: Any, path: str | os.PathLike[str], *, keep_previous: bool = False) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``.

    ``keep_previous``: the file that was at ``path`` becomes :func:`previous_path` first, so the
    last two complete files exist (a process killed between the two renames leaves the previous
    one, which ``NASObjective`` resumes from when the newest is missing or unreadable).
    """
    _atomic_write(path, lambda f: torch.save(obj, f), keep_previous=keep_previous)


def previous_path(path: str | os.PathLike[str]) -> Path:
    """Where the previous generation of ``path`` is kept: ``supernet.pt`` -> ``supernet.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def cpu_copy(obj: Any) -> Any:
    """``obj`` with every tensor (in dicts, lists, tuples) replaced by a detached CPU copy."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, Mapping):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


class BackgroundWriter:
    """Atomic ``torch.save`` on one daemon thread, so training need not wait for the disk.

    A payload submitted while another waits replaces it (only the newest state matters);
    :meth:`flush` waits until everything submitted is on disk and re-raises a write's error.
    A process killed mid-write leaves the previous file and a temporary file, which
    :func:`remove_stale_temp_files` deletes at the next start.
    """

    def __init__(self, *, keep_previous: bool = False) -> None:
        self._keep_previous = keep_previous
        self._cv = threading.Condition()
        self._pending: tuple[Any, Path] | None = None
        self._busy = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, payload: Any, path: str | os.PathLike[str]) -> None:
        with self._cv:
            self._pending = (payload, Path(path))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ronas-checkpoint", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def flush(self) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self._pending is None and not self._busy)
            error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._pending is not None)
                assert self._pending is not None
                (payload, path), self._pending = self._pending, None
                self._busy = True
            try:
                atomic_torch_save(payload, path, keep_previous=self._keep_previous)
            except BaseException as e:  # reported by flush()
                with self._cv:
                    self._error = e
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) through a uniquely named temporary file and ``os.replace``."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` through a uniquely named temporary file and ``os.replace``."""
    _atomic_write(path, lambda f: f.write(data))


def _atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any], *, keep_previous: bool = False
) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; keep the usual permissions
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
            error = WriteError(_write_message(path, e))
            error.errno = e.errno
            raise error from None
        raise


#: What the operating system says when a folder cannot take a file: no space, a quota, a read-only
#: file system, no permission.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _write_message(path: Path, e: OSError) -> str:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 1e9:.2f} GB free"
    except OSError:
        free = "free space unknown"
    return f"{path.parent}: cannot write {path.name} ({e.strerror or e}; {free})"


def remove_stale_temp_files(folder: str | os.PathLike[str], older_than_s: float = 60.0) -> list[Path]:
    """Delete this package's temporary files (``.<name>.<random>.tmp...``) that an interrupted
    write left in ``folder``; recent ones may belong to a write in progress and stay."""
    now = time.time()
    removed = []
    for p in Path(folder).glob(".*.tmp*"):
        if p.is_file() and now - p.stat().st_mtime > older_than_s:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with clear errors for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableCheckpoint(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated/corrupt archives
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "weights_only" in first.lower() or "weights only" in first.lower():
            first = "not a file ronas_optuna wrote"  # torch's advice to unpickle it would be unsafe
        raise UnreadableCheckpoint(
            f"{path}: unreadable or corrupt file ({type(e).__name__}: {first})"
        ) from None
    if not isinstance(payload, dict):
        raise UnreadableCheckpoint(f"{path}: unexpected checkpoint content")
    return payload
