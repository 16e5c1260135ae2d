import json
import os
import pickle

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from ronas_optuna.journal import SnapshotJournalStorage, snapshot_path

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _objective(trial: optuna.Trial) -> float:
    act = trial.suggest_categorical("act", ["relu", "gelu", 1, 1.0, True])
    x = trial.suggest_float("x", 1e-3, 1.0, log=True)
    n = trial.suggest_int("n", 1, 8)
    trial.set_user_attr("seconds", {"train": x, "validate": n})
    trial.report(x * n, step=0)
    return x * n + (act == "gelu")


def _grow(path, n: int, *, every: int = 5) -> optuna.Study:
    storage = SnapshotJournalStorage(path, snapshot_every=every)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr("note", "kept")
    study.optimize(_objective, n_trials=n)
    return study


def _plain(path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path)))).trials


def _reads(monkeypatch) -> list[int]:
    """The line each journal read of the test starts from."""
    starts: list[int] = []
    real = JournalFileBackend.read_logs
    monkeypatch.setattr(
        JournalFileBackend, "read_logs", lambda self, start: starts.append(start) or real(self, start)
    )
    return starts


def test_a_process_opens_from_the_snapshot_and_reads_only_the_lines_after_it(tmp_path, monkeypatch):
    path = tmp_path / "s.log"
    _grow(path, 23)
    header = json.loads(snapshot_path(path).read_bytes().split(b"\n", 1)[0])
    assert header["lines"] > 0 and header["bytes"] < path.stat().st_size  # trials 21, 22 came after it
    starts = _reads(monkeypatch)
    study = optuna.load_study(study_name="s", storage=SnapshotJournalStorage(path))
    assert starts[0] == header["lines"]
    assert study.trials == _plain(path) and len(study.trials) == 23
    assert study.user_attrs == {"note": "kept"} and study.best_trial.user_attrs["seconds"]
    # equal distributions come back as one object each
    dists = [t.distributions["act"] for t in study.trials[:20]]
    assert all(d is dists[0] for d in dists) and dists[0].choices == ("relu", "gelu", 1, 1.0, True)


def test_trials_running_at_the_snapshot_and_lines_from_plain_writers_are_read(tmp_path):
    path = tmp_path / "s.log"
    study = _grow(path, 5)
    running = study.ask()  # storage id 5: this process writes a snapshot with the trial running
    running.suggest_categorical("act", ["relu", "gelu", 1, 1.0, True])
    assert snapshot_path(path).exists()
    plain = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    plain.tell(running.number, 0.5)
    plain.optimize(_objective, n_trials=3)  # no snapshot: the plain storage writes none
    reopened = optuna.load_study(study_name="s", storage=SnapshotJournalStorage(path)).trials
    assert reopened == _plain(path) and len(reopened) == 9
    assert reopened[5].state == TrialState.COMPLETE and reopened[5].value == 0.5


def _rewrite_header(path, **changes) -> None:
    file = snapshot_path(path)
    head, body = file.read_bytes().split(b"\n", 1)
    file.write_bytes(json.dumps({**json.loads(head), **changes}).encode() + b"\n" + body)


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda p: _rewrite_header(p, optuna="0.0.1"), "written by Optuna 0.0.1"),
        (lambda p: os.truncate(p, 200), "shorter than the snapshot"),
        (lambda p: _rewrite_header(p, tail="0" * 64), "bytes differ"),
        (lambda p: snapshot_path(p).write_bytes(b"not json\n"), "unreadable"),
        (lambda p: _rewrite_header(p, lines=3), "does not match its header"),
    ],
    ids=["other_optuna", "truncated_journal", "other_journal", "damaged", "wrong_count"],
)
def test_a_snapshot_that_does_not_match_is_ignored_with_a_warning(tmp_path, damage, why):
    path = tmp_path / "s.log"
    _grow(path, 12)
    damage(path)
    with pytest.warns(UserWarning, match=why):
        storage = SnapshotJournalStorage(path)
    if path.stat().st_size > 200:
        assert optuna.load_study(study_name="s", storage=storage).trials == _plain(path)


def test_a_journal_started_again_under_the_same_name_ignores_the_old_snapshot(tmp_path):
    path = tmp_path / "s.log"
    _grow(path, 12)
    path.unlink()
    fresh = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    fresh.optimize(_objective, n_trials=40)  # longer than the old snapshot: only checksums tell
    with pytest.warns(UserWarning, match="bytes differ"):
        storage = SnapshotJournalStorage(path)
    assert optuna.load_study(study_name="s", storage=storage).trials == _plain(path)


def test_a_snapshot_never_runs_code(tmp_path):
    path = tmp_path / "s.log"
    _grow(path, 12)
    file = snapshot_path(path)
    head = file.read_bytes().split(b"\n", 1)[0]
    file.write_bytes(head + b"\n" + pickle.dumps(print))  # any global outside Optuna's state
    with pytest.warns(UserWarning, match="builtins.print is not part of a journal snapshot"):
        storage = SnapshotJournalStorage(path)
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 12


def test_no_snapshot_when_turned_off_and_bad_arguments_refused(tmp_path):
    path = tmp_path / "s.log"
    _grow(path, 12, every=0)
    assert not snapshot_path(path).exists()
    with pytest.raises(ValueError, match="snapshot_every"):
        SnapshotJournalStorage(path, snapshot_every=-1)


def test_a_snapshot_write_clears_what_killed_writers_left_and_spares_writes_in_progress(tmp_path):
    path = tmp_path / "s.log"
    final = snapshot_path(path)
    old, recent = (final.with_name(f".{final.name}.{tag}.tmp") for tag in ("abcd1234", "efgh5678"))
    for p in (old, recent):
        p.write_bytes(b"half a snapshot")
    os.utime(old, (0, 0))  # a killed writer's, long ago
    other = tmp_path / "notes.tmp"  # not one of ours
    other.write_bytes(b"x")
    os.utime(other, (0, 0))
    _grow(path, 6)  # writes the snapshot at trial 5
    assert final.exists() and not old.exists() and recent.exists() and other.exists()


def test_every_private_optuna_name_the_snapshot_relies_on_still_exists(tmp_path):
    """Fails loudly on an Optuna release that renamed or removed one (see journal.OPTUNA_PRIVATE)."""
    import importlib
    import inspect

    from ronas_optuna.journal import OPTUNA_PRIVATE

    storage = SnapshotJournalStorage(tmp_path / "j.log")
    objects = {
        "JournalStorage": storage,
        "JournalStorageReplayResult": storage._replay_result,
        "JournalFileBackend": storage._file,
    }
    restore = inspect.getsource(optuna.storages.JournalStorage.restore_replay_result)
    missing = []
    for owner, names in OPTUNA_PRIVATE.items():
        if owner == "JournalStorage.restore_replay_result":
            missing += [f"{owner} sets {n}" for n in names if f"r.{n} =" not in restore]
            continue
        target = objects.get(owner) or importlib.import_module(owner)
        missing += [f"{owner}.{n}" for n in names if not hasattr(target, n)]
    assert not missing, f"Optuna {optuna.__version__} changed what the journal snapshot uses: {missing}"
    assert isinstance(storage, optuna.storages.JournalStorage)


def test_a_torn_last_line_of_a_plain_optuna_journal_is_skipped_then_cut_by_the_next_writer(tmp_path):
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "plain.log"
    plain = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="p", storage=plain)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code": 4, "worker_id": "w-')  # a writer killed mid-append
    ours = SnapshotJournalStorage(path, snapshot_every=0)
    assert len(optuna.load_study(study_name="p", storage=ours).trials) == 3  # read as not written
    with pytest.warns(UserWarning, match=r"plain\.log: dropped an unfinished last line \(31 bytes\)"):
        optuna.load_study(study_name="p", storage=ours).optimize(
            lambda t: t.suggest_float("x", 0, 1), n_trials=1
        )
    assert path.read_bytes().startswith(whole) and path.read_bytes().endswith(b"\n")
    again = optuna.storages.JournalStorage(JournalFileBackend(str(path)))  # plain Optuna reads it again
    assert len(optuna.load_study(study_name="p", storage=again).trials) == 4


def test_a_damaged_line_in_the_middle_is_one_error_naming_the_file_and_line(tmp_path):
    from ronas_optuna.errors import StorageError
    from ronas_optuna.journal import damaged_line

    path = tmp_path / "j.log"
    study = optuna.create_study(study_name="d", storage=SnapshotJournalStorage(path, snapshot_every=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"op_code": 4, "wor\n'
    path.write_bytes(b"".join(lines))
    assert damaged_line(path) == 3
    with pytest.raises(StorageError, match=r"j\.log: line 3 of the journal is damaged"):
        SnapshotJournalStorage(path, snapshot_every=0)
