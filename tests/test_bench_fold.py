"""bench.fold: splits, keys and kept results."""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import optuna
import pytest

from ronas_optuna import SearchSettings
from ronas_optuna.bench.config import BenchmarkConfig
from ronas_optuna.bench.fold import (
    CLAIM,
    Busy,
    claim_alive,
    finished_study,
    fold_splits,
    kept_row,
    make_setup,
    not_waiting,
)
from ronas_optuna.data import DataError

IDS = [f"case_{i:03d}" for i in range(6)]


def test_folds_rotate_the_test_cases_and_never_leak_them():
    splits = fold_splits(BenchmarkConfig(data="x", folds=3), IDS)
    assert len(splits) == 3
    tests = [t for _, _, t in splits]
    assert sorted(c for t in tests for c in t) == IDS  # every case is held out exactly once
    for train, val, test in splits:
        assert set(train).isdisjoint(test) and set(val).isdisjoint(test) and set(train).isdisjoint(val)
        assert sorted(train + val + test) == IDS and train and val
    loo = fold_splits(BenchmarkConfig(data="x", folds=3), IDS[:3])
    assert [len(t) for _, _, t in loo] == [1, 1, 1]
    with pytest.raises(DataError, match="--folds 7"):
        fold_splits(BenchmarkConfig(data="x", folds=7), IDS)


def test_one_fold_keeps_the_configured_split():
    ((train, val, test),) = fold_splits(
        BenchmarkConfig(data="x", val_ids=["case_001"], test_ids=["case_002"]), IDS
    )
    assert val == ["case_001"] and test == ["case_002"] and "case_001" not in train


def test_one_fold_takes_explicit_training_cases_and_refuses_overlaps():
    cfg = BenchmarkConfig(data="x", train_ids=IDS[:2], val_ids=[IDS[2]], test_ids=[IDS[3]])
    ((train, val, test),) = fold_splits(cfg, IDS)
    assert train == IDS[:2] and val == [IDS[2]] and test == [IDS[3]]  # the other cases are unused
    with pytest.raises(DataError, match="overlap"):
        fold_splits(BenchmarkConfig(data="x", train_ids=IDS[:3], val_ids=[IDS[2]], test_ids=[IDS[3]]), IDS)
    with pytest.raises(DataError, match="no case named nope"):
        fold_splits(BenchmarkConfig(data="x", train_ids=["nope"], val_ids=[IDS[2]], test_ids=[IDS[3]]), IDS)


def test_an_interrupted_study_is_run_again(tmp_path, synthetic_root):
    from ronas_optuna.data.msd import MSDDataset

    storage = f"sqlite:///{tmp_path / 'i.db'}"
    cfg = BenchmarkConfig(data=str(synthetic_root), storage=storage, folds=2)
    ds = MSDDataset(cfg.data, spacing=2.0)
    setup = make_setup(cfg, ds, 0, fold_splits(cfg, ds.case_ids)[0])
    name = setup.study_name("ronas", 0)
    optuna.create_study(study_name=name, storage=storage).set_user_attr("benchmark", {})
    assert finished_study(setup, storage, name) is None  # no result: deleted, to be run again
    assert name not in optuna.get_all_study_names(storage)
    st = optuna.create_study(study_name=name, storage=storage)
    st.set_user_attr("benchmark:key", setup.key())
    st.set_user_attr("benchmark:result", {"test_dice": 0.5})
    kept = finished_study(setup, storage, name)
    assert kept is not None and kept.user_attrs["benchmark:result"] == {"test_dice": 0.5}
    # a result kept by an earlier version, before a setting existed, is still these settings
    old = json.loads(setup.key())
    del old["settings"]["warmup_sampling"]
    st.set_user_attr("benchmark:key", json.dumps(old))
    assert finished_study(setup, storage, name) is not None
    old["settings"]["warmup_steps"] += 1  # but not one of other settings
    st.set_user_attr("benchmark:key", json.dumps(old))
    with pytest.raises(ValueError, match="holds a benchmark result with other settings"):
        finished_study(setup, storage, name)


def test_another_dynunet_recipe_keeps_the_searches_but_not_dynunets_rows(tmp_path, synthetic_root):
    from ronas_optuna.data.msd import MSDDataset

    storage = f"sqlite:///{tmp_path / 'r.db'}"
    cfg = BenchmarkConfig(data=str(synthetic_root), storage=storage, folds=2, handmade_recipe="nnunet-sgd")
    ds = MSDDataset(cfg.data, spacing=2.0)
    split = fold_splits(cfg, ds.case_ids)[0]
    for method in ("ronas", "dynunet", "dynunet-recipe"):
        st = optuna.create_study(study_name=f"bench-{method}-fold0-seed0", storage=storage)
        st.set_user_attr("benchmark:key", make_setup(cfg, ds, 0, split).key())
        st.set_user_attr("benchmark:result", {"test_dice": 0.5})
    auto = make_setup(dataclasses.replace(cfg, handmade_recipe="auto"), ds, 0, split)
    assert finished_study(auto, storage, "bench-ronas-fold0-seed0", method="ronas") is not None
    for method in ("dynunet", "dynunet-recipe"):
        with pytest.raises(ValueError, match="holds a benchmark result with other settings"):
            finished_study(auto, storage, f"bench-{method}-fold0-seed0", method=method)


def test_a_kept_result_records_the_policy_it_ran_with(tmp_path, synthetic_root):
    from ronas_optuna.controller import SEARCH_CONTROLLER
    from ronas_optuna.data.msd import MSDDataset

    storage = f"sqlite:///{tmp_path / 'p.db'}"
    cfg = BenchmarkConfig(data=str(synthetic_root), storage=storage, folds=2)
    ds = MSDDataset(cfg.data, spacing=2.0)
    setup = make_setup(cfg, ds, 0, fold_splits(cfg, ds.case_ids)[0])
    key = json.loads(setup.key())
    assert key["policy"]["temperature"] == SEARCH_CONTROLLER.temperature  # "default", resolved
    st = optuna.create_study(study_name="bench-ronas-fold0-seed0", storage=storage)
    st.set_user_attr("benchmark:result", {"test_dice": 0.5})
    for policy, kept in ((key["policy"], True), (None, True), ({**key["policy"], "temperature": 3.0}, False)):
        stored = (
            {**key, "policy": policy}
            if policy is not None
            else {k: v for k, v in key.items() if k != "policy"}
        )
        st.set_user_attr("benchmark:key", json.dumps(stored))
        if kept:  # the same policy, or a key from before the policy was recorded
            assert finished_study(setup, storage, st.study_name) is not None
        else:  # a default changed since: not this benchmark's result
            with pytest.raises(ValueError, match="holds a benchmark result with other settings"):
                finished_study(setup, storage, st.study_name)


def _reference_setup(tmp_path):
    from ronas_optuna.storage import open_storage

    key = json.dumps({"settings": SearchSettings().to_dict()}, sort_keys=True)
    setup = SimpleNamespace(
        cfg=BenchmarkConfig(data="d", samplers=["ronas"], storage="sqlite://", folds=1),
        fold=0,
        study_name=lambda method, seed: f"bench-{method}-seed{seed}",
        key=lambda: key,
    )
    return setup, open_storage(f"sqlite:///{tmp_path / 'k.db'}"), key


def _claimed_by(storage, pid: int) -> optuna.Study:
    study = optuna.create_study(study_name="bench-ref-seed0", storage=storage)
    study.set_user_attr(CLAIM, {"host": socket.gethostname(), "pid": pid})
    return study


def test_a_reference_another_live_process_is_computing_is_waited_for_not_computed_again(tmp_path, capsys):
    """Two seeds run as two processes on one storage both need the fold's DynUNet recipe: the
    second waits for the first one's row instead of training the same recipes beside it."""
    setup, storage, key = _reference_setup(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        study = _claimed_by(storage, other.pid)
        assert finished_study(setup, storage, "bench-ref-seed0") is not None  # a live claim stays

        def finish() -> None:
            time.sleep(0.3)
            study.set_user_attr("benchmark:key", key)
            study.set_user_attr("benchmark:result", {"recipe": "adam"})

        threading.Thread(target=finish).start()
        computed = []
        row = kept_row(setup, storage, "ref", 0, lambda: computed.append(1) or {"recipe": "x"}, poll_s=0.1)
        assert row == {"recipe": "adam"} and not computed
        assert f"waiting for bench-ref-seed0: {socket.gethostname()}:{other.pid}" in capsys.readouterr().out
    finally:
        other.kill()
        other.wait()


def test_a_reference_another_process_computes_is_busy_when_not_waiting(tmp_path, live_pid):
    """Inside ``not_waiting`` a claimed row raises ``Busy`` at once (the caller does other rows
    first); the other process's study and claim stay."""
    setup, storage, _ = _reference_setup(tmp_path)
    _claimed_by(storage, live_pid)
    computed = []
    with not_waiting(), pytest.raises(Busy, match=f"bench-ref-seed0: {socket.gethostname()}:{live_pid}"):
        kept_row(setup, storage, "ref", 0, lambda: computed.append(1) or {"recipe": "x"}, poll_s=0.1)
    assert not computed
    held = optuna.load_study(study_name="bench-ref-seed0", storage=storage).user_attrs[CLAIM]
    assert held["pid"] == live_pid


def test_the_claim_of_a_process_that_is_gone_is_taken_over_and_a_failed_attempt_leaves_none(tmp_path):
    setup, storage, _ = _reference_setup(tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _claimed_by(storage, gone.pid)

    def fails() -> dict:
        assert optuna.load_study(study_name="bench-ref-seed0", storage=storage).user_attrs[CLAIM]["pid"] == (
            os.getpid()
        )
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        kept_row(setup, storage, "ref", 0, fails, poll_s=0.1)
    assert optuna.get_all_study_names(storage) == []  # no claim left to wait for
    _claimed_by(storage, gone.pid)
    assert kept_row(setup, storage, "ref", 0, lambda: {"recipe": "adam"}, poll_s=0.1) == {"recipe": "adam"}
    assert kept_row(setup, storage, "ref", 0, lambda: {"recipe": "x"}) == {"recipe": "adam"}  # kept


_RACER = """
import json, sys, time
from types import SimpleNamespace
import optuna
from ronas_optuna import SearchSettings
from ronas_optuna.bench.config import BenchmarkConfig
from ronas_optuna.bench.fold import CLAIM, kept_row
from ronas_optuna.storage import open_storage

url, log, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
setup = SimpleNamespace(
    cfg=BenchmarkConfig(data="d", samplers=["ronas"], storage="sqlite://", folds=1),
    fold=0,
    study_name=lambda method, seed: f"bench-{method}-seed{seed}",
    key=lambda: json.dumps({"settings": SearchSettings().to_dict()}, sort_keys=True),
)
storage = open_storage(url)
claim = optuna.Study.set_user_attr


def slow_claim(study, key, value):  # widen the gap between creating the study and claiming it
    if key == CLAIM:
        time.sleep(0.5)
    claim(study, key, value)


optuna.Study.set_user_attr = slow_claim
time.sleep(max(0.0, start - time.time()))  # every racer asks at once


def run():
    with open(log, "a") as f:
        f.write("computed\\n")
    time.sleep(1.0)
    return {"recipe": "adam"}


print(json.dumps(kept_row(setup, storage, "ref", 0, run, poll_s=0.2)))
"""


def test_processes_asking_for_one_reference_at_once_compute_it_once(tmp_path):
    """Creating the study is the step only one process wins: of four processes asking for the same
    row in the same instant, each half a second from creating the study to claiming it, one computes
    the row and the others wait for it."""
    _, storage, _ = _reference_setup(tmp_path)  # the file exists before the racers open it
    del storage
    log = tmp_path / "computed.txt"
    start = time.time() + 3.0
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, f"sqlite:///{tmp_path / 'k.db'}", str(log), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    rows = [json.loads(r.communicate(timeout=120)[0].splitlines()[-1]) for r in racers]
    assert [r.returncode for r in racers] == [0] * 4
    assert rows == [{"recipe": "adam"}] * 4
    assert log.read_text() == "computed\n"


def test_a_study_left_without_a_claim_is_taken_over_after_a_short_wait(tmp_path, monkeypatch):
    """A process that died between creating the study and claiming it leaves a claimless study: it is
    waited for briefly (its claim would follow in milliseconds), then taken over."""
    monkeypatch.setattr("ronas_optuna.bench.fold._CLAIM_GAP_S", 0.1)
    setup, storage, _ = _reference_setup(tmp_path)
    optuna.create_study(study_name="bench-ref-seed0", storage=storage)
    computed = []
    row = kept_row(setup, storage, "ref", 0, lambda: computed.append(1) or {"recipe": "sgd"}, poll_s=0.1)
    assert row == {"recipe": "sgd"} and computed == [1]
    study = optuna.load_study(study_name="bench-ref-seed0", storage=storage)
    assert study.user_attrs[CLAIM]["pid"] == os.getpid() and study.user_attrs["benchmark:result"] == row


def test_a_claim_is_alive_while_renewed_and_its_process_runs():
    here, now = socket.gethostname(), time.time()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert claim_alive({"host": here, "pid": live.pid, "beat": now})
        assert claim_alive({"host": here, "pid": live.pid})  # written before claims were renewed
        assert not claim_alive({"host": here, "pid": live.pid, "beat": now - 3600})  # its number, reused
    finally:
        live.kill()
        live.wait()
    assert not claim_alive({"host": here, "pid": live.pid, "beat": now})  # the process is gone
    assert not claim_alive({"host": here, "pid": os.getpid(), "beat": now})  # this process's own
    assert claim_alive({"host": "elsewhere", "pid": 1, "beat": now})  # another machine's: renewed
    assert not claim_alive({"host": "elsewhere", "pid": 1, "beat": now - 3600})  # not renewed: gone
    assert not claim_alive(None) and not claim_alive({"host": here, "pid": "?"})


def test_a_claim_is_renewed_while_its_row_is_computed_and_an_unrenewed_one_is_taken_over(
    tmp_path, monkeypatch
):
    """Another machine's process that died leaves a claim nobody renews: it is taken over once
    stale, where before it was waited for until someone deleted the study."""
    monkeypatch.setattr("ronas_optuna.bench.fold.CLAIM_BEAT_S", 0.05)
    setup, storage, _ = _reference_setup(tmp_path)
    study = optuna.create_study(study_name="bench-ref-seed0", storage=storage)
    study.set_user_attr(CLAIM, {"host": "elsewhere", "pid": 1, "beat": time.time() - 3600})
    beats = []

    def run() -> dict:
        for _ in range(2):
            beats.append(optuna.load_study(study_name="bench-ref-seed0", storage=storage).user_attrs[CLAIM])
            time.sleep(0.5)
        return {"recipe": "adam"}

    assert kept_row(setup, storage, "ref", 0, run, poll_s=0.1) == {"recipe": "adam"}
    assert [b["pid"] for b in beats] == [os.getpid()] * 2
    assert beats[1]["beat"] - beats[0]["beat"] >= 0.3  # renewed while it ran
