"""Bad input never costs data: every user error is one line, a non-zero exit, and changes no file."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner

from ronas_optuna.cli import main
from ronas_optuna.data import make_msd_dataset
from ronas_optuna.lock import LOCK_NAME

TINY = ["--spacing", "2.0", "--depth", "2", "--base-width", "4", "--max-width", "8", "--steps-per-trial", "1"]
TINY += ["--finetune-steps", "0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset, a searched study (2 trials) and its exported model, shared by the cases."""
    root = tmp_path_factory.mktemp("bad")
    data = make_msd_dataset(root / "Task001_Syn", n_cases=4, shape=(32, 32, 24), n_classes=3, seed=0)
    storage = f"sqlite:///{root / 's.db'}"
    run = CliRunner().invoke(
        main,
        [
            "search",
            str(data),
            "--storage",
            storage,
            "--study",
            "ok",
            "--trials",
            "2",
            "--device",
            "cpu",
            *TINY,
        ],
        catch_exceptions=False,
    )
    assert run.exit_code == 0, run.output
    model = root / "model.pt"
    run = CliRunner().invoke(
        main,
        ["export", "--storage", storage, "--study", "ok", "-o", str(model), "--device", "cpu"],
        catch_exceptions=False,
    )
    assert run.exit_code == 0, run.output
    assert not list(root.glob("s.db-*"))  # each command closed its database: no log left to fold in later
    assert not list(root.rglob(LOCK_NAME))  # and gave up its run folder: no heartbeat rewrites a lock
    return {"root": root, "data": data, "storage": storage, "model": model}


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _copy_data(w, name):
    dst = w["root"] / name
    if not dst.exists():
        shutil.copytree(w["data"], dst)
    return dst


def _edit_json(folder: Path, edit) -> Path:
    meta = json.loads((folder / "dataset.json").read_text())
    edit(meta)
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def _nifti(path: Path, shape, spacing=(1.0, 1.0, 1.0), value=None):
    arr = np.random.default_rng(0).normal(size=shape).astype(np.float32) if value is None else value
    nib.save(nib.Nifti1Image(arr, np.diag([*spacing, 1.0])), str(path))
    return path


def case_2d_image(w):
    d = _copy_data(w, "d2d")
    img = next((d / "imagesTr").iterdir())
    _nifti(img, (32, 32))
    return ["search", str(d), "--storage", f"sqlite:///{w['root'] / 'new2d.db'}", *TINY], "2D data"


def case_undeclared_label(w):
    d = _copy_data(w, "dlab")
    _edit_json(d, lambda m: m["labels"].pop("2"))
    return ["search", str(d), "--storage", f"sqlite:///{w['root'] / 'newlab.db'}", *TINY], "label"


def case_label_shape(w):
    d = _copy_data(w, "dshape")
    lab = sorted((d / "labelsTr").iterdir())[0]
    _nifti(lab, (16, 16, 12), value=np.zeros((16, 16, 12), np.uint8))
    return ["search", str(d), "--storage", f"sqlite:///{w['root'] / 'newshape.db'}", *TINY], "shape"


def case_escaping_entry(w):
    d = _copy_data(w, "desc")
    _edit_json(d, lambda m: m["training"][0].update(image="../../../../etc/passwd"))
    return [
        "search",
        str(d),
        "--storage",
        f"sqlite:///{w['root'] / 'newesc.db'}",
        *TINY,
    ], "outside the dataset"


def case_nan_lr(w):
    return [
        "search",
        str(w["data"]),
        "--storage",
        f"sqlite:///{w['root'] / 'nan.db'}",
        "--lr",
        "nan",
    ], "lr must be"


def case_resume_other_depth(w):
    return (["search", "--storage", w["storage"], "--study", "ok", "--depth", "3"], "depth cannot change")


def case_resume_budget_without_override(w):
    return (
        ["search", "--storage", w["storage"], "--study", "ok", "--steps-per-trial", "5"],
        "add --override",
    )


def case_resume_other_data(w):
    other = _copy_data(w, "dother")
    return ["search", str(other), "--storage", w["storage"], "--study", "ok"], "start a new study"


def case_unknown_url(w):
    return ["search", str(w["data"]), "--storage", "foo://bar"], "--storage foo://bar"


def case_missing_sqlite_folder(w):
    return ["search", str(w["data"]), "--storage", "sqlite:////nonexistent/d/s.db"], "does not exist"


def case_postgres_without_driver(w):
    pytest.importorskip("sqlalchemy")
    try:
        import pg8000  # noqa: F401

        pytest.skip("pg8000 is installed")
    except ImportError:
        pass
    return ["search", str(w["data"]), "--storage", "postgresql+pg8000://u@localhost/db"], "driver"


def case_in_memory(w):
    return ["search", str(w["data"]), "--storage", "sqlite://"], "in-memory"


def case_device_banana(w):
    return (
        ["search", str(w["data"]), "--storage", f"sqlite:///{w['root'] / 'dev.db'}", "--device", "banana"],
        "not a device",
    )


def case_device_cuda(w):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return (
        ["search", str(w["data"]), "--storage", f"sqlite:///{w['root'] / 'cuda.db'}", "--device", "cuda"],
        "no CUDA device",
    )


def case_export_to_folder(w):
    return ["export", "--storage", w["storage"], "--study", "ok", "-o", str(w["root"])], "is a folder"


def case_export_missing_storage(w):
    return (
        ["export", "--storage", f"sqlite:///{w['root'] / 'none.db'}", "--study", "ok", "-o", "m.pt"],
        "does not exist",
    )


def case_export_only_failures(w):
    src = optuna.load_study(study_name="ok", storage=w["storage"])
    if "fails" not in optuna.get_all_study_names(w["storage"]):
        st = optuna.create_study(study_name="fails", storage=w["storage"])
        st.set_user_attr("ronas:plan", src.user_attrs["ronas:plan"])
        st.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    return (
        ["export", "--storage", w["storage"], "--study", "fails", "-o", str(w["root"] / "f.pt")],
        "no completed trial",
    )


def case_predict_over_its_input(w):
    d = _copy_data(w, "dpred")
    img = sorted((d / "imagesTr").iterdir())[0]
    return ["predict", str(w["model"]), str(img), "-o", str(d / "imagesTr")], "would replace an input"


def case_predict_name_collision(w):
    d = _copy_data(w, "dcoll")
    a = sorted((d / "imagesTr").iterdir())[0]
    b_dir = w["root"] / "other_folder"
    b_dir.mkdir(exist_ok=True)
    b = b_dir / a.name
    shutil.copy(a, b)
    return [
        "predict",
        str(w["model"]),
        str(a),
        str(b),
        "-o",
        str(w["root"] / "out_coll"),
    ], "would both be written"


def case_model_net_null(w):
    payload = torch.load(w["model"], weights_only=True)
    payload["net"] = "null"
    torch.save(payload, w["root"] / "null.pt")
    img = sorted((w["data"] / "imagesTr").iterdir())[0]
    return ["predict", str(w["root"] / "null.pt"), str(img), "-o", str(w["root"] / "o1")], "not a network"


def case_model_zero_patch(w):
    payload = torch.load(w["model"], weights_only=True)
    payload["patch_size"] = [0, 0, 0]
    torch.save(payload, w["root"] / "zero.pt")
    img = sorted((w["data"] / "imagesTr").iterdir())[0]
    return ["predict", str(w["root"] / "zero.pt"), str(img), "-o", str(w["root"] / "o2")], "positive sizes"


def case_model_random_bytes(w):
    (w["root"] / "junk.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    img = sorted((w["data"] / "imagesTr").iterdir())[0]
    return ["predict", str(w["root"] / "junk.pt"), str(img), "-o", str(w["root"] / "o3")], "corrupt"


def case_huge_resampling(w):
    src = _nifti(w["root"] / "coarse.nii.gz", (16, 16, 16), spacing=(100.0, 100.0, 100.0))
    return ["predict", str(w["model"]), str(src), "-o", str(w["root"] / "o4")], "check the file's header"


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_user_error_is_one_line_and_changes_nothing(world, case):
    argv, message = case(world)
    before = _tree(world["root"])
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 1, (res.exit_code, res.output)
    assert message in res.output, res.output
    assert ("Traceback" not in res.output and res.exception is None) or isinstance(res.exception, SystemExit)
    lines = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, res.output
    assert _tree(world["root"]) == before, "a file was created or modified"
    assert not Path("/nonexistent").exists() and not Path("ronas_runs").exists()


def test_a_study_name_is_never_a_path(world, tmp_path):
    storage = f"sqlite:///{tmp_path / 'n.db'}"
    res = CliRunner().invoke(
        main,
        [
            "search",
            str(world["data"]),
            "--storage",
            storage,
            "--study",
            "../../escaped",
            "--trials",
            "1",
            "--device",
            "cpu",
            *TINY,
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    runs = tmp_path / "n_runs"
    (folder,) = list(runs.iterdir())
    assert folder.name.startswith("_.._escaped-") and (folder / "plan.json").exists()
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path.parent.parent / "escaped").exists()


def test_resume_with_override_changes_only_budget_options(world, tmp_path):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    args = [
        "search",
        str(world["data"]),
        "--storage",
        storage,
        "--study",
        "o",
        "--trials",
        "1",
        "--device",
        "cpu",
    ]
    assert CliRunner().invoke(main, [*args, *TINY], catch_exceptions=False).exit_code == 0
    res = CliRunner().invoke(
        main,
        [
            "search",
            "--storage",
            storage,
            "--study",
            "o",
            "--trials",
            "1",
            "--device",
            "cpu",
            "--steps-per-trial",
            "2",
            "--override",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    plan = optuna.load_study(study_name="o", storage=storage).user_attrs["ronas:plan"]
    assert plan["settings"]["steps_per_trial"] == 2 and plan["settings"]["depth"] == 2


def test_predict_takes_one_file_per_modality(tmp_path):
    data = make_msd_dataset(
        tmp_path / "Task002_Two", n_cases=4, shape=(24, 24, 16), n_classes=2, seed=1, modalities=("T1", "T2")
    )
    storage = f"sqlite:///{tmp_path / 't.db'}"
    res = CliRunner().invoke(
        main,
        [
            "search",
            str(data),
            "--storage",
            storage,
            "--study",
            "t",
            "--trials",
            "1",
            "--device",
            "cpu",
            *TINY,
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    model = tmp_path / "m.pt"
    assert (
        CliRunner()
        .invoke(
            main,
            ["export", "--storage", storage, "--study", "t", "-o", str(model), "--device", "cpu"],
            catch_exceptions=False,
        )
        .exit_code
        == 0
    )
    four_d = sorted((data / "imagesTr").iterdir())[0]
    img = nib.load(str(four_d))
    arr = np.asarray(img.dataobj)
    for k in range(2):
        nib.save(nib.Nifti1Image(arr[..., k], img.affine), str(tmp_path / f"pat_{k:04d}.nii.gz"))
    res = CliRunner().invoke(
        main,
        [
            "predict",
            str(model),
            str(tmp_path / "pat_0000.nii.gz"),
            str(tmp_path / "pat_0001.nii.gz"),
            "-o",
            str(tmp_path / "pred"),
            "--device",
            "cpu",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "pred" / "pat.nii.gz"
    assert out.exists() and nib.load(str(out)).shape == arr.shape[:3]
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["search", "{data}", "--storage", "sqlite:////no/such/folder/s.db"],
            "folder /no/such/folder does not exist",
        ),
        (
            ["export", "--storage", "sqlite:///{data}/none.db", "--study", "s", "-o", "{data}/m.pt"],
            "none.db does not exist",
        ),
        (["search", "{data}", "--storage", "sqlite:///:memory:"], "an in-memory database keeps nothing"),
    ],
)
def test_a_wrong_storage_is_refused_before_torch_or_optuna_is_imported(tmp_path, args, message):
    args = [a.format(data=tmp_path) for a in args]
    code = (
        "import sys\n"
        "from ronas_optuna.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as e:\n"
        "    print(e.code, 'torch' in sys.modules, 'optuna' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.split() == ["1", "False", "False"], r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("Error: --storage") and message in line
