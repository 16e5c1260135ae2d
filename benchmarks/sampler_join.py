"""Fast join (issue 15): how long a worker that joins a long RONAS study takes to sample its first
trial, with the controller snapshot stored in the study against a full replay of every trial.

A study of N trials is built on the synthetic landscape (in memory, then copied into the storage),
then a new process (as a joining worker: its imports done, its first-use costs counted) opens the
storage and a fresh ``RONASSampler`` samples one trial: ``snapshot`` loads the stored controller and
replays the trials after it; ``replay`` (``snapshot_every=0``) learns from all N. Both policies are
checked bit-equal. Optuna's own cost is measured before and after them with
RandomSampler (the faster of the two is printed): ``Study.ask`` reads every trial of the study into
Optuna's cache, which no sampler can avoid. That floor depends on the storage, so both of the
file storages ``ronas search --storage`` takes are measured: SQLite and an Optuna journal file. A
journal file is opened two ways: as ``ronas search`` opens it (``SnapshotJournalStorage``, which
starts from a snapshot of Optuna's own state beside the file) and as plain Optuna does (every line).

    python benchmarks/sampler_join.py --trials 1000 10000 --storages journal sqlite
    python benchmarks/sampler_join.py --trials 1000 10000 --storages journal --grow

``--grow`` grows each study in its storage instead (slower to build; a journal file then holds every
snapshot the search wrote, as a real one does).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages.journal import JournalFileBackend, JournalStorage

from ronas_optuna import RONASSampler, SearchSpace, SnapshotJournalStorage
from ronas_optuna.bench import Landscape

SPACE = SearchSpace.default(depth=4)


def open_storage(location: str, plain: bool = False) -> optuna.storages.BaseStorage:
    """A fresh connection, as a joining worker opens it: a SQLite URL or a journal file path (as
    ``ronas search`` opens it, or with ``plain`` as plain Optuna does)."""
    if location.startswith("sqlite:"):
        return optuna.storages.RDBStorage(location)
    return JournalStorage(JournalFileBackend(location)) if plain else SnapshotJournalStorage(location)


def build(mem: optuna.Study, location: str) -> None:
    """Copies the in-memory study ``mem`` (with its controller snapshot) to ``location``."""
    optuna.copy_study(from_study_name="join", from_storage=mem._storage, to_storage=open_storage(location))
    dst = optuna.load_study(study_name="join", storage=open_storage(location))
    copied = dst._storage.get_study_system_attrs(dst._study_id)
    for k, v in mem._storage.get_study_system_attrs(mem._study_id).items():
        if (
            copied.get(k) != v
        ):  # the snapshot, where copy_study did not copy it (a journal would hold it twice)
            dst._storage.set_study_system_attr(dst._study_id, k, v)


def join_here(location: str, snapshot_every: int | None, plain: bool = False) -> tuple[float, str]:
    """Seconds from loading the study to the first sampled architecture of a new trial
    (``snapshot_every=None``: Optuna's RandomSampler, the floor that loading the study sets), and a
    digest of the policy it sampled with."""
    t0 = time.perf_counter()
    sampler: Any = (
        optuna.samplers.RandomSampler(seed=0)
        if snapshot_every is None
        else RONASSampler(SPACE, seed=0, snapshot_every=snapshot_every)
    )
    study = optuna.load_study(study_name="join", storage=open_storage(location, plain), sampler=sampler)
    trial = study.ask()
    SPACE.suggest(trial)
    seconds = time.perf_counter() - t0
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # leaves the study as it was for the next join
    digest = hashlib.sha256()
    for t in sampler.controller.state_dict().values() if snapshot_every is not None else []:
        digest.update(t.numpy().tobytes())
    return seconds, digest.hexdigest()


def join(location: str, snapshot_every: int | None, plain: bool = False) -> tuple[float, str]:
    """:func:`join_here` in a new process, as a worker joins: what a process pays on first use
    (lazy imports, first allocations) counts; importing torch, Optuna and ronas_optuna does not."""
    args = [sys.executable, __file__, "--join", location, "--snapshot-every", str(snapshot_every)]
    args += ["--plain"] if plain else []
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    seconds, digest = json.loads(out.splitlines()[-1])
    return float(seconds), str(digest)


def grow(location: str, n: int) -> None:
    """Grows the study in ``location`` itself, as a search does: a journal file then keeps every
    controller snapshot written along the way, where a copy holds only the last."""
    study = optuna.create_study(
        study_name="join",
        direction="maximize",
        storage=open_storage(location),
        sampler=RONASSampler(SPACE, seed=0),
    )
    study.optimize(Landscape(SPACE, seed=0), n_trials=n)


def row(kind: str, folder: str, n: int, mem: optuna.Study | None) -> str:
    """One table row: the study ``mem`` copied into a ``kind`` storage (``None``: grown there), then
    joined with the controller snapshot and with a full replay; a journal file also as plain
    Optuna opens it."""
    file = Path(folder) / ("join.db" if kind == "sqlite" else "join.log")
    location = f"sqlite:///{file}" if kind == "sqlite" else str(file)
    t0 = time.perf_counter()
    if mem is not None:
        build(mem, location)
    else:
        grow(location, n)
    made = time.perf_counter() - t0
    first_s, _ = join(location, None)  # warms the file for everyone
    fast_s, fast = join(location, 100)
    slow_s, slow = join(location, 0, plain=True)
    floor_s = min(first_s, join(location, None)[0])
    how = "copied" if mem is not None else "grown"
    plain = "– | –"
    if kind == "journal":
        plain_s, plain_policy = join(location, 100, plain=True)
        plain = f"{plain_s:.2f} | {min(join(location, None, plain=True)[0] for _ in range(2)):.2f}"
        fast = fast if plain_policy == fast else "differs"
    return (
        f"| {n} | {kind}, {how} | {file.stat().st_size / 1e6:.1f} | {made:.0f} | {fast_s:.2f} | {slow_s:.2f} "
        f"| {slow_s / fast_s:.1f}x | {fast == slow} | {floor_s:.2f} | {plain} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--storages", nargs="+", choices=["journal", "sqlite"], default=["journal", "sqlite"])
    p.add_argument("--grow", action="store_true", help="grow each study in its storage instead of copying it")
    p.add_argument("--join", help=argparse.SUPPRESS)  # the child process of join()
    p.add_argument("--snapshot-every", help=argparse.SUPPRESS)
    p.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    if a.join:
        every = None if a.snapshot_every == "None" else int(a.snapshot_every)
        print(json.dumps(join_here(a.join, every, a.plain)))
        return
    print(
        "| trials in the study | storage | file MB | build s | join with snapshot, s | full replay, s "
        "| ratio | bit-equal | RandomSampler join (loading the study), s "
        "| plain Optuna journal: join with snapshot, s | plain Optuna journal: RandomSampler join, s |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for n in a.trials:
        mem = None
        if not a.grow:
            mem = optuna.create_study(
                study_name="join", direction="maximize", sampler=RONASSampler(SPACE, seed=0)
            )
            mem.optimize(Landscape(SPACE, seed=0), n_trials=n)
        for kind in a.storages:
            with tempfile.TemporaryDirectory() as tmp:
                print(row(kind, tmp, n, mem), flush=True)


if __name__ == "__main__":
    main()
