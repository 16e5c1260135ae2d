"""benchmarks/population.py (the generated population) and benchmarks/population_curve.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


pop = _module("population")


def _hand_made(root: Path, n_cases: int = 2) -> Path:
    """Cases of 24^3 voxels at 2 mm: a sphere (1) with a core (2) in a brighter box, zero outside."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    z, y, x = np.mgrid[:24, :24, :24]
    training = []
    for c in range(n_cases):
        r = np.sqrt((x - 12 - c) ** 2 + (y - 12) ** 2 + (z - 11) ** 2)
        label = np.where(r < 4, 2, np.where(r < 8, 1, 0)).astype(np.int16)
        image = np.where(label == 2, 300.0, np.where(label == 1, 200.0, 100.0)) + x  # a gradient inside
        image[:2], image[-2:] = 0, 0  # a zero background slab
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(root / "imagesTr" / f"c{c}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / f"c{c}.nii.gz"))
        training.append({"image": f"./imagesTr/c{c}.nii.gz", "label": f"./labelsTr/c{c}.nii.gz"})
    meta = {"name": "Hand", "modality": {"0": "T1"}, "labels": {"0": "bg", "1": "shell", "2": "core"}}
    (root / "dataset.json").write_text(json.dumps({**meta, "training": training}))
    return root


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_the_generated_label_is_the_deformed_source_label(tmp_path):
    root = _hand_made(tmp_path / "src", n_cases=1)
    image = _load(root / "imagesTr/c0.nii.gz")
    label = _load(root / "labelsTr/c0.nii.gz")
    spacing = np.array([2.0, 2.0, 2.0])
    a = pop.Appearance(spacing=2.0, difficulty=1.5)
    coords = pop.sample_coordinates(np.random.default_rng(7), label.shape, spacing, a)
    _, generated, _ = pop.generate(image, label, spacing, a, np.random.default_rng(7))
    # by hand: each output voxel takes the source label at its nearest source voxel, 0 outside
    idx = np.rint(coords).astype(int)
    inside = np.all((idx >= 0) & (idx < np.array(label.shape)[:, None, None, None]), axis=0)
    expected = np.zeros(generated.shape, dtype=np.int16)
    expected[inside] = label[tuple(i[inside] for i in idx)]
    assert np.array_equal(generated, expected)
    assert not np.array_equal(generated, label)  # it was deformed
    assert set(np.unique(generated)) == {0, 1, 2}  # the values keep their meaning


def test_without_difficulty_a_subject_is_its_source_under_a_monotone_contrast(tmp_path):
    root = _hand_made(tmp_path / "src", n_cases=1)
    image, label = _load(root / "imagesTr/c0.nii.gz"), _load(root / "labelsTr/c0.nii.gz")
    a = pop.Appearance(spacing=2.0, difficulty=0.0)
    out, generated, drawn = pop.generate(image, label, np.array([2.0] * 3), a, np.random.default_rng(0))
    assert np.array_equal(generated, label) and drawn["contrast"] == "monotone"
    mask = image > 0
    assert np.all(out[~mask] == 0)  # the zero background stays zero
    # the contrast is an increasing map: intensity order is kept (ties aside)
    order = np.argsort(image[mask], kind="stable")
    assert np.all(np.diff(out[mask][order]) >= -1e-3)


def test_the_gaussian_model_gives_every_label_its_own_intensities(tmp_path):
    root = _hand_made(tmp_path / "src", n_cases=1)
    image, label = _load(root / "imagesTr/c0.nii.gz"), _load(root / "labelsTr/c0.nii.gz")
    a = pop.Appearance(spacing=2.0, difficulty=0.0, contrast="gaussian", clusters=1)
    out, generated, drawn = pop.generate(image, label, np.array([2.0] * 3), a, np.random.default_rng(3))
    assert drawn["contrast"] == "gaussian" and np.array_equal(generated, label)
    means = [out[(label == v) & (image > 0)].mean() for v in (0, 1, 2)]
    spreads = [out[(label == v) & (image > 0)].std() for v in (0, 1, 2)]
    assert len({round(m) for m in means}) == 3  # random means, one per label
    assert max(spreads) <= 0.1 * 1000 * 1.1  # spread below 0.1 of the range (x1000 on writing)


def test_one_seed_writes_identical_files_and_subjects_differ(tmp_path):
    root = _hand_made(tmp_path / "src")
    counts = {"train": 2, "tuning": 1, "test": 2}
    a = pop.Appearance(spacing=2.0, contrast="mixed")
    s1 = pop.generate_population(root, tmp_path / "a", counts, appearance=a, seed=4, echo=lambda m: None)
    s2 = pop.generate_population(root, tmp_path / "b", counts, appearance=a, seed=4, echo=lambda m: None)
    assert s1 == s2 and [len(s1[k]) for k in pop.SPLITS] == [4, 2, 4]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 * 10 + 3
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    images = [_load(tmp_path / "a/imagesTr" / f"{s}.nii.gz") for s in s1["train"] + s1["test"]]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert images[i].shape != images[j].shape or not np.allclose(images[i], images[j])
    assert len({s for split in s1.values() for s in split}) == 10  # no subject in two splits
    assert pop.read_splits(tmp_path / "a") == s1
    # adding subjects changes none of the others
    more = pop.generate_population(
        root, tmp_path / "c", {**counts, "test": 3}, appearance=a, seed=4, echo=lambda m: None
    )
    assert set(s1["test"]) < set(more["test"])
    for s in s1["test"]:
        name = f"imagesTr/{s}.nii.gz"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()


def test_test_subjects_can_come_from_another_dataset(tmp_path):
    root = _hand_made(tmp_path / "src")
    other = _hand_made(tmp_path / "other", n_cases=1)
    (other / "imagesTr/c0.nii.gz").rename(other / "imagesTr/new.nii.gz")
    (other / "labelsTr/c0.nii.gz").rename(other / "labelsTr/new.nii.gz")
    meta = json.loads((other / "dataset.json").read_text())
    meta["training"] = [{"image": "./imagesTr/new.nii.gz", "label": "./labelsTr/new.nii.gz"}]
    (other / "dataset.json").write_text(json.dumps(meta))
    counts = {"train": 1, "tuning": 1, "test": 3}
    splits = pop.generate_population(
        root,
        tmp_path / "p",
        counts,
        appearance=replace(pop.Appearance(), spacing=2.0),
        test_source=other,
        echo=lambda m: None,
    )
    assert splits["test"] == ["new_s000", "new_s001", "new_s002"]
    assert all(s.startswith("c") for s in splits["train"] + splits["tuning"])
    info = json.loads((tmp_path / "p/population.json").read_text())
    assert info["settings"]["test_source"] == "other" and info["subjects"]["new_s001"]["source"] == "new"


def test_bad_input_is_one_line_and_nothing_is_overwritten(tmp_path):
    root = _hand_made(tmp_path / "src", n_cases=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    script = str(ROOT / "benchmarks/population.py")
    r = subprocess.run([sys.executable, script, str(root), str(out)], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "exists and is not empty" in r.stderr and (out / "keep.txt").read_text() == "mine"
    r = subprocess.run(
        [sys.executable, script, str(tmp_path / "nope"), str(tmp_path / "o2")], capture_output=True, text=True
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr and "does not exist" in r.stderr


@pytest.mark.slow
def test_population_curve_runs_every_column_on_the_chosen_split(tmp_path):
    pytest.importorskip("monai")
    from ronas_optuna.data.synthetic import make_msd_dataset

    source = make_msd_dataset(tmp_path / "Task001_Syn", n_cases=2, shape=(40, 40, 40), n_classes=3, seed=0)
    population, store = tmp_path / "pop", tmp_path / "store"
    args = [
        sys.executable,
        str(ROOT / "benchmarks/population_curve.py"),
        str(population),
        "--source",
        str(source),
    ]
    args += ["--spacing", "1", "--counts", "2", "1", "2", "--budgets", "1", "--seeds", "2", "--tiny"]
    args += ["--store", str(store), "--results", str(tmp_path), "--variant", "controller.lr=0.05"]
    r = subprocess.run([*args, "--on", "tuning"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    md = (tmp_path / "population_curve_pop_tuning.md").read_text()
    for method in ("ronas", "paper", "ronas before fine-tuning", "same arch alone", "dynunet", "random"):
        assert f"| x1 | {method} | 2 | 2 |" in md  # 2 seeds x 2 tuning subjects
    assert "| x1 | ronas[controller.lr=0.05] − ronas | 2 × 2 |" in md
    rows = [
        json.loads(line) for line in (tmp_path / "population_curve_pop_tuning.jsonl").read_text().splitlines()
    ]
    tuning = set(json.loads((population / "splits.json").read_text())["tuning"])
    assert all(set(r["test_dice_cases"]) == tuning for r in rows)  # scored on the tuning split only
    assert (tmp_path / "population_curve_pop_tuning.png").stat().st_size > 0
    # a fresh store restored from the kept results runs nothing again and reports the same table
    kept = tmp_path / "population_curve_pop_tuning_kept.jsonl"
    again = tmp_path / "again"
    args2 = [a if a != str(store) else str(tmp_path / "store2") for a in args]
    args2[args2.index("--results") + 1] = str(again)
    r = subprocess.run(
        [*args2, "--on", "tuning", "--restore", str(kept)], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "kept result(s) restored" in r.stdout and "(kept)" in r.stdout
    assert (again / "population_curve_pop_tuning.md").read_text() == md


def test_the_report_shows_the_references_learning_curves_averaged_over_seeds():
    curve = _module("population_curve")
    rows = [
        {"budget": 4, "sampler": "dynunet", "variant": None, "curve": [[10, 0.5], [20, 0.6]]},
        {"budget": 4, "sampler": "dynunet", "variant": None, "curve": [[10, 0.7], [22, 0.8]]},
        {
            "budget": 4,
            "sampler": "dynunet",
            "variant": "x=1",
            "curve": [[10, 0.0], [20, 0.0]],
        },  # not a reference
        {"budget": 4, "sampler": "ronas", "variant": None, "scratch_curve": []},  # no twin curve kept
    ]
    assert curve.learning_curves(rows)[-1] == "| x4 | DynUNet | 2 | 21 | 0.600, 0.700 |"


def test_the_report_lists_each_run_s_architecture_and_its_forward_flops():
    pytest.importorskip("monai")
    from ronas_optuna.bench.handmade import dynunet
    from ronas_optuna.measure import forward_flops
    from ronas_optuna.network import RONASNet
    from ronas_optuna.space import SearchSpace

    curve = _module("population_curve")
    space = SearchSpace.default(depth=2, base_width=4, max_width=8, patch_sizes=[(16, 16, 16)])
    archs = [space.sample(np.random.default_rng(seed)) for seed in (0, 1)]
    row = {"budget": 4, "mode": "finetune", "sampler": "ronas", "variant": None}
    shape = {"depth": 2, "base_width": 4, "max_width": 8}
    rows = [
        {**row, "seed": 1, "arch": archs[1].code, "space": shape},
        {**row, "seed": 0, "arch": archs[0].code, "space": shape},
        {**row, "sampler": "dynunet", "seed": 0, "arch": "DynUNet 16x16x16, adam, 40 steps"},
        {**row, "sampler": "random", "seed": 0, "space": shape},  # no architecture kept: left out
    ]
    lines = curve.architectures(rows, in_channels=1, num_classes=3)
    gflop = [forward_flops(RONASNet(space, a, 1, 3), (1, 1, 16, 16, 16)) / 1e9 for a in archs]
    codes = ", ".join(f"`{a.code}`".replace("|", "\\|") for a in archs)
    assert lines[-2] == f"| x4 | ronas | {gflop[0]:.1f}, {gflop[1]:.1f} | {codes} |"  # seed order
    hand = forward_flops(dynunet(1, 3, (16, 16, 16)), (1, 1, 16, 16, 16)) / 1e9
    assert lines[-1] == f"| x4 | dynunet | {hand:.1f} | `DynUNet 16x16x16` |"
    assert len(lines) == 5 and not any("random" in line for line in lines)


def test_weight_sharing_on_a_population_reads_its_train_and_tuning_subjects_only(tmp_path):
    root = _hand_made(tmp_path / "src")
    counts = {"train": 3, "tuning": 1, "test": 1}
    a = pop.Appearance(spacing=2.0)
    splits = pop.generate_population(root, tmp_path / "p", counts, appearance=a, seed=1, echo=lambda m: None)
    args = ["--archs", "2", "--standalone-steps", "1", "--trials", "4", "--steps-per-trial", "1"]
    args += ["--warmup-steps", "1", "--spacing", "2", "--depth", "2", "--base-width", "4", "--max-width", "8"]
    args += ["--max-patch-voxels", "4096", "--cache", str(tmp_path / "cache"), "--population"]
    args += ["--policy", "search", "--anchor-every", "2"]
    script = ROOT / "benchmarks/weight_sharing.py"
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "p"), *args], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr[-2000:]
    head = r.stdout.splitlines()[0]
    val = sorted(s for s in splits["train"] if s.endswith("_s000"))  # the first of each source
    train = [s for s in splits["train"] if s not in val]
    assert head.startswith(f"train {train}, validation {val}, tuning {splits['tuning']};")
    assert "7 shared-weight steps" in head  # 1 warm-up, 4 trials and 2 anchors of 1 step
    assert "anchoring every 2 on best, policy search: temperature 5.0" in head
    assert not any(s in r.stdout for s in splits["test"])  # the population's test subjects unread


def test_the_report_s_cpu_hours_are_the_mean_over_seeds_not_the_first_seed_s():
    curve = _module("population_curve")
    row = {"budget": 4, "mode": "finetune", "sampler": "ronas", "variant": None}
    rows = [
        {**row, "seed": 0, "budget_s": 3600.0},
        {**row, "seed": 1, "budget_s": 7200.0},
        {**row, "mode": "paper", "seed": 0, "budget_s": 1800.0},
        {**row, "variant": "x=1", "seed": 0, "budget_s": 360.0},
    ]
    assert curve.cpu_hours(rows) == {(4, "ronas"): 1.5, (4, "paper"): 0.5, (4, "ronas[x=1]"): 0.1}


def test_a_search_whose_twin_still_trains_is_kept_and_restored_but_not_reported(tmp_path):
    import optuna

    from ronas_optuna.bench.fold import DERIVED

    curve = _module("population_curve")
    store = tmp_path / "store"
    store.mkdir()
    url = f"sqlite:///{store / 'x16_finetune.db'}"
    derived = {
        "arch": "Lpb|+a",
        "patch_size": [32, 32, 32],
        "budget_s": 3468.312,
        "test_dice_cases": {"a": 0.8},
    }
    done = {"seed": 0, "sampler": "dynunet", "test_dice_cases": {"a": 0.81}, "budget_s": 1.0}
    for name, attrs in (
        ("bench-ronas-seed0", {DERIVED: derived, "benchmark:spent": {"budget_s": 3000.5}}),
        ("bench-dynunet-seed0", {"benchmark:result": done}),
    ):
        study = optuna.create_study(study_name=name, storage=url)
        for key, value in {"benchmark:key": "k", **attrs}.items():
            study.set_user_attr(key, value)
    optuna.create_study(study_name="bench-random-seed0", storage=url).set_user_attr("benchmark:key", "k")

    kept = curve.kept_studies(store)
    assert {k["study"] for k in kept} == {
        "bench-ronas-seed0",
        "bench-dynunet-seed0",
    }  # not the one with nothing
    assert [r["sampler"] for r in curve.kept_rows(store)] == ["dynunet"]  # a partial search is no row
    lines = tmp_path / "kept.jsonl"
    lines.write_text("".join(json.dumps(k) + "\n" for k in kept))
    assert curve.restore(lines, tmp_path / "again") == 2
    again = optuna.load_study(
        study_name="bench-ronas-seed0", storage=f"sqlite:///{tmp_path / 'again' / 'x16_finetune.db'}"
    )
    # every attribute comes back, the informational ones too (a report after a restore keeps them)
    spent = {"budget_s": 3000.5}
    assert again.user_attrs == {"benchmark:key": "k", DERIVED: derived, "benchmark:spent": spent}


def test_a_report_merges_into_the_kept_file_without_losing_a_line_or_an_attribute(tmp_path):
    curve = _module("population_curve")
    path = tmp_path / "kept.jsonl"
    a = {"db": "x16_finetune.db", "study": "a", "attrs": {"benchmark:derived": {"arch": "L"}, "spent": 1}}
    b = {"db": "x4_finetune.db", "study": "b", "attrs": {"benchmark:result": {"seed": 1}}}
    path.write_text(json.dumps(a) + "\n" + json.dumps(b) + "\n")
    # the store (restored elsewhere: "spent" dropped) now has a's twin finished, and a new study c
    now_a = {
        "db": "x16_finetune.db",
        "study": "a",
        "attrs": {"benchmark:derived": {"arch": "L"}, "benchmark:result": {"seed": 0}},
    }
    c = {"db": "x16_finetune.db", "study": "c", "attrs": {"benchmark:derived": {"arch": "R"}}}
    curve.merge_kept(path, [now_a, c])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["study"] for line in lines] == ["a", "b", "c"]  # b, absent from the store, kept
    assert lines[0]["attrs"] == {
        "benchmark:derived": {"arch": "L"},
        "spent": 1,
        "benchmark:result": {"seed": 0},
    }
    assert lines[1] == b and lines[2] == c
    curve.merge_kept(path, [now_a, c])  # a second report changes nothing
    assert [json.loads(line) for line in path.read_text().splitlines()] == lines


def test_a_report_refuses_to_write_another_run_s_rows_over_the_results(tmp_path, capsys):
    import optuna

    curve = _module("population_curve")
    cases = {"a": 0.8, "b": 0.7}

    def store(name: str, dice: float):
        url = f"sqlite:///{tmp_path / name / 'test' / 'x1_finetune.db'}"
        (tmp_path / name / "test").mkdir(parents=True)
        row = {"seed": 0, "fold": 0, "sampler": "dynunet", "budget_s": 1.0}
        row |= {"test_dice": dice, "test_dice_cases": {k: v - 0.75 + dice for k, v in cases.items()}}
        study = optuna.create_study(study_name="bench-dynunet-seed0", storage=url)
        study.set_user_attr("benchmark:result", row)

    store("mine", 0.75)
    store("other", 0.70)  # the same study of another configuration
    results = tmp_path / "results"
    report = ["pop", "--on", "test", "--report", "--results", str(results)]
    curve.main([*report, "--store", str(tmp_path / "mine")])
    assert "pop: no dataset.json; the report goes without the architectures' costs" in capsys.readouterr().err
    md = (results / "population_curve_pop_test.md").read_text()
    with pytest.raises(SystemExit, match="change the Dice of 1 of its rows") as e:
        curve.main([*report, "--store", str(tmp_path / "other")])
    assert "population_curve_pop_test.jsonl" in str(e.value)
    assert (results / "population_curve_pop_test.md").read_text() == md  # nothing written
    with pytest.raises(SystemExit, match="drop 1 "):  # an empty store refuses before any training
        curve.main(["pop", "--on", "test", "--results", str(results), "--store", str(tmp_path / "empty")])
    curve.main([*report, "--store", str(tmp_path / "other"), "--overwrite"])
    rows = (results / "population_curve_pop_test.jsonl").read_text().splitlines()
    assert [json.loads(r)["test_dice"] for r in rows] == [0.70]
    kept = (results / "population_curve_pop_test_kept.jsonl").read_text().splitlines()
    assert [json.loads(k)["attrs"]["benchmark:result"]["test_dice"] for k in kept] == [0.70]


def test_the_status_lists_what_is_done_and_what_is_left(tmp_path, capsys):
    import os
    import socket
    import time

    import optuna

    from ronas_optuna.bench.fold import CLAIM, DERIVED

    curve = _module("population_curve")
    store = tmp_path / "test"
    store.mkdir()
    url = f"sqlite:///{store / 'x16_finetune.db'}"
    attrs = {
        "bench-ronas-seed0": {"benchmark:result": {"test_dice": 0.82}},
        "bench-ronas-seed1": {DERIVED: {"test_dice": 0.8254}},
        "bench-dynunet-recipe-seed0": {"benchmark:result": {"recipe": "adam"}},
        "bench-random-seed0": {"benchmark": {"trials": 800}},
        "bench-random-seed1": {"benchmark": {"trials": 800}},
        "bench-dynunet-seed0": {},
    }
    live = {"host": "elsewhere", "pid": 7, "beat": time.time()}  # another machine's, renewed now
    attrs["bench-random-seed1"][CLAIM] = live
    attrs["bench-ronas-seed1"][CLAIM] = live
    attrs["bench-dynunet-seed0"][CLAIM] = live
    attrs["bench-random-seed0"][CLAIM] = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }  # its own: not live
    for name, values in attrs.items():
        study = optuna.create_study(study_name=name, storage=url)
        for k, v in values.items():
            study.set_user_attr(k, v)
    for name in ("bench-random-seed0", "bench-random-seed1"):
        optuna.load_study(study_name=name, storage=url).optimize(lambda t: 0.0, n_trials=3)
    checkpoints = store / "x16_finetune" / "checkpoints"  # how far references have trained
    checkpoints.mkdir(parents=True)
    for name, spent in [
        ("bench-dynunet-seed0", 2437.4),
        ("bench-dynunet-seed1", 615.0),
        ("bench-ronas-seed1-alone", 90),
    ]:
        payload = {"format": "ronas_optuna.bench.alone/1", "elapsed": spent, "budget": 7505.0}
        torch.save(payload, checkpoints / f"{name}.pt")
    args = ["pop", "--on", "test", "--budgets", "16", "--seeds", "2", "--store", str(tmp_path)]
    curve.main([*args, "--modes", "finetune", "--status"])  # runs nothing
    out = capsys.readouterr().out.splitlines()
    assert {" ".join(line.split()[:2]): " ".join(line.split()[2:]) for line in out} == {
        "x16_finetune bench-dynunet-recipe-seed0": "done: adam chosen on validation",
        "x16_finetune bench-dynunet-seed0": "computing (pid 7 on elsewhere): 32% of its budget trained",
        "x16_finetune bench-dynunet-seed1": "stopped: 8% of its budget trained, resumes from its checkpoint",
        "x16_finetune bench-random-seed0": "searching: 3 of 800 trials",
        "x16_finetune bench-random-seed1": "searching: 3 of 800 trials (pid 7 on elsewhere)",
        "x16_finetune bench-ronas-seed0": "done: test Dice 0.8200",
        "x16_finetune bench-ronas-seed1": (
            "searched: test Dice 0.8254; its twin training (pid 7 on elsewhere): 1% of its budget trained"
        ),
    }
