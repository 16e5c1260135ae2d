import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner

from ronas_optuna.cli import TRAINING_LENGTH, main
from ronas_optuna.final import FinalModel
from ronas_optuna.plan import SearchPlan


def _search(tmp_path, data, *extra):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    args = [
        "search",
        str(data),
        "--storage",
        storage,
        "--study",
        "cli",
        "--trials",
        "2",
        "--device",
        "cpu",
        "--spacing",
        "2.0",
        "--depth",
        "2",
        "--base-width",
        "4",
        "--max-width",
        "8",
        "--steps-per-trial",
        "2",
        "--finetune-steps",
        "0",
        *extra,
    ]
    return storage, CliRunner().invoke(main, args, catch_exceptions=False)


def test_every_command_has_help():
    r = CliRunner()
    for cmd in ("search", "export", "predict", "check-data", "demo", "dashboard", "benchmark"):
        res = r.invoke(main, [cmd, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output, cmd


def test_search_resume_export_predict(tmp_path, synthetic_root):
    storage, res = _search(tmp_path, synthetic_root)
    assert res.exit_code == 0, res.output
    assert "best: trial" in res.output
    study = optuna.load_study(study_name="cli", storage=storage)
    assert len(study.trials) == 2
    plan = SearchPlan.from_study(study)
    assert plan.path.exists() and plan.checkpoint.exists() and plan.settings.training.steps_per_trial == 2
    ck_before = torch.load(plan.checkpoint, weights_only=True)["state_dict"]
    # resume: no DATA needed, the plan is reused; the checkpoint and controller continue
    res = CliRunner().invoke(
        main,
        ["search", "--storage", storage, "--study", "cli", "--trials", "2", "--device", "cpu"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    study = optuna.load_study(study_name="cli", storage=storage)
    assert len(study.trials) == 4
    ck_after = torch.load(plan.checkpoint, weights_only=True)
    assert ck_after["extra"]["trials_trained"] == 4
    assert any(not torch.equal(ck_before[k], v) for k, v in ck_after["state_dict"].items())
    model = tmp_path / "model.pt"
    res = CliRunner().invoke(
        main,
        ["export", "--storage", storage, "--study", "cli", "-o", str(model), "--device", "cpu"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0 and model.exists(), res.output
    assert "validation Dice" in res.output and "trained alone" not in res.output
    shared = model.read_bytes()
    alone = tmp_path / "alone.pt"  # the same architecture retrained from scratch
    run = ["export", "--storage", storage, "--study", "cli", "--device", "cpu", "--train-alone", "3"]
    res = CliRunner().invoke(main, [*run, "-o", str(alone)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "trained alone for 3 steps (" in res.output and "(trained on too: not held out)" in res.output
    retrained = FinalModel.load(alone)
    assert retrained.source["weights"] == "trained alone" and retrained.metrics["train_alone_steps"] == 3
    assert retrained.arch == FinalModel.load(model).arch and model.read_bytes() == shared
    res = CliRunner().invoke(main, [*run, "--pareto", str(tmp_path / "front")])
    assert res.exit_code == 2 and "--train-alone" in res.output  # a front is never retrained
    src = sorted((synthetic_root / "imagesTr").iterdir())[0]
    res = CliRunner().invoke(
        main,
        ["predict", str(model), str(src), "-o", str(tmp_path / "pred"), "--device", "cpu"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    out = nib.load(str(tmp_path / "pred" / src.name))
    ref = nib.load(str(src))
    assert out.shape == ref.shape and np.allclose(out.affine, ref.affine)


def test_user_errors_have_no_traceback(tmp_path, synthetic_root):
    r = CliRunner()
    res = r.invoke(main, ["search", str(tmp_path / "missing"), "--storage", f"sqlite:///{tmp_path}/x.db"])
    assert res.exit_code != 0 and "not a folder" in res.output and "Traceback" not in res.output
    res = r.invoke(main, ["search", "--storage", f"sqlite:///{tmp_path}/x.db", "--study", "nope"])
    assert res.exit_code != 0 and "does not exist" in res.output
    res = r.invoke(main, ["search", str(synthetic_root), "--storage", "not-a-url"])
    assert res.exit_code != 0 and "--storage" in res.output
    res = r.invoke(
        main, ["export", "--storage", f"sqlite:///{tmp_path}/x.db", "--study", "nope", "-o", "m.pt"]
    )
    assert res.exit_code != 0 and "does not exist" in res.output and not (tmp_path / "x.db").exists()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    src = sorted((synthetic_root / "imagesTr").iterdir())[0]
    res = r.invoke(main, ["predict", str(bad), str(src), "-o", str(tmp_path)])
    assert res.exit_code != 0 and "corrupt" in res.output and "Traceback" not in res.output
    res = r.invoke(main, ["check-data", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "does not exist" in res.output


def test_journal_storage_works(tmp_path, synthetic_root):
    storage = str(tmp_path / "j.log")
    res = CliRunner().invoke(
        main,
        [
            "search",
            str(synthetic_root),
            "--storage",
            storage,
            "--study",
            "j",
            "--trials",
            "1",
            "--device",
            "cpu",
            "--spacing",
            "2.0",
            "--depth",
            "2",
            "--base-width",
            "4",
            "--max-width",
            "8",
            "--steps-per-trial",
            "1",
            "--sampler",
            "random",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "j_runs" / "j" / "plan.json").exists()


def test_total_converges_and_cannot_be_combined_with_trials(tmp_path, synthetic_root):
    storage, res = _search(tmp_path, synthetic_root, "--total", "3")
    assert res.exit_code == 2 and "give --trials (this many more) or --total" in res.output
    args = ["search", "--storage", storage, "--study", "cli", "--device", "cpu"]
    args += ["--total", "3", str(synthetic_root), "--spacing", "2.0", "--depth", "2", "--base-width", "4"]
    args += ["--max-width", "8", "--steps-per-trial", "2", "--finetune-steps", "0"]
    for _ in range(2):  # the same command twice: 3 trials, then nothing more
        res = CliRunner().invoke(main, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert len(optuna.load_study(study_name="cli", storage=storage).trials) == 3


@pytest.mark.parametrize(
    ("text", "steps", "seconds"),
    [("0", 0, 0.0), ("400", 400, 0.0), ("90s", 0, 90.0), ("30m", 0, 1800.0), ("1.5H", 0, 5400.0)],
)
def test_train_alone_takes_steps_or_a_duration(text, steps, seconds):
    length = TRAINING_LENGTH.convert(text, None, None)
    assert (length.steps, length.seconds, length.retrains) == (steps, seconds, bool(steps or seconds))


@pytest.mark.parametrize("text", ["-3", "30x", "m", "1e400h", "-5m", ""])
def test_a_bad_train_alone_is_a_usage_error_naming_the_option(text, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=url, study_name="s")
    res = CliRunner().invoke(
        main, ["export", "--storage", url, "--study", "s", "-o", "m.pt", "--train-alone", text]
    )
    assert res.exit_code == 2 and "--train-alone" in res.output and "neither a number of steps" in res.output


def test_the_command_line_starts_without_torch():
    heavy = "('torch', 'nibabel', 'skimage', 'optuna')"
    code = f"import sys, ronas_optuna.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_only_user_errors_are_one_line_and_bugs_keep_their_traceback():
    import click
    from click.testing import CliRunner

    from ronas_optuna.cli import user_errors
    from ronas_optuna.errors import DataError

    @click.command()
    @click.argument("kind")
    @user_errors
    def cmd(kind):
        raise {"user": DataError("x.nii.gz: not a NIfTI file"), "bug": ValueError("internal")}[kind]

    user = CliRunner().invoke(cmd, ["user"])
    assert user.exit_code == 1 and user.output.strip() == "Error: x.nii.gz: not a NIfTI file"
    bug = CliRunner().invoke(cmd, ["bug"])
    assert isinstance(bug.exception, ValueError) and str(bug.exception) == "internal"


def test_two_objectives_front_and_export_by_memory(tmp_path, synthetic_root):
    storage, res = _search(tmp_path, synthetic_root, "--objectives", "dice,memory", "--trials", "6")
    assert res.exit_code == 0, res.output
    assert "Pareto front:" in res.output
    study = optuna.load_study(study_name="cli", storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["dice", "memory_gb"]
    for t in study.trials:
        assert t.values[1] == pytest.approx(t.user_attrs["memory_gb"])
    front = study.best_trials
    run = ["export", "--storage", storage, "--study", "cli", "--device", "cpu"]
    # the cheapest member fits a budget just above its memory; the export picks within it
    cheapest = min(front, key=lambda t: t.values[1])
    limit = cheapest.values[1] * 1.0001
    fitting = [t for t in study.trials if t.values[1] <= limit]
    res = CliRunner().invoke(main, [*run, "-o", str(tmp_path / "m.pt"), "--max-memory", str(limit)])
    assert res.exit_code == 0, res.output
    chosen = FinalModel.load(tmp_path / "m.pt")
    assert chosen.source["trial"] in {t.number for t in fitting} and chosen.metrics["memory_gb"] <= limit
    assert chosen.source["limits"] == f"memory_gb <= {limit:g} GB"
    # nothing fits: one line, the smallest measured memory named, no file
    res = CliRunner().invoke(main, [*run, "-o", str(tmp_path / "none.pt"), "--max-memory", "1e-9"])
    assert res.exit_code == 1 and "no completed trial fits memory_gb <= 1e-09 GB" in res.output
    assert f"{cheapest.values[1]:.4g} GB" in res.output and not (tmp_path / "none.pt").exists()
    res = CliRunner().invoke(main, [*run, "-o", str(tmp_path / "l.pt"), "--max-latency", "5"])
    assert res.exit_code == 1 and "no trial has a measured latency_ms" in res.output
    # the whole front, cheapest first, each with its measured cost; a second run refuses to overwrite
    res = CliRunner().invoke(main, [*run, "--pareto", str(tmp_path / "front")])
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "front" / "front.json").read_text())
    assert sorted(r["trial"] for r in rows) == sorted(t.number for t in front)
    assert [r["memory_gb"] for r in rows] == sorted(r["memory_gb"] for r in rows)
    for r in rows:
        model = FinalModel.load(tmp_path / "front" / r["file"])
        assert model.source["trial"] == r["trial"] and model.metrics["val_dice"] == r["val_dice"]
    res = CliRunner().invoke(main, [*run, "--pareto", str(tmp_path / "front")])
    assert res.exit_code == 1 and "exists" in res.output
    res = CliRunner().invoke(main, [*run, "--pareto", str(tmp_path / "f2"), "-o", "x.pt"])
    assert res.exit_code == 2 and "one of them" in res.output


def test_pareto_needs_two_objectives(tmp_path, synthetic_root):
    storage, res = _search(tmp_path, synthetic_root)
    assert res.exit_code == 0, res.output
    args = [
        "export",
        "--storage",
        storage,
        "--study",
        "cli",
        "--device",
        "cpu",
        "--pareto",
        str(tmp_path / "p"),
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "--pareto needs a search with --objectives" in res.output
    assert not (tmp_path / "p").exists()


def test_a_search_whose_warmup_took_most_of_its_timeout_says_so(tmp_path, synthetic_root):
    _, res = _search(tmp_path, synthetic_root, "--warmup-steps", "40", "--timeout", "0.2")
    assert res.exit_code == 0, res.output
    note = next(line for line in res.output.splitlines() if line.startswith("note: the warm-up took"))
    assert "of the 0.2-second budget" in note and "--timeout" in note  # 40 steps take over 0.1 s
    (tmp_path / "q").mkdir()
    _, quick = _search(tmp_path / "q", synthetic_root, "--warmup-steps", "0", "--timeout", "600")
    assert quick.exit_code == 0 and "note: the warm-up" not in quick.output  # no warm-up, no note


def test_the_warmup_note_counts_only_the_warmup_of_the_trials_given():
    from types import SimpleNamespace

    from ronas_optuna.cli import _warmup_note

    trials = [
        SimpleNamespace(user_attrs={"time_s": {"warmup": 70.0, "train": 5.0}}),
        SimpleNamespace(user_attrs={}),
    ]
    assert _warmup_note(trials, 100.0) == (
        "note: the warm-up took 70 s of the 100-second budget on this machine, leaving little for the "
        "trials; --timeout 170 gives them about what they would have had"
    )
    assert _warmup_note(trials, 140.0) == ""  # half the budget or less: nothing to say
    assert "--seconds 170" in _warmup_note(trials, 100.0, "--seconds")
