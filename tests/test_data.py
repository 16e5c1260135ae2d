import functools
import json
import operator
import shutil
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ronas_optuna.cli import main
from ronas_optuna.data import (
    DataError,
    MSDDataset,
    PatchDataset,
    augment,
    candidate_patch_sizes,
    check_dataset,
    make_loader,
    make_msd_dataset,
)

from conftest import TASK901, TASK904, needs_task901, needs_task904


def writable_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return dst


# ---------------------------------------------------------------------------- synthetic data
def test_synthetic_dataset_is_a_real_msd_folder(tmp_path):
    root = make_msd_dataset(tmp_path / "d", n_cases=3, shape=(24, 20, 16), n_classes=4, seed=1)
    meta = json.loads((root / "dataset.json").read_text())
    assert len(meta["training"]) == 3 and set(meta["labels"]) == {"0", "1", "2", "3"}
    img = nib.load(str(root / "imagesTr" / "case_000.nii.gz"))
    lab = np.asarray(nib.load(str(root / "labelsTr" / "case_000.nii.gz")).dataobj)
    assert img.shape == (24, 20, 16) and set(np.unique(lab)) <= {0, 1, 2, 3} and (lab == 1).any()
    data = np.asarray(img.dataobj)
    # learnable: class means differ by far more than the noise
    means = [data[lab == k].mean() for k in np.unique(lab)]
    assert min(np.diff(sorted(means))) > 30
    assert check_dataset(root).ok
    aniso = make_msd_dataset(tmp_path / "a", n_cases=1, shape=(24, 24, 16), anisotropic=True)
    z = nib.load(str(aniso / "imagesTr" / "case_000.nii.gz"))
    assert z.shape == (24, 24, 4) and z.header.get_zooms()[2] == pytest.approx(4.0)


def test_multimodal_4d_images_become_channels(tmp_path):
    root = make_msd_dataset(tmp_path / "m", n_cases=2, shape=(16, 16, 16), modalities=("T1", "T2"))
    ds = MSDDataset(root)
    assert ds.in_channels == 2 and ds.load("case_000").image.shape[0] == 2
    assert check_dataset(root).ok


def test_pairs_by_file_name_without_dataset_json(tmp_path, synthetic_root):
    root = writable_copy(synthetic_root, tmp_path / "nojson")
    (root / "dataset.json").unlink()
    ds = MSDDataset(root)
    assert ds.case_ids == ["case_000", "case_001", "case_002", "case_003"]
    assert ds.num_classes == 3


def test_orientation_crop_and_resampling_are_undone(tmp_path, synthetic_root):
    root = writable_copy(synthetic_root, tmp_path / "lia")
    for sub in ("imagesTr", "labelsTr"):
        p = root / sub / "case_001.nii.gz"
        img = nib.load(str(p))
        lia = img.as_reoriented(nib.orientations.axcodes2ornt(("L", "I", "A")))
        nib.save(lia, str(p))
    ds = MSDDataset(root, spacing=1.0)
    case = ds.load("case_001")
    original = np.asarray(nib.load(str(root / "labelsTr" / "case_001.nii.gz")).dataobj)
    back = ds.preprocessor.invert(case.label, case.props)
    assert back.shape == original.shape
    assert np.array_equal(back, original)
    # at another spacing the round trip is approximate but aligned
    ds2 = MSDDataset(root, spacing=2.0)
    c2 = ds2.load("case_001")
    assert c2.label.shape[0] < case.label.shape[0]
    back2 = ds2.preprocessor.invert(c2.label, c2.props)
    fg = original > 0
    assert (back2[fg] > 0).mean() > 0.9


def test_normalisation_and_cache(tmp_path, synthetic_root, monkeypatch):
    ds = MSDDataset(synthetic_root, spacing=1.5, cache_dir=tmp_path / "cache")
    c = ds.load("case_000")
    nz = c.image[0][c.image[0] != 0]
    assert abs(nz.mean()) < 0.05 and abs(nz.std() - 1) < 0.05
    files = list((tmp_path / "cache").rglob("*.npz"))
    assert len(files) == 1
    from ronas_optuna.data import msd

    def no_preprocessing(*a, **k):
        raise AssertionError("preprocessing ran despite the cache")

    monkeypatch.setattr(msd.Preprocessor, "__call__", no_preprocessing)
    again = MSDDataset(synthetic_root, spacing=1.5, cache_dir=tmp_path / "cache").load("case_000")
    assert np.array_equal(again.image, c.image) and again.props == c.props
    # another configuration is another cache key
    with pytest.raises(DataError, match="despite the cache"):
        MSDDataset(synthetic_root, spacing=2.0, cache_dir=tmp_path / "cache").load("case_000")


def test_ct_normalisation_uses_foreground_percentiles(tmp_path):
    root = make_msd_dataset(tmp_path / "ct", n_cases=2, shape=(16, 16, 16), modalities=("CT",))
    ds = MSDDataset(root)
    st = ds.preprocessor.ct_stats[0]
    assert ds.preprocessor.schemes == ["ct"] and st["lower"] < st["mean"] < st["upper"]
    img = ds.load("case_000").image
    assert img.max() <= (st["upper"] - st["mean"]) / st["std"] + 1e-4


def test_splits_are_seeded_and_disjoint(synthetic_root):
    ds = MSDDataset(synthetic_root)
    tr, va = ds.split(0.25, seed=3)
    assert set(tr).isdisjoint(va) and sorted(tr + va) == ds.case_ids and len(va) == 1
    assert ds.split(0.25, seed=3) == (tr, va)
    folds = ds.kfold(2, seed=0)
    assert sorted(functools.reduce(operator.iadd, (v for _, v in folds), [])) == ds.case_ids
    with pytest.raises(DataError):
        ds.kfold(9)


# ---------------------------------------------------------------------------- patches
def test_patch_size_candidates_follow_the_paper_rule():
    c = candidate_patch_sizes((98, 116, 94), depth=4, n=5, max_voxels=None)
    assert c[0] == (96, 112, 80) and c[1] == (80, 96, 64) and c[-1] == (32, 48, 16)
    assert all(v % 16 == 0 for p in c for v in p)
    capped = candidate_patch_sizes((300, 300, 300), depth=4, n=2, max_voxels=128**3)
    assert all(np.prod(p) <= 128**3 for p in capped)
    assert candidate_patch_sizes((20, 20, 5), depth=3, n=3) == [(16, 16, 8), (16, 8, 8)]


def test_no_patch_candidate_lets_an_architecture_reach_one_voxel_in_training():
    """A patch of 2**depth on every axis would leave 1x1x1 at the deepest level of an architecture
    that halves every axis: instance normalisation refuses it in training."""
    for shape, depth in [((12, 12, 8), 2), ((4, 4, 4), 2), ((20, 20, 5), 3)]:
        for patch in candidate_patch_sizes(shape, depth=depth, n=4):
            assert np.prod(patch) > (2**depth) ** 3
    from ronas_optuna import SearchSpace, Supernet
    from ronas_optuna.space import Architecture, parse_patch

    patches = candidate_patch_sizes((12, 12, 8), depth=2, n=4)
    space = SearchSpace.default(depth=2, base_width=4, max_width=8, patch_sizes=patches)
    every_axis = {n: d.choices[-1] for n, d in space.distributions().items()}
    every_axis.update(down1="222", down2="222")
    arch = Architecture.from_params(space, every_axis)
    net = Supernet(space, 1, 2).path(arch).train()
    net(torch.zeros(1, 1, *parse_patch(arch["patch"])))  # no "expected more than 1 spatial element"


def test_patches_foreground_padding_and_determinism(synthetic_root):
    ds = MSDDataset(synthetic_root)
    cases = ds.load_all()
    p = PatchDataset(cases, (16, 16, 48), length=8, seed=1, fg_fraction=1.0, augment=False)
    x, y = p[0]
    assert x.shape == (1, 16, 16, 48) and y.shape == (16, 16, 48)  # Z padded from 24 to 48
    assert all((p[i][1] > 0).any() for i in range(8))
    a = PatchDataset(cases, (16, 16, 16), length=6, seed=4)
    b = PatchDataset(cases, (16, 16, 16), length=6, seed=4)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(6))
    assert not torch.equal(a[0][0], PatchDataset(cases, (16, 16, 16), length=6, seed=5)[0][0])
    serial = [x for x, _ in make_loader(a, 2, num_workers=0)]
    parallel = [x for x, _ in make_loader(a, 2, num_workers=2)]
    assert all(torch.equal(s, q) for s, q in zip(serial, parallel)) and len(serial) == 3


def test_augmentation_keeps_image_and_label_aligned():
    rng = np.random.default_rng(0)
    label = (rng.random((12, 12, 8)) > 0.7).astype(np.uint8)
    image = (label * 10.0)[None].astype(np.float32)
    for seed in range(20):
        im, lab = augment(image.copy(), label.copy(), np.random.default_rng(seed))
        mid = (im.max() + im.min()) / 2
        assert np.array_equal(im[0] > mid, lab > 0)
        assert im.shape == (1, 12, 12, 8)


# ---------------------------------------------------------------------------- checks
def _break(root: Path, how: str) -> str:
    """Corrupt a dataset copy; returns the text the report must mention."""
    img = root / "imagesTr"
    lab = root / "labelsTr"
    first = sorted(img.iterdir())[0].name
    meta = json.loads((root / "dataset.json").read_text())
    if how == "missing":
        (lab / first).unlink()
        return f"{lab / first}: file missing"
    if how == "corrupt":
        (img / first).write_bytes(b"\x1f\x8b garbage")
        return "unreadable or corrupt"
    if how == "truncated":
        data = (img / first).read_bytes()
        (img / first).write_bytes(data[: len(data) // 3])
        return "unreadable or corrupt"
    ref = nib.load(str(img / first))
    if how == "shape":
        d = np.asarray(nib.load(str(lab / first)).dataobj)[:-2]
        nib.save(nib.Nifti1Image(d, ref.affine), str(lab / first))
        return "differs from image shape"
    if how == "affine":
        d = np.asarray(nib.load(str(lab / first)).dataobj)
        aff = ref.affine.copy()
        aff[0, 3] += 5
        nib.save(nib.Nifti1Image(d, aff), str(lab / first))
        return "affine differs"
    if how == "labels":
        d = np.asarray(nib.load(str(lab / first)).dataobj).copy()
        d[0, 0, 0] = 7
        nib.save(nib.Nifti1Image(d, ref.affine), str(lab / first))
        return "[7] not declared"
    if how == "nonfinite":
        d = np.asarray(ref.dataobj).astype(np.float32)
        d[1, 1, 1] = np.nan
        nib.save(nib.Nifti1Image(d, ref.affine), str(img / first))
        return "non-finite intensities"
    if how == "modalities":
        meta["modality"] = {"0": "T1", "1": "T2"}
        (root / "dataset.json").write_text(json.dumps(meta))
        return "dataset.json declares 2"
    if how == "2d":
        d = np.asarray(ref.dataobj)[:, :, 0]
        nib.save(nib.Nifti1Image(d, ref.affine), str(img / first))
        return "2D data"
    if how == "nocases":
        meta["training"] = []
        (root / "dataset.json").write_text(json.dumps(meta))
        return "no training cases"
    if how == "duplicate":
        meta["training"].append(meta["training"][0])
        (root / "dataset.json").write_text(json.dumps(meta))
        return "duplicate case id"
    if how == "badjson":
        (root / "dataset.json").write_text("{not json")
        return "cannot read dataset.json"
    raise AssertionError(how)


ERRORS = [
    "missing",
    "corrupt",
    "truncated",
    "shape",
    "affine",
    "labels",
    "nonfinite",
    "modalities",
    "2d",
    "nocases",
    "duplicate",
    "badjson",
]


@pytest.mark.parametrize("how", ERRORS)
def test_check_reports_each_problem_with_its_file(tmp_path, synthetic_root, how):
    root = writable_copy(synthetic_root, tmp_path / "bad")
    expected = _break(root, how)
    report = check_dataset(root)
    assert not report.ok
    assert any(expected in e for e in report.errors), report.errors
    result = CliRunner().invoke(main, ["check-data", str(root)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert expected in result.output


def test_empty_label_is_a_warning(tmp_path, synthetic_root):
    root = writable_copy(synthetic_root, tmp_path / "empty")
    p = root / "labelsTr" / "case_002.nii.gz"
    ref = nib.load(str(p))
    nib.save(nib.Nifti1Image(np.zeros(ref.shape, np.uint8), ref.affine), str(p))
    report = check_dataset(root)
    assert report.ok and any("empty label" in w and "case_002" in w for w in report.warnings)
    assert CliRunner().invoke(main, ["check-data", str(root)]).exit_code == 0


def test_dataset_refuses_broken_input_clearly(tmp_path, synthetic_root):
    with pytest.raises(DataError, match="does not exist"):
        MSDDataset(tmp_path / "nope")
    root = writable_copy(synthetic_root, tmp_path / "m")
    _break(root, "missing")
    with pytest.raises(DataError, match="file missing"):
        MSDDataset(root)


# ---------------------------------------------------------------------------- real data
@needs_task901
def test_task901_checks_and_preprocesses_at_3mm(tmp_path):
    report = check_dataset(TASK901)
    assert report.ok and report.n_cases == 3
    ds = MSDDataset(TASK901, spacing=3.0, cache_dir=tmp_path)
    assert ds.num_classes == 3 and ds.label_names[2] == "white_matter"
    for c in ds.load_all():
        assert c.image.shape[0] == 1 and c.label.shape == c.image.shape[1:]
        assert 40 < c.label.shape[0] < 70 and set(np.unique(c.label)) == {0, 1, 2}
    # tissue_003 is stored LIA: it must come back in its own voxel order
    c = ds.load("tissue_003")
    back = ds.preprocessor.invert(c.label, c.props)
    orig = np.asarray(nib.load(str(TASK901 / "labelsTr" / "tissue_003.nii.gz")).dataobj)
    assert back.shape == orig.shape
    inter = ((back > 0) & (orig > 0)).sum()
    assert 2 * inter / ((back > 0).sum() + (orig > 0).sum()) > 0.9


@needs_task904
def test_task904_anisotropic_spacing_is_kept(tmp_path):
    report = check_dataset(TASK904)
    assert report.ok
    ds = MSDDataset(TASK904, cache_dir=tmp_path)
    assert ds.preprocessor.spacing[2] == pytest.approx(6.5)
    c = ds.load("brain2")
    assert c.label.sum() > 0 and c.image.shape[3] <= 23


@needs_task904
def test_corrupted_real_dataset_copy(tmp_path):
    root = writable_copy(TASK904, tmp_path / "t904")
    expected = _break(root, "labels")
    result = CliRunner().invoke(main, ["check-data", str(root)])
    assert result.exit_code == 1 and expected in result.output and "brain1" in result.output
