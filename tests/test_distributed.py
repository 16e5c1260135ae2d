"""Data-parallel search with gloo on the CPU: 2 ranks are one process with twice the batch."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import optuna
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from optuna.trial import TrialState

from ronas_optuna import SearchSpace, Supernet
from ronas_optuna.data import MSDDataset, make_msd_dataset
from ronas_optuna.space import Architecture
from ronas_optuna.team import Team
from ronas_optuna.trainer import PathTrainer

SPACE = SearchSpace.default(depth=2, base_width=4, max_width=8)
CODE_PATCH = (16, 16, 8)


def _train(rank, world, batch, data, init, out):
    team = None
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
        team = Team(rank, world)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    sn = Supernet(SPACE, 1, 3)
    ds = MSDDataset(data, spacing=2.0, cache_dir=os.path.join(os.path.dirname(init), f"cache{rank}"))
    trainer = PathTrainer(sn.parameters(), ds.load_all(ds.case_ids[:2]), batch_size=batch, lr=1e-2, team=team)
    arch = Architecture.from_params(SPACE, {n: d.choices[-1] for n, d in SPACE.distributions().items()})
    net = sn.path(arch).train()
    loss = trainer.train(net, net.parameters_on_path(), CODE_PATCH, 3, start=5)
    if rank == 0:
        torch.save({"state": sn.state_dict(), "loss": loss}, out)
    if team is not None:
        team.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_msd_dataset(tmp_path_factory.mktemp("d") / "Task001", n_cases=3, shape=(24, 24, 16), seed=0)


def test_two_ranks_with_batch_one_take_the_step_of_one_process_with_batch_two(data, tmp_path):
    mp.spawn(_train, args=(2, 1, str(data), str(tmp_path / "init"), str(tmp_path / "two.pt")), nprocs=2)
    _train(0, 1, 2, str(data), str(tmp_path / "init1"), str(tmp_path / "one.pt"))
    two, one = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    changed = 0
    for k, v in one["state"].items():
        assert torch.allclose(two["state"][k], v, atol=1e-5), k
        changed += not torch.equal(v, Supernet(SPACE, 1, 3).state_dict()[k]) if v.is_floating_point() else 0
    assert changed > 0  # the path moved


@pytest.mark.slow
def test_a_two_rank_search_proposes_what_one_process_with_twice_the_batch_does(data, tmp_path):
    common = ["--device", "cpu", "--spacing", "2.0", "--depth", "2", "--base-width", "4", "--max-width", "8"]
    common += ["--n-patch-sizes", "1", "--steps-per-trial", "2", "--warmup-steps", "2", "--trials", "3"]
    common += ["--finetune-steps", "4"]  # the fine-tuning trial runs on both ranks too
    common += ["--distill-weight", "0.5"]  # and so does the teacher of each trial
    runs = {}
    for tag, extra in (("one", ["--batch-size", "2"]), ("two", ["--batch-size", "1", "--nproc", "2"])):
        storage = f"sqlite:///{tmp_path / tag}.db"
        cmd = [sys.executable, "-m", "ronas_optuna", "search", str(data), "--storage", storage]
        r = subprocess.run([*cmd, *common, *extra], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[tag] = optuna.load_study(study_name="ronas", storage=storage)
    one, two = runs["one"].trials, runs["two"].trials
    assert [t.params for t in one] == [t.params for t in two]
    assert [t.value for t in two] == pytest.approx([t.value for t in one], abs=1e-3)
    assert runs["two"].user_attrs["ronas:global_batch_size"] == 2


@pytest.mark.slow
def test_a_rank_that_dies_takes_the_job_down_in_one_line_and_the_study_resumes(data, tmp_path):
    storage = f"sqlite:///{tmp_path / 'd.db'}"
    search = ["-m", "ronas_optuna", "search", "--storage", storage, "--device", "cpu"]
    small = ["--spacing", "2.0", "--depth", "2", "--base-width", "4", "--max-width", "8", "--batch-size", "1"]
    small += ["--finetune-steps", "0"]
    with open(tmp_path / "stderr", "w") as err:
        job = subprocess.Popen(
            [sys.executable, *search, str(data), *small, "--trials", "500", "--nproc", "2"], stderr=err
        )
    deadline = time.time() + 300
    while not _complete(storage):
        assert time.time() < deadline and job.poll() is None, "the job never finished a trial"
        time.sleep(1)
    ranks = subprocess.run(["ps", "-o", "pid=", "--ppid", str(job.pid)], capture_output=True, text=True)
    pids = sorted(int(p) for p in ranks.stdout.split())
    assert len(pids) == 2
    os.kill(pids[-1], signal.SIGKILL)
    job.wait(timeout=120)  # no hang: the other rank is stopped
    assert job.returncode == 1
    lines = [ln for ln in (tmp_path / "stderr").read_text().splitlines() if ln.strip() and ln != "searching"]
    assert lines == [
        "Error: rank 1 stopped (signal SIGKILL); every rank was stopped. The same command resumes the "
        "study (the running trial is run again)."
    ]
    done = len(_complete(storage))
    resume = [sys.executable, *search, "--trials", "1"]  # one process now
    r = subprocess.run(resume, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    study = optuna.load_study(study_name="ronas", storage=storage)
    assert len(_complete(storage)) == done + 1
    assert all(t.state != TrialState.RUNNING for t in study.trials)


#: Loaded by every Python process of the job through PYTHONPATH: rank 1 says why and aborts, as the
#: C++ runtime does on an uncaught exception (``terminate called ...``, then SIGABRT).
ABORT_ON_RANK_1 = """
import os, sys, threading
def _abort():
    sys.stderr.write("terminate called after throwing an instance of 'injected'\\n")
    sys.stderr.flush()
    os.abort()
if os.environ.get("RANK") == "1":
    threading.Timer(float(os.environ["ABORT_AFTER_S"]), _abort).start()
"""


@pytest.mark.slow
def test_a_rank_that_aborts_is_named_with_its_last_words_in_one_line(data, tmp_path):
    (tmp_path / "hook").mkdir()
    (tmp_path / "tmp").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(ABORT_ON_RANK_1)
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path / "hook"),
        "ABORT_AFTER_S": "20",
        "TMPDIR": str(tmp_path / "tmp"),
    }
    cmd = [
        sys.executable,
        "-m",
        "ronas_optuna",
        "search",
        str(data),
        "--storage",
        f"sqlite:///{tmp_path / 'a.db'}",
    ]
    cmd += ["--device", "cpu", "--spacing", "2.0", "--depth", "2", "--base-width", "4", "--max-width", "8"]
    cmd += ["--batch-size", "1", "--finetune-steps", "0", "--trials", "10000", "--nproc", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and ln != "searching"]
    assert lines == [
        "Error: rank 1 stopped (signal SIGABRT: terminate called after throwing an instance of "
        "'injected'); every rank was stopped. The same command resumes the study (the running "
        "trial is run again)."
    ]
    assert not list((tmp_path / "tmp").glob("ronas-ranks-*"))  # the ranks' logs went too


def test_a_plan_that_fails_on_the_leader_is_reported_once_by_the_leader(data, tmp_path):
    storage = f"sqlite:///{tmp_path / 'p.db'}"
    cmd = [sys.executable, "-m", "ronas_optuna", "search", str(data), "--storage", storage, "--device", "cpu"]
    cmd += ["--spacing", "2.0", "--depth", "2", "--base-width", "4", "--batch-size", "1", "--trials", "1"]
    cmd += ["--finetune-steps", "0", "--warmup-steps", "1", "--steps-per-trial", "1"]
    assert subprocess.run([*cmd, "--max-width", "8"], capture_output=True, timeout=300).returncode == 0
    r = subprocess.run(
        [*cmd, "--max-width", "16", "--nproc", "2"], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "Error: the study was planned otherwise (max_width 8 -> 16); max_width cannot change, "
        "start a new study"
    ]


def _complete(storage):
    try:
        study = optuna.load_study(study_name="ronas", storage=storage)
    except KeyError:
        return []
    return study.get_trials(states=(TrialState.COMPLETE,))


def _search_with_a_failure(rank, world, data, init, out, phase, schedule="constant"):
    """A 2-rank search in which rank 1 alone runs out of memory once, while training or validating
    trial 1 (a test-only forward pre-hook on rank 1's supernet); ``phase=None``: no failure."""
    from ronas_optuna import NASObjective, SearchSettings
    from ronas_optuna.distributed import follow, lead, stop

    dist.init_process_group(
        "gloo", init_method=f"file://{init}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    team = Team(rank, world)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    settings = SearchSettings.from_options(
        spacing=2.0, depth=2, base_width=4, max_width=8, n_patch_sizes=1, steps_per_trial=2,
        warmup_steps=1, finetune_steps=0, batch_size=1, reward_cases=2, lr_schedule=schedule,
    )  # fmt: skip
    sn = Supernet(SearchSpace.default(depth=2, base_width=4, max_width=8), 1, 3)
    ds = MSDDataset(data, spacing=2.0, cache_dir=os.path.join(os.path.dirname(init), f"cache{rank}"))
    ids = ds.case_ids  # a validation case for each rank
    objective = NASObjective.build(
        sn,
        ds,
        settings=settings,
        train_ids=ids[:1],
        val_ids=ids[1:],
        device="cpu",
        team=team,
        patch_size=CODE_PATCH,
    )
    if rank == 1 and phase is not None:  # trial 1's first training forward, or its validation
        seen = {"train": 0, "failed": False}

        def hook(module, args):
            seen["train"] += module.training
            due = seen["train"] == 4 if phase == "train" else (seen["train"] == 5 and not module.training)
            if due and not seen["failed"]:
                seen["failed"] = True
                raise RuntimeError(f"out of memory (injected on rank 1 while {phase[:-1]}ing)")

        first = next(iter(sn.candidates.values()))
        for m in first.values():
            m.register_forward_pre_hook(hook)
    if team.leader:
        lead(team, objective)
        objective.planned_trials = 4  # as the runner sets it: the schedule's length
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(objective, n_trials=4)
        stop(team)
        kept = [(t.state.name, t.user_attrs.get("fail_reason")) for t in study.trials]
    else:
        follow(team, objective)
        kept = None
    torch.save({"state": sn.state_dict(), "trials": kept}, out.replace("RANK", str(rank)))
    team.close()


@pytest.mark.parametrize("phase", ["train", "validate"])
def test_a_failure_on_one_rank_fails_the_trial_on_every_rank_and_the_search_goes_on(data, tmp_path, phase):
    out = str(tmp_path / "rankRANK.pt")
    mp.spawn(_search_with_a_failure, args=(2, str(data), str(tmp_path / "init"), out, phase), nprocs=2)
    leader, follower = torch.load(out.replace("RANK", "0")), torch.load(out.replace("RANK", "1"))
    states = [s for s, _ in leader["trials"]]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    reason = leader["trials"][1][1]
    assert "rank 1" in reason and "out of memory (injected on rank 1" in reason and "rank 0" not in reason
    for k, v in leader["state"].items():  # both ranks went back and went on with the same weights
        assert torch.equal(v, follower["state"][k]), k


def test_every_rank_follows_the_leaders_learning_rate_schedule(data, tmp_path):
    out = str(tmp_path / "rankRANK.pt")
    args = (2, str(data), str(tmp_path / "init"), out, None, "cosine")
    mp.spawn(_search_with_a_failure, args=args, nprocs=2)
    leader, follower = torch.load(out.replace("RANK", "0")), torch.load(out.replace("RANK", "1"))
    assert [s for s, _ in leader["trials"]] == ["COMPLETE"] * 4
    for k, v in leader["state"].items():  # the same steps at the same rates: the same weights
        assert torch.equal(v, follower["state"][k]), k
