from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch

from ronas_optuna import SearchSpace
from ronas_optuna.data import make_msd_dataset

# the cores shared among the parallel test processes (pytest-xdist), at most 2 threads each
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // WORKERS)))


def _temporary_files_in_memory(tmpfs: str = "/dev/shm", need_bytes: int = 8 << 30) -> str | None:
    """A fresh folder on the machine's tmpfs, where it is roomy, as TMPDIR for the suite's files
    (SQLite studies, checkpoints, datasets, a venv) in this process and the ones it starts: SQLite
    waits for the disk at every commit (about 20 ms on a CI machine's disk: 19.3 minutes of tests
    against 16.8 in memory, in one process). A TMPDIR the caller set wins."""
    if "TMPDIR" in os.environ or not os.access(tmpfs, os.W_OK):
        return None
    if shutil.disk_usage(tmpfs).free < need_bytes:
        return None
    os.environ["TMPDIR"] = folder = tempfile.mkdtemp(prefix="ronas-tests-", dir=tmpfs)
    os.chmod(folder, 0o1777)  # as /tmp: the PostgreSQL tests' server runs as its own user
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    return folder


IN_MEMORY = _temporary_files_in_memory()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The in-memory folder goes when every test passed (with a failure it stays for a look)."""
    if IN_MEMORY and exitstatus == 0:
        shutil.rmtree(IN_MEMORY, ignore_errors=True)


optuna.logging.set_verbosity(optuna.logging.WARNING)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED.is_dir():  # a clean clone next to the checkout's shared/ folder
    SHARED = Path(os.environ.get("RONAS_SHARED_DATA", "/work/shared/data"))
TASK901 = SHARED / "Task901_BrainTissueTemplates"
TASK904 = SHARED / "Task904_RadiomicsBrainMR"

#: The speed benchmarks in tests count their budgets in (``ronas_optuna.bench.speed``): fixed, so no
#: test spends seconds calibrating, and not 1, so a budget read in the wrong unit shows.
TEST_S_PER_UNIT = 0.5


@pytest.fixture(autouse=True)
def _fixed_machine_speed(monkeypatch: pytest.MonkeyPatch) -> None:
    from ronas_optuna.bench import speed

    def fixed(device: str, threads: int, clock: object) -> speed.MachineSpeed:
        return speed.MachineSpeed("test machine", threads, TEST_S_PER_UNIT)

    monkeypatch.setattr(speed, "_cached_speed", fixed)


needs_task901 = pytest.mark.skipif(not TASK901.is_dir(), reason="Task901 not available")
needs_task904 = pytest.mark.skipif(not TASK904.is_dir(), reason="Task904 not available")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_msd_dataset(
        tmp_path_factory.mktemp("syn") / "Task001_Syn", n_cases=4, shape=(32, 32, 24), n_classes=3, seed=0
    )


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of a live process of this machine that is not this one."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p.pid
    p.kill()
    p.wait()


@pytest.fixture
def small_space() -> SearchSpace:
    return SearchSpace.default(depth=3, base_width=4, max_width=16)


def build_objective(root: Path, tmp_path: Path, **kw):
    """A small objective on ``root`` (a synthetic dataset); ``kw`` are settings or build options."""
    from ronas_optuna import NASObjective, SearchSettings, Supernet
    from ronas_optuna.data import MSDDataset

    ds = MSDDataset(root, spacing=1.5, cache_dir=tmp_path / "cache")
    space = SearchSpace.default(depth=3, base_width=4, max_width=16, patch_sizes=[(16, 16, 16), (16, 16, 8)])
    torch.manual_seed(0)
    sn = Supernet(space, ds.in_channels, ds.num_classes)
    names = {name for name, _ in SearchSettings.option_fields()}
    settings = dict(steps_per_trial=3, batch_size=2, seed=0, checkpoint_every=2)
    settings.update({k: v for k, v in kw.items() if k in names})
    opts = dict(device="cpu", checkpoint=tmp_path / "sn.pt")
    opts.update({k: v for k, v in kw.items() if k not in names})
    return NASObjective.build(sn, ds, settings=SearchSettings.from_options(**settings), **opts)


@pytest.fixture
def make_objective(synthetic_root: Path, tmp_path: Path):
    """``make_objective(**kw)``: :func:`build_objective` on the synthetic dataset."""

    def make(root: Path | None = None, path: Path | None = None, **kw):
        return build_objective(root or synthetic_root, path or tmp_path, **kw)

    return make


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server (Debian's binaries); skips with the reason when absent."""
    import pg

    reason = pg.why_not()
    if reason is not None:
        pytest.skip(reason)
    with pg.server() as url:
        yield url
