"""Fast join (issue 15): how long a worker that joins a long RONAS study takes to sample its first
trial, with the controller snapshot stored in the study against a full replay of every trial.

A study of N trials is built on the synthetic landscape (in memory, then copied into SQLite), then
a fresh storage connection and a fresh ``RONASSampler`` sample one trial: ``snapshot`` loads the
stored controller and replays the trials after it; ``replay`` (``snapshot_every=0``) learns from all
N. Both policies are checked bit-equal. Optuna's own cost is measured before and after them with
RandomSampler (the faster of the two is printed): ``Study.ask`` reads every trial of the study into
Optuna's cache, which no sampler can avoid.

    python benchmarks/sampler_join.py --trials 1000 10000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from ronas_optuna import RONASSampler, SearchSpace
from ronas_optuna.bench import Landscape

SPACE = SearchSpace.default(depth=4)


def build(n: int, url: str) -> float:
    t0 = time.perf_counter()
    mem = optuna.create_study(study_name="join", direction="maximize", sampler=RONASSampler(SPACE, seed=0))
    mem.optimize(Landscape(SPACE, seed=0), n_trials=n)
    optuna.copy_study(from_study_name="join", from_storage=mem._storage, to_storage=url)
    dst = optuna.load_study(study_name="join", storage=url)
    for k, v in mem._storage.get_study_system_attrs(mem._study_id).items():  # the snapshot, if not copied
        dst._storage.set_study_system_attr(dst._study_id, k, v)
    return time.perf_counter() - t0


def join(url: str, snapshot_every: int | None) -> tuple[float, Any]:
    """Seconds from loading the study to the first sampled architecture of a new trial
    (``snapshot_every=None``: Optuna's RandomSampler, the floor that loading the study sets)."""
    t0 = time.perf_counter()
    sampler: Any = (
        optuna.samplers.RandomSampler(seed=0)
        if snapshot_every is None
        else RONASSampler(SPACE, seed=0, snapshot_every=snapshot_every)
    )
    study = optuna.load_study(study_name="join", storage=optuna.storages.RDBStorage(url), sampler=sampler)
    trial = study.ask()
    SPACE.suggest(trial)
    seconds = time.perf_counter() - t0
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # leaves the study as it was for the next join
    return seconds, sampler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, nargs="+", default=[1000, 10000])
    a = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    print(
        "| trials in the study | build s | join with snapshot, s | full replay, s | ratio | bit-equal "
        "| RandomSampler join (loading the study), s |"
    )
    print("|---:|---:|---:|---:|---:|---|---:|")
    for n in a.trials:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'join.db'}"
            built = build(n, url)
            first_s, _ = join(url, None)  # warms the database file for everyone
            fast_s, fast = join(url, 100)
            slow_s, slow = join(url, 0)
            floor_s = min(first_s, join(url, None)[0])
            assert fast.controller is not None and slow.controller is not None
            equal = all(
                torch.equal(x, y)
                for x, y in zip(fast.controller.state_dict().values(), slow.controller.state_dict().values())
            )
            print(
                f"| {n} | {built:.0f} | {fast_s:.2f} | {slow_s:.2f} | {slow_s / fast_s:.1f}x | {equal} "
                f"| {floor_s:.2f} |"
            )


if __name__ == "__main__":
    main()
