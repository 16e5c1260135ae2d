"""Kill -9 soak (issue 13): a tiny search killed with SIGKILL at random moments, resumed each time.

Prints what the kills hit and the figures that must hold: COMPLETE trials lost 0, trials left
RUNNING 0, checkpoints that failed to load 0, largest checkpoint-study gap <= 1, temp files 0.
Exit code 1 when one does not.

    python benchmarks/kill_soak.py --kills 10 [--storage journal] [--ranks 2]
    python benchmarks/kill_soak.py --kills 10 --benchmark

With ``--ranks 2`` each round is a 2-rank search and one rank, drawn at random, is killed: the job
must also end by itself within a minute, in one line. With ``--benchmark`` a tiny ``ronas
benchmark`` is killed and restarted instead: it must go on from its own study and checkpoint, lose
at most the trial each kill hit, and keep its result with the full trial count.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from ronas_optuna.bench.soak import benchmark_soak, kill_soak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", choices=["sqlite", "journal"], default="sqlite")
    p.add_argument("--min-delay", type=float, default=4.0, help="seconds after a start, at least")
    p.add_argument("--max-delay", type=float, default=24.0)
    p.add_argument(
        "--faults",
        action="store_true",
        help="mid-soak: truncate the newest checkpoint, tear the journal's last line, export beside",
    )
    p.add_argument("--ranks", type=int, default=1, help="a data-parallel search; a rank is killed")
    p.add_argument("--benchmark", action="store_true", help="kill and restart a tiny ronas benchmark")
    p.add_argument("--trials", type=int, default=200, help="(--benchmark) the benchmark's trials")
    a = p.parse_args()
    if a.benchmark:
        with tempfile.TemporaryDirectory() as tmp:
            bench = benchmark_soak(
                tmp, kills=a.kills, seed=a.seed, trials=a.trials, delay=(a.min_delay, a.max_delay)
            )
        print(f"kill -9 soak of a benchmark: {bench}")
        sys.exit(0 if bench.ok else 1)
    with tempfile.TemporaryDirectory() as tmp:
        report = kill_soak(
            tmp,
            kills=a.kills,
            seed=a.seed,
            storage=a.storage,
            delay=(a.min_delay, a.max_delay),
            faults=a.faults,
            ranks=a.ranks,
        )
    print(f"kill -9 soak, {a.storage} storage{', with faults' if a.faults else ''}: {report}")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
