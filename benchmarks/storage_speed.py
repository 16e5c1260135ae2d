"""What a trial's bookkeeping costs in a SQLite file: Optuna's default (a rollback journal, every
commit waiting for the disk) against a search's (:func:`ronas_optuna.storage.write_ahead`: write-ahead
log, ``synchronous=NORMAL``), side by side in one run.

A RONAS trial writes its parameters (19 at depth 3) and about 15 user attributes, each in its own
transaction, so on a short trial (the paper's mode: two training steps) the commits' waits on the
disk are a visible part of its wall time. This script runs ``--trials`` trials of an objective that
does nothing but that bookkeeping, on a fresh file per round, alternating the two ways to open it
for ``--rounds`` rounds, and prints wall and CPU milliseconds per trial of each and their ratios.

    python benchmarks/storage_speed.py
    python benchmarks/storage_speed.py --trials 200 --rounds 5 --folder /scratch   # another disk
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna

from ronas_optuna.storage import close_storages, open_storage, write_ahead

PARAMS, ATTRS = 19, 15


def bookkeeping(trial: optuna.Trial) -> float:
    """A trial's writes without its work: parameters, then user attributes."""
    for i in range(PARAMS):
        trial.suggest_categorical(f"p{i}", ["a", "b", "c"])
    for i in range(ATTRS):
        trial.set_user_attr(f"a{i}", i)
    return 0.0


def plain(url: str) -> optuna.storages.BaseStorage:
    """The file as ``optuna.create_study(storage=url)`` opens it."""
    return optuna.storages.RDBStorage(url)


def ours(url: str) -> optuna.storages.BaseStorage:
    """The file as a ronas search opens it: :func:`open_storage`, then :func:`write_ahead`."""
    storage = open_storage(url)
    write_ahead()
    return storage


def one_round(folder: Path, name: str, opener: Callable[[str], object], trials: int) -> tuple[float, float]:
    """Wall and CPU seconds per trial of ``trials`` trials on a new file opened by ``opener``."""
    url = f"sqlite:///{folder / f'{name}-{time.time_ns()}.db'}"
    study = optuna.create_study(storage=opener(url), sampler=optuna.samplers.RandomSampler(seed=0))
    w, c = time.perf_counter(), time.process_time()
    study.optimize(bookkeeping, n_trials=trials)
    return (time.perf_counter() - w) / trials, (time.process_time() - c) / trials


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--folder", type=Path, help="where the files go (default: a temporary folder)")
    a = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ways = {"rollback journal (Optuna's default)": plain, "a search's (write-ahead log)": ours}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in ways}
    with tempfile.TemporaryDirectory(dir=a.folder) as tmp:
        for _ in range(a.rounds):
            for k, opener in ways.items():
                times[k].append(one_round(Path(tmp), k.split()[0], opener, a.trials))
                close_storages()
    print(f"{a.trials} trials x {a.rounds} rounds, {PARAMS} parameters and {ATTRS} attributes a trial")
    med = {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()
    }
    for k, (w, c) in med.items():
        print(f"{k:38s} wall {1e3 * w:7.2f} ms   CPU {1e3 * c:6.2f} ms per trial (median of rounds)")
    (wo, co), (wn, cn) = med.values()
    print(f"ratio old / new: wall {wo / wn:.1f}x, CPU {co / cn:.1f}x")


if __name__ == "__main__":
    main()
