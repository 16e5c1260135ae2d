"""A generated population: many labelled subjects from the few cases of an MSD dataset.

No registry ships dozens of labelled subjects of one task, so a benchmark that must tell methods
apart by a 0.01 Dice difference generates them, as SynthSeg (Billot et al., 2023) trains and tests:
each subject is one source case (image and label) under

* a joint random **affine** (rotation, scaling, translation) and smooth **elastic** deformation of
  image and label (the label is resampled nearest-neighbour, so its values keep their meaning);
* a random **contrast**: a random monotone map of the source's intensities (``monotone``: the
  anatomy's texture stays, its contrast changes), or SynthSeg's per-label Gaussian model
  (``gaussian``: every label, split into intensity clusters of the source, gets a random mean and
  spread), or either at random per subject (``mixed``);
* a **bias field** (a smooth multiplicative field), a random **acquisition resolution** per axis
  (blur to that resolution, down-sample and back: partial volume), and Gaussian **noise**.

The source's zero background stays zero (a skull-stripped scan stays skull-stripped). One scalar,
``difficulty``, scales deformation, bias, noise and the resolution loss together; it is set on the
tuning split (see ``docs/benchmarks.md``). Subject ``k`` of source case ``c`` depends only on
``(seed, c, k)``: adding subjects changes none of the others, and two runs with one seed write
byte-identical files.

The output folder is an MSD dataset (``dataset.json``, ``imagesTr``, ``labelsTr``) with
``population.json`` (the settings and every subject's draws) and ``splits.json``: per source case
``train`` subjects (the search's own training and validation), ``tuning`` subjects (defaults are
chosen on them, never tested) and ``test`` subjects. ``--test-source DIR`` draws the test subjects
from another dataset's cases, which the search never sees: a population held out by anatomy, not only
by draw.

    python benchmarks/population.py ../shared/data/Task901_BrainTissueTemplates pop901 \\
        --train 6 --tuning 4 --test 8 --seed 0
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from ronas_optuna.data.msd import Case, DataError, list_cases, load_canonical, spacing_of

CONTRASTS = ("monotone", "gaussian", "mixed")
SPLITS = ("train", "tuning", "test")


@dataclass(frozen=True)
class Appearance:
    """The generator's ranges; ``difficulty`` multiplies the deformation, bias, noise and
    resolution-loss ranges (0: every subject is its source resampled, only the contrast changes)."""

    spacing: float = 2.0  # output grid (mm)
    rotation_deg: float = 10.0  # per axis, uniform in ±
    scale: float = 0.10  # per axis, uniform in 1 ±
    translation_mm: float = 6.0  # per axis, uniform in ±
    elastic_mm: float = 3.0  # SD of the control points' displacement
    elastic_spacing_mm: float = 40.0  # distance between control points
    contrast: str = "monotone"
    knots: int = 6  # of the monotone map
    clusters: int = 3  # intensity clusters per label in the Gaussian model
    bias: float = 0.25  # SD of the log bias field
    max_resolution: float = 2.0  # acquisition voxel up to this multiple of ``spacing`` (at difficulty 1)
    noise: float = 0.05  # maximum noise SD, as a fraction of the foreground intensity range
    difficulty: float = 1.0

    def __post_init__(self) -> None:
        if self.contrast not in CONTRASTS:
            raise ValueError(f"contrast {self.contrast!r}: one of {', '.join(CONTRASTS)}")
        if self.spacing <= 0 or self.difficulty < 0 or self.max_resolution < 1:
            raise ValueError("spacing must be > 0, difficulty >= 0 and max_resolution >= 1")


# ----------------------------------------------------------------------------- geometry
def affine_matrix(rng: np.random.Generator, a: Appearance) -> tuple[np.ndarray, np.ndarray]:
    """A random linear map (rotation about each axis, then scaling) and translation (mm)."""
    d = a.difficulty
    angles = np.deg2rad(rng.uniform(-1, 1, 3) * a.rotation_deg * d)
    m = np.eye(3)
    for axis, t in enumerate(angles):
        c, s = np.cos(t), np.sin(t)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        m = r @ m
    m = m @ np.diag(1 + rng.uniform(-1, 1, 3) * a.scale * d)
    return m, rng.uniform(-1, 1, 3) * a.translation_mm * d


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], spacing: float, grid_mm: float, sd: float
) -> np.ndarray:
    """A smooth random field on ``shape``: normal control points ``grid_mm`` apart, cubic upsampling."""
    coarse = tuple(max(2, int(np.ceil(n * spacing / grid_mm)) + 1) for n in shape)
    points = rng.normal(0.0, sd, coarse)
    return ndimage.zoom(points, [n / c for n, c in zip(shape, coarse)], order=3, mode="nearest")[
        tuple(slice(0, n) for n in shape)
    ]


def sample_coordinates(
    rng: np.random.Generator, source_shape: tuple[int, ...], source_spacing: np.ndarray, a: Appearance
) -> np.ndarray:
    """Where each voxel of the output grid samples the source: ``(3, X, Y, Z)`` in source voxels.

    The output grid spans the source's extent at ``a.spacing``; a point ``x`` (mm) maps to
    ``c + M (x - c) + t + u(x)`` with ``c`` the centre, ``(M, t)`` the random affine and ``u`` the
    elastic displacement."""
    extent = np.asarray(source_shape) * source_spacing
    out_shape = tuple(max(1, int(round(e / a.spacing))) for e in extent)
    m, t = affine_matrix(rng, a)
    centre = extent / 2
    grid = np.stack(
        np.meshgrid(*[np.arange(n) * a.spacing + a.spacing / 2 for n in out_shape], indexing="ij")
    )
    mm = np.einsum("ij,j...->i...", m, grid - centre[:, None, None, None]) + (centre + t)[:, None, None, None]
    if a.elastic_mm * a.difficulty > 0:
        for axis in range(3):
            mm[axis] += smooth_field(
                rng, out_shape, a.spacing, a.elastic_spacing_mm, a.elastic_mm * a.difficulty
            )
    return mm / source_spacing[:, None, None, None] - 0.5


def warp(volume: np.ndarray, coords: np.ndarray, *, order: int) -> np.ndarray:
    """``volume`` sampled at ``coords`` (outside it: 0); ``order`` 0 for labels, 1 for images."""
    return ndimage.map_coordinates(volume, coords, order=order, mode="constant", cval=0.0, prefilter=False)


# ----------------------------------------------------------------------------- appearance
def normalise(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Intensities inside ``mask`` mapped to [0, 1] by their 0.5 and 99.5 percentiles."""
    if not mask.any():
        return np.zeros_like(image)
    lo, hi = np.percentile(image[mask], [0.5, 99.5])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def monotone_contrast(rng: np.random.Generator, x: np.ndarray, knots: int) -> np.ndarray:
    """A random increasing piecewise-linear map of [0, 1] onto [0, 1] (Dirichlet increments)."""
    ys = np.concatenate([[0.0], np.cumsum(rng.dirichlet(np.full(knots - 1, 2.0)))])
    return np.interp(x, np.linspace(0.0, 1.0, knots), ys)


def gaussian_contrast(
    rng: np.random.Generator, x: np.ndarray, label: np.ndarray, mask: np.ndarray, clusters: int
) -> np.ndarray:
    """SynthSeg's model: each label, split into ``clusters`` quantile bins of the source's
    intensity ``x``, gets a random mean in [0, 1] and spread in [0, 0.1] (normal per voxel)."""
    out = np.zeros_like(x)
    for value in np.unique(label[mask]):
        inside = mask & (label == value)
        edges = np.quantile(x[inside], np.linspace(0, 1, clusters + 1)[1:-1])
        bins = np.digitize(x[inside], edges)
        means, spreads = rng.uniform(0, 1, clusters), rng.uniform(0, 0.1, clusters)
        out[inside] = rng.normal(means[bins], spreads[bins]).astype(out.dtype)
    return np.clip(out, 0.0, None)


def resolution_loss(image: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Acquired at ``factors`` × the grid's voxel: blurred to that resolution (FWHM one acquired
    voxel), sampled there, and interpolated back (partial volume)."""
    if np.all(factors <= 1.0):
        return image
    blurred = ndimage.gaussian_filter(image, sigma=np.maximum(factors - 1.0, 0.0) * 0.4246 + 1e-3)
    low = ndimage.zoom(blurred, 1.0 / factors, order=1)
    back = ndimage.zoom(low, [n / m for n, m in zip(image.shape, low.shape)], order=1)
    fit = np.zeros_like(image)
    fit[tuple(slice(0, min(a, b)) for a, b in zip(image.shape, back.shape))] = back[
        tuple(slice(0, min(a, b)) for a, b in zip(image.shape, back.shape))
    ]
    return fit


def generate(
    image: np.ndarray, label: np.ndarray, spacing: np.ndarray, a: Appearance, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One subject from one source: its image and label on the output grid, and what was drawn."""
    coords = sample_coordinates(rng, image.shape, spacing, a)
    lab = warp(label.astype(np.float32), coords, order=0).astype(np.uint8)
    img = warp(image.astype(np.float32), coords, order=1)
    mask = warp((image != 0).astype(np.float32), coords, order=0) > 0
    x = normalise(img, mask)
    model = a.contrast if a.contrast != "mixed" else str(rng.choice(["monotone", "gaussian"]))
    out = (
        monotone_contrast(rng, x, a.knots)
        if model == "monotone"
        else gaussian_contrast(rng, x, lab, mask, a.clusters)
    )
    d = a.difficulty
    factors = 1.0 + rng.uniform(0, 1, 3) * (a.max_resolution - 1.0) * d
    out = resolution_loss(out * mask, factors)
    out *= np.exp(smooth_field(rng, out.shape, a.spacing, 60.0, a.bias * d))
    noise_sd = rng.uniform(0, a.noise * d)
    out = np.where(mask, out + rng.normal(0.0, noise_sd, out.shape), 0.0)
    out = np.clip(out, 0.0, None).astype(np.float32) * 1000.0
    drawn = {
        "contrast": model,
        "resolution_mm": (factors * a.spacing).round(3).tolist(),
        "noise_sd": round(float(noise_sd), 4),
    }
    return out, lab, drawn


# ----------------------------------------------------------------------------- files
def write_nifti(data: np.ndarray, spacing: float, path: Path) -> None:
    """``data`` as a RAS+ NIfTI at ``spacing`` (gzip without a time stamp: byte-identical reruns)."""
    img = nib.Nifti1Image(data, np.diag([spacing, spacing, spacing, 1.0]))
    img.header.set_xyzt_units("mm")
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write(img.to_bytes())


def _sources(root: Path) -> tuple[list[Case], dict[str, Any]]:
    cases, meta = list_cases(root)
    cases = [c for c in cases if c.label is not None]
    if not cases:
        raise SystemExit(f"{root}: no case has a label")
    return cases, meta


def generate_population(
    source: Path,
    out: Path,
    counts: dict[str, int],
    *,
    appearance: Appearance = Appearance(),
    seed: int = 0,
    test_source: Path | None = None,
    echo: Any = print,
) -> dict[str, list[str]]:
    """Write the population (see the module's docstring); returns its splits (subject ids)."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: exists and is not empty; generated subjects are never overwritten")
    cases, meta = _sources(source)
    offsets = {"train": 0, "tuning": counts["train"]}
    jobs = [
        (s, c, offsets[s] + i)
        for c in range(len(cases))
        for s in ("train", "tuning")
        for i in range(counts[s])
    ]
    test_cases = cases
    if test_source is not None:
        test_cases, test_meta = _sources(test_source)
        if test_meta.get("labels") and meta.get("labels") and test_meta["labels"] != meta["labels"]:
            raise SystemExit(
                f"{test_source}: its labels {test_meta['labels']} differ from {source}'s {meta['labels']}"
            )
    offset = counts["train"] + counts["tuning"] if test_source is None else 0
    tests = [("test", c, offset + i) for c in range(len(test_cases)) for i in range(counts["test"])]
    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    subjects: dict[str, Any] = {}
    for group, pool, tag in ((jobs, cases, 0), (tests, test_cases, 0 if test_source is None else 1)):
        loaded: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for split, c, i in group:
            case = pool[c]
            if c not in loaded:
                img, original = load_canonical(case.images)
                lab, _ = load_canonical((case.label,))  # type: ignore[arg-type]
                loaded = {c: (img[0], np.rint(lab[0]).astype(np.int16), np.asarray(spacing_of(original)))}
            image, label, spacing = loaded[c]
            rng = np.random.default_rng([seed, tag, c, i])
            sub_img, sub_lab, drawn = generate(image, label, spacing, appearance, rng)
            sid = f"{case.case_id}_s{i:03d}"
            if sid in subjects:
                raise SystemExit(
                    f"{test_source}: subject {sid} would be written twice (same case ids as {source})"
                )
            write_nifti(sub_img, appearance.spacing, out / "imagesTr" / f"{sid}.nii.gz")
            write_nifti(sub_lab, appearance.spacing, out / "labelsTr" / f"{sid}.nii.gz")
            splits[split].append(sid)
            subjects[sid] = {"source": str(case.case_id), "split": split, **drawn}
            echo(f"{sid}: {split}, {drawn['contrast']}, resolution {drawn['resolution_mm']} mm")
    ids = [sid for s in SPLITS for sid in splits[s]]
    dataset = {
        "name": f"{meta.get('name', source.name)}Population",
        "description": f"Generated from {source.name}"
        + (f" (test subjects from {test_source.name})" if test_source else "")
        + " by benchmarks/population.py",
        "tensorImageSize": "3D",
        "modality": meta.get("modality", {"0": "unknown"}),
        "labels": meta.get("labels", {}),
        "numTraining": len(ids),
        "numTest": 0,
        "training": [{"image": f"./imagesTr/{i}.nii.gz", "label": f"./labelsTr/{i}.nii.gz"} for i in ids],
        "test": [],
    }
    (out / "dataset.json").write_text(json.dumps(dataset, indent=1) + "\n")
    (out / "splits.json").write_text(json.dumps(splits, indent=1) + "\n")
    settings = {
        "source": source.name,
        "test_source": test_source.name if test_source else None,
        "seed": seed,
        "counts": counts,
        "appearance": asdict(appearance),
    }
    (out / "population.json").write_text(
        json.dumps({"settings": settings, "subjects": subjects}, indent=1) + "\n"
    )
    return splits


def read_splits(root: Path) -> dict[str, list[str]]:
    """A population's ``splits.json``: subject ids of ``train``, ``tuning`` and ``test``."""
    path = Path(root) / "splits.json"
    try:
        splits = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: cannot read the population's splits ({e})") from None
    if not isinstance(splits, dict) or set(splits) != set(SPLITS):
        raise SystemExit(f"{path}: must name exactly the splits {', '.join(SPLITS)}")
    return {s: list(splits[s]) for s in SPLITS}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="an MSD dataset (image and label per case)")
    p.add_argument("out", type=Path, help="the new dataset's folder (must not exist or be empty)")
    p.add_argument("--train", type=int, default=6, help="train subjects per source case")
    p.add_argument("--tuning", type=int, default=4, help="tuning subjects per source case")
    p.add_argument("--test", type=int, default=8, help="test subjects per source (or --test-source) case")
    p.add_argument("--test-source", type=Path, help="draw the test subjects from this MSD dataset's cases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spacing", type=float, default=Appearance.spacing)
    p.add_argument("--contrast", choices=CONTRASTS, default=Appearance.contrast)
    p.add_argument("--difficulty", type=float, default=Appearance.difficulty)
    args = p.parse_args(argv)
    for name in SPLITS:
        if getattr(args, name) < 0:
            p.error(f"--{name} must be >= 0")
    try:
        a = replace(Appearance(), spacing=args.spacing, contrast=args.contrast, difficulty=args.difficulty)
    except ValueError as e:
        p.error(str(e))
    counts = {s: getattr(args, s) for s in SPLITS}
    try:
        splits = generate_population(
            args.source, args.out, counts, appearance=a, seed=args.seed, test_source=args.test_source
        )
    except DataError as e:
        raise SystemExit(f"Error: {e}") from None
    print(f"{args.out}: " + ", ".join(f"{len(v)} {k}" for k, v in splits.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
