"""Starting a command again under torchrun, one process per rank (``ronas search --nproc N``).

Only rank 0 writes to the console; the other ranks' standard error goes to a file each, so that
when a rank stops, one line can say which rank stopped first and the last thing it said.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

#: Where :func:`run_ranks` asks the ranks other than 0 to write their standard error (a folder).
RANK_LOGS_ENV = "RONAS_RANK_LOGS"


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (the ranks run the command once each)."""
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    return args


def run_ranks(nproc: int, argv: list[str]) -> tuple[int, str]:
    """Run ``python -m ronas_optuna <argv>`` (without ``--nproc``) under torchrun with ``nproc``
    ranks on this machine. When a rank stops, torchrun stops every rank.

    Returns:
        The exit code (0, or 1 when a rank failed) and a line for the console: which rank stopped
        first, how, and its last line of standard error; ``""`` when all went well or rank 0 failed
        with a user error it printed itself.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default, without its banner
    logs = Path(tempfile.mkdtemp(prefix="ronas-ranks-"))
    os.environ[RANK_LOGS_ENV] = str(logs)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    launch = ["--standalone", f"--nproc-per-node={nproc}", "--local-ranks-filter=0"]
    try:
        run(get_args_parser().parse_args([*launch, "-m", "ronas_optuna", *without_nproc(argv)]))
    except ChildFailedError as e:
        leader = e.failures.get(0)
        if leader is not None and leader.exitcode == 1:  # rank 0 reported its own error
            return 1, ""
        rank, failure = e.get_first_failure()
        code = failure.exitcode
        how = f"signal {failure.signal_name()}" if code < 0 else f"exit code {code}"
        said = last_line(logs / f"rank{rank}.err") if failure.signal_name() != "SIGKILL" else ""
        return 1, (
            f"Error: rank {rank} stopped ({how}{f': {said}' if said else ''}); every rank was "
            "stopped. The same command resumes the study (the running trial is run again)."
        )
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    return 0, ""


def keep_rank_stderr() -> None:
    """In a rank other than 0 started by :func:`run_ranks`: standard error (Python's and the C++
    runtime's, such as an abort's reason) goes to ``rank<N>.err`` in the job's log folder."""
    folder, rank = os.environ.get(RANK_LOGS_ENV), os.environ.get("RANK", "0")
    if folder is None or rank == "0" or not Path(folder).is_dir():
        return
    fd = os.open(Path(folder) / f"rank{rank}.err", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stderr.flush()
    os.dup2(fd, 2)
    os.close(fd)


def last_line(path: Path) -> str:
    """The last non-empty line of a text file, at most 200 characters (``""`` if none)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""
