"""A journal-file storage that a joining process opens from a snapshot instead of the whole file.

Optuna's ``JournalStorage`` rebuilds a study by replaying every line of its file: about 1 ms per
trial of a search (one line per decision, plus the trial's other writes), so 10 s before a worker
joining a 10,000-trial study can sample. :class:`SnapshotJournalStorage` is that storage plus a
snapshot of its replayed state beside the file (``search.log`` → ``search.log.snapshot``),
rewritten whenever this process creates every ``snapshot_every``-th trial of the file (Optuna's
own interval for its Redis snapshots); a process that opens the file loads the snapshot and
replays only the lines written after it.

The snapshot is a pickle of Optuna's replay state behind a one-line JSON header that ties it to the
journal: the lines and bytes it covers, SHA-256 checksums of the journal's first and last KiB
before that point, and the Optuna version. One that does not match (another file, a journal
truncated or started again, another Optuna version, a damaged file) is ignored with a warning, and
the whole journal is read as plain Optuna reads it. It is loaded with an unpickler that builds
only Optuna's study, trial and distribution classes and datetimes, with the garbage collector
paused (a 10,000-trial state is a few hundred thousand objects). Before pickling, equal
distributions of the trials are made one shared object (a distribution is an immutable value), so
a 10,000-trial snapshot is a few MB and loads in a fraction of a second.

The journal itself is unchanged: plain Optuna, the dashboard and older versions read it as before.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import pickle
import warnings
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.storages.journal._base import BaseJournalSnapshot
from optuna.storages.journal._file import get_lock_file
from optuna.storages.journal._storage import JournalStorageReplayResult
from optuna.trial import FrozenTrial

from .errors import SettingsError, StorageError
from .files import atomic_write_bytes, remove_stale_temp_files

#: Optuna's private names this module relies on (Optuna 4.x-5.x); ``tests/test_journal.py`` checks
#: each against the installed Optuna, so a release that changes one fails loudly there.
OPTUNA_PRIVATE = {
    "optuna.storages.journal._base": ("BaseJournalSnapshot",),
    "optuna.storages.journal._storage": ("JournalStorageReplayResult",),
    "JournalStorage": ("_replay_result", "_thread_lock", "_worker_id_prefix"),
    "JournalStorageReplayResult": ("log_number_read", "_trials", "_worker_id_prefix"),
    # what Optuna's own restore_replay_result resets on a loaded state, as ours does
    "JournalStorage.restore_replay_result": (
        "_worker_id_prefix",
        "_worker_id_to_owned_trial_id",
        "_last_created_trial_id_by_this_process",
    ),
    "JournalFileBackend": ("_file_path", "_log_number_offset", "_lock"),
    "optuna.storages.journal._file": ("get_lock_file",),
}
_FORMAT = 1
_CHECK_BYTES = 1024
_ALLOWED = {
    ("optuna.storages.journal._storage", "JournalStorageReplayResult"),
    ("optuna.study._frozen", "FrozenStudy"),
    ("optuna.study._study_direction", "StudyDirection"),
    ("optuna.trial._frozen", "FrozenTrial"),
    ("optuna.trial._state", "TrialState"),
    ("datetime", "datetime"),
    ("datetime", "timezone"),
    ("datetime", "timedelta"),
}


def snapshot_path(journal: str | os.PathLike[str]) -> Path:
    """Where the snapshot of ``journal`` lives."""
    return Path(f"{os.fspath(journal)}.snapshot")


class SnapshotJournalStorage(JournalStorage):
    """Optuna's file-backed ``JournalStorage`` that opens from, and keeps, a snapshot.

    Args:
        path: The journal file (created when missing, as Optuna does).
        snapshot_every: Write the snapshot when this process creates a trial whose storage id is a
            multiple of it; ``0``: never write one (one that exists is still read).
    """

    def __init__(self, path: str | os.PathLike[str], *, snapshot_every: int = 100) -> None:
        if snapshot_every < 0:
            raise SettingsError(f"snapshot_every must be >= 0, got {snapshot_every}")
        self._path = os.fspath(path)
        self._snapshot_every = snapshot_every
        self._canonical: dict[str, BaseDistribution] = {}
        self._canonical_ids: set[int] = set()
        # Optuna's own constructor: it asks the backend for a snapshot (BaseJournalSnapshot), hands
        # it to restore_replay_result below, then reads the lines written after it.
        self._file = _SnapshotFileBackend(self._path)
        super().__init__(self._file)

    # ------------------------------------------------------------------ writing
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        every = self._snapshot_every
        if every and trial_id and trial_id % every == 0:
            with self._thread_lock:
                self._save()
        return trial_id

    def _save(self) -> None:
        """Pickle the replay state with its header, atomically replacing the last snapshot."""
        state = self._replay_result
        lines = state.log_number_read
        end = self._file._log_number_offset.get(lines)
        if not lines or end is None:
            return
        self._share_distributions()
        header = {"format": _FORMAT, "optuna": optuna.__version__, "lines": lines, "bytes": end}
        header.update(_checksums(self._path, end))
        with _gc_paused():
            body = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        final = snapshot_path(self._path)
        try:
            atomic_write_bytes(final, json.dumps(header).encode() + b"\n" + body)
        except OSError as e:  # a full disk or a read-only folder costs the snapshot, not the trial
            warnings.warn(f"{final}: snapshot not written ({e})", stacklevel=3)
            return
        # what writers killed mid-write left (a write in progress is recent and stays)
        remove_stale_temp_files(final.parent, older_than_s=600)

    def _share_distributions(self) -> None:
        """Make equal distributions of the trials one object, so the pickle holds each once."""
        canonical, known = self._canonical, self._canonical_ids
        for trial in self._replay_result._trials.values():
            dists = trial.distributions  # the trial's own dict: its values are replaced in place
            for name, d in dists.items():
                if id(d) not in known:
                    shared = canonical.setdefault(repr(d), d)  # repr tells 1, 1.0 and True apart
                    known.add(id(shared))
                    dists[name] = shared

    # ------------------------------------------------------------------ reading
    def restore_replay_result(self, snapshot: bytes) -> None:
        """Start from ``snapshot`` (Optuna calls this as it opens the journal) when its header
        matches the journal, loading only Optuna's classes; otherwise from nothing, with a warning."""
        loaded = _load(snapshot, self._path)
        if isinstance(loaded, str):
            file = snapshot_path(self._path)
            warnings.warn(f"{file}: snapshot ignored, {loaded}; reading the whole journal", stacklevel=4)
            return
        state, end = loaded
        state._worker_id_prefix = self._worker_id_prefix  # as JournalStorage.restore_replay_result
        state._worker_id_to_owned_trial_id = {}
        state._last_created_trial_id_by_this_process = -1
        self._replay_result = state
        self._file._log_number_offset[state.log_number_read] = end
        self._share_distributions()  # loaded shared: one repr per distinct object registers them


class _SnapshotFileBackend(JournalFileBackend, BaseJournalSnapshot):
    """Optuna's journal file backend with the snapshot hook Optuna's ``JournalStorage`` reads
    when it opens (the bytes of the snapshot file beside the journal), and torn lines handled: a
    last line without its end (a writer killed mid-append) is not written yet, so readers skip it
    (as Optuna does) and the next writer first cuts it off, with a warning; a damaged line that is
    not the last stops the read with one line naming the file and the line."""

    def load_snapshot(self) -> bytes | None:
        try:
            return snapshot_path(self._file_path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            warnings.warn(f"{snapshot_path(self._file_path)}: snapshot unreadable ({e})", stacklevel=5)
            return None

    def save_snapshot(self, snapshot: bytes) -> None:
        """Unused: :class:`SnapshotJournalStorage` writes its own snapshot, with the header that
        ties it to the journal's bytes (Optuna's bytes carry none)."""

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        try:
            yield from super().read_logs(log_number_from)
        except ValueError as e:  # Optuna's "Invalid log format." and JSON decode errors
            line = damaged_line(self._file_path)
            where = f"line {line}" if line is not None else "a line"
            raise StorageError(
                f"{self._file_path}: {where} of the journal is damaged ({e}) and lines follow it; "
                "restore the file from a copy, or remove that line from a copy of it and open the copy"
            ) from None

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        with get_lock_file(self._lock):  # as Optuna appends, with the torn end cut off first
            _cut_torn_end(self._file_path)
            data = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            with open(self._file_path, "ab") as f:
                f.write(data.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())


def _cut_torn_end(path: str) -> int:
    """Truncate ``path`` after its last complete line; returns the bytes dropped (0: none)."""
    size = os.path.getsize(path)
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        end, block = size, 1 << 16
        while end > 0:  # the last newline, searched backwards
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                end = start + cut + 1
                break
            end = start
        f.truncate(end)
        f.flush()
        os.fsync(f.fileno())
    dropped = size - end
    warnings.warn(
        f"{path}: dropped an unfinished last line ({dropped} bytes) that a killed writer left",
        stacklevel=4,
    )
    return dropped


def damaged_line(path: str | os.PathLike[str]) -> int | None:
    """The 1-based number of the first line of ``path`` that is not complete JSON, other than an
    unfinished last line (``None``: there is none)."""
    with open(path, "rb") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.endswith(b"\n"):
            return None if number == len(lines) else number
        try:
            json.loads(line)
        except ValueError:
            return number
    return None


def _load(snapshot: bytes, journal: str) -> tuple[JournalStorageReplayResult, int] | str:
    """The state in ``snapshot`` and the journal byte it ends at, or why it is not usable."""
    line, _, body = snapshot.partition(b"\n")
    try:
        header = json.loads(line)
    except ValueError as e:
        return f"it is unreadable ({e})"
    why = _mismatch(header, journal)
    if why is not None:
        return why
    try:
        with _gc_paused():
            state = _Unpickler(io.BytesIO(body)).load()
    except Exception as e:  # any damage: the journal is the truth
        return f"it does not load ({type(e).__name__}: {e})"
    if not isinstance(state, JournalStorageReplayResult) or state.log_number_read != header["lines"]:
        return "its state does not match its header"
    return state, int(header["bytes"])


def _checksums(path: str, end: int) -> dict[str, str]:
    """SHA-256 of the journal's first and last ``_CHECK_BYTES`` before byte ``end``."""
    with open(path, "rb") as f:
        head = f.read(min(end, _CHECK_BYTES))
        f.seek(max(end - _CHECK_BYTES, 0))
        tail = f.read(min(end, _CHECK_BYTES))
    return {"head": hashlib.sha256(head).hexdigest(), "tail": hashlib.sha256(tail).hexdigest()}


def _mismatch(header: Any, path: str) -> str | None:
    """Why a snapshot with ``header`` is not of the journal at ``path`` (``None``: it is)."""
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        return "its format is unknown"
    if header.get("optuna") != optuna.__version__:
        return f"it was written by Optuna {header.get('optuna')} (this is {optuna.__version__})"
    end = header.get("bytes")
    if not isinstance(end, int) or not isinstance(header.get("lines"), int) or end <= 0:
        return "its header is damaged"
    if os.path.getsize(path) < end:
        return "the journal is shorter than the snapshot"
    sums = _checksums(path, end)
    if sums["head"] != header.get("head") or sums["tail"] != header.get("tail"):
        return "the journal's bytes differ from the ones it was taken from"
    return None


class _Unpickler(pickle.Unpickler):
    """Builds only the classes of Optuna's replay state (a snapshot is data, never code)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "optuna.distributions":
            cls = super().find_class(module, name)
            if isinstance(cls, type) and issubclass(cls, BaseDistribution):
                return cls
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a journal snapshot")


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector, which otherwise rescans every object built so far."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
