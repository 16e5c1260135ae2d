"""Synthetic MSD datasets with learnable structure, for the demo and the tests."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np


def make_msd_dataset(
    root: str | os.PathLike[str],
    n_cases: int = 6,
    shape: Sequence[int] = (48, 48, 32),
    n_classes: int = 3,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    *,
    anisotropic: bool = False,
    modalities: Sequence[str] = ("MR",),
) -> Path:
    """Write an MSD folder: ``dataset.json``, ``imagesTr/``, ``labelsTr/`` (NIfTI).

    Each case is a noisy head-like ellipsoid of "tissue" (label 1) holding smaller blobs of other
    classes (labels 2, ...), each class with its own mean intensity, plus a smooth bias field and
    Gaussian noise, so a network has something real to learn. Everything is seeded.

    Args:
        root: Folder to create (it may exist).
        n_cases: Number of cases.
        shape: Volume shape ``(X, Y, Z)``.
        n_classes: Classes including background (>= 2).
        spacing: Voxel spacing in mm.
        seed: Seed.
        anisotropic: Coarse slices: Z spacing x4 and a quarter of the slices.
        modalities: Channel names (one 4D file when several).

    Returns:
        ``root`` as a ``Path``.
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if anisotropic:
        shape = (shape[0], shape[1], max(4, shape[2] // 4))
        spacing = (spacing[0], spacing[1], spacing[2] * 4)
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    training = []
    for i in range(n_cases):
        label = _label(rng, grid, n_classes)
        chans = [_image(rng, grid, label, n_classes, m) for m in range(len(modalities))]
        data = chans[0] if len(chans) == 1 else np.stack(chans, axis=-1)
        affine = np.diag([*spacing, 1.0])
        affine[:3, 3] = [-s * sp / 2 for s, sp in zip(shape, spacing)]
        cid = f"case_{i:03d}"
        nib.save(nib.Nifti1Image(data, affine), str(root / "imagesTr" / f"{cid}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / f"{cid}.nii.gz"))
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    names = ["background", "tissue"] + [f"structure_{k}" for k in range(2, n_classes)]
    meta = {
        "name": "Synthetic",
        "description": "ronas_optuna synthetic dataset (seeded ellipsoids with noise and bias field)",
        "tensorImageSize": "4D" if len(modalities) > 1 else "3D",
        "modality": {str(i): m for i, m in enumerate(modalities)},
        "labels": {str(k): n for k, n in enumerate(names)},
        "numTraining": n_cases,
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


def _label(rng: np.random.Generator, grid: np.ndarray, n_classes: int) -> np.ndarray:
    """A head-like ellipsoid of "tissue" (label 1) holding two blobs of each further class."""
    label = np.zeros(grid.shape[1:], np.uint8)
    centre = rng.uniform(-0.1, 0.1, 3)
    radii = rng.uniform(0.6, 0.85, 3)
    body = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1
    label[body] = 1
    for k in range(2, n_classes):
        for _ in range(2):
            c = centre + rng.uniform(-0.35, 0.35, 3)
            r = rng.uniform(0.12, 0.25, 3)
            blob = (((grid - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1
            label[blob & body] = k
    return label


def _image(
    rng: np.random.Generator, grid: np.ndarray, label: np.ndarray, n_classes: int, m: int
) -> np.ndarray:
    """Modality ``m`` of ``label``: a mean intensity per class, a smooth bias field, Gaussian noise."""
    means = np.concatenate([[0.0], rng.permutation(np.linspace(1.0, 2.0 + m, n_classes - 1))])
    img = means[label].astype(np.float32)
    bias = 1 + 0.15 * (grid * rng.normal(0, 1, 3)[:, None, None, None]).sum(0)
    img = img * bias + rng.normal(0, 0.35, label.shape)
    img = img * 100 + 50  # MR-like arbitrary units
    return img.astype(np.float32)
