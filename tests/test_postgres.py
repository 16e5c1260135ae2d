"""Studies on a real PostgreSQL server (Debian's binaries, started per session; skipped without)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
import sqlalchemy
from click.testing import CliRunner
from optuna.trial import TrialState

from ronas_optuna.cli import main

WORKER = textwrap.dedent(
    """
    import json, sys, optuna
    from ronas_optuna import SearchSpace
    from ronas_optuna.bench import Landscape
    from ronas_optuna.storage import open_storage
    from ronas_optuna.sampler import RONASSampler
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url, study_name, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    space = SearchSpace.default(depth=3)
    sampler = RONASSampler(space, seed=11)
    study = optuna.load_study(study_name=study_name, storage=open_storage(url), sampler=sampler)
    land, mine = Landscape(space, seed=0), []
    def objective(trial):
        mine.append(trial.number)
        return land(trial)
    study.optimize(objective, n_trials=n)
    json.dump({"mine": mine, "learned": sorted(sampler._learned)}, open(out, "w"))
    """
)

HANGING = textwrap.dedent(
    """
    import sys, time, optuna
    url, study_name = sys.argv[1], sys.argv[2]
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name=study_name, storage=storage)
    study.optimize(lambda t: time.sleep(600) or 0.0, n_trials=1)
    """
)


def test_a_two_rank_search_resumes_and_exports_on_postgresql(
    postgres_url, tmp_path, synthetic_root, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a server database's artifacts go to ./ronas_artifacts
    args = ["search", "--storage", postgres_url, "--study", "pg-search", "--device", "cpu"]
    small = ["--spacing", "2.0", "--depth", "2", "--base-width", "4", "--max-width", "8"]
    small += ["--steps-per-trial", "2", "--batch-size", "1", "--run-dir", str(tmp_path / "run")]
    small += ["--finetune-steps", "0"]
    first = [sys.executable, "-m", "ronas_optuna", *args, str(synthetic_root), "--trials", "2"]
    first += ["--nproc", "2"]
    r = subprocess.run([*first, *small], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    # the ranks' own lines first: the launcher's traceback at the end hides why a rank aborted
    why = [x for x in r.stderr.splitlines() if "terminate" in x or "Error" in x or "rank" in x.lower()]
    assert r.returncode == 0, "\n".join(why[:40]) + "\n...\n" + r.stderr[-2000:]
    study = optuna.load_study(study_name="pg-search", storage=postgres_url)
    assert study.user_attrs["ronas:ranks"] == 2 and len(study.trials) == 2
    r = CliRunner().invoke(main, [*args, "--total", "3"])  # one process resumes: plan and run folder
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="pg-search", storage=postgres_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    model = tmp_path / "m.pt"
    export = ["export", "--storage", postgres_url, "--study", "pg-search", "-o", str(model)]
    r = CliRunner().invoke(main, [*export, "--device", "cpu"])
    assert r.exit_code == 0 and model.exists(), r.output
    assert any((tmp_path / "ronas_artifacts").iterdir())  # the model and figures, in the working folder


def test_two_plain_workers_with_ronas_sampler_learn_from_each_other(postgres_url, tmp_path):
    optuna.create_study(study_name="pg-workers", storage=postgres_url, direction="maximize")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    outs = [tmp_path / f"{k}.json" for k in ("a", "b")]
    cmd = [sys.executable, str(script), postgres_url, "pg-workers", "8"]
    procs = [subprocess.Popen([*cmd, str(o)]) for o in outs]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    a, b = (json.loads(o.read_text()) for o in outs)
    assert set(a["mine"]).isdisjoint(b["mine"]) and len(a["mine"]) == len(b["mine"]) == 8
    later, other = (a, b) if max(a["mine"]) > max(b["mine"]) else (b, a)
    assert set(other["mine"]) & set(later["learned"])  # the later worker learned from the other's trials


def test_a_killed_workers_trial_is_failed_by_the_heartbeat(postgres_url, tmp_path):
    storage = optuna.storages.RDBStorage(postgres_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="pg-killed", storage=storage)
    script = tmp_path / "hang.py"
    script.write_text(HANGING)
    proc = subprocess.Popen([sys.executable, str(script), postgres_url, "pg-killed"])
    deadline = time.time() + 120
    beats = sqlalchemy.text("SELECT COUNT(*) FROM trial_heartbeats WHERE trial_id = :trial")
    while True:  # running, with a heartbeat: a trial without one is never stale (a busy machine)
        running = study.get_trials(states=(TrialState.RUNNING,))
        if running:
            with storage.engine.connect() as connection:
                if connection.execute(beats, {"trial": running[0]._trial_id}).scalar():
                    break
        assert time.time() < deadline and proc.poll() is None, "the worker never beat for its trial"
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # past the grace period
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.trials] == [TrialState.FAIL]


@pytest.mark.parametrize("url", ["postgresql+psycopg2://postgres@/no_such_db?host=/nonexistent&port=1"])
def test_an_unreachable_server_is_one_line(url, tmp_path, synthetic_root):
    r = CliRunner().invoke(main, ["search", str(synthetic_root), "--storage", url, "--device", "cpu"])
    assert r.exit_code == 1 and r.output.startswith("Error: --storage") and len(r.output.splitlines()) == 1
