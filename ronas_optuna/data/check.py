"""Up-front validation of an MSD dataset: every problem, with its file, before hours of search."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from .msd import Case, DataError, label_values, list_cases, load_nifti, modalities


@dataclass
class CheckReport:
    """Problems found by :func:`check_dataset`; ``ok`` when there are no errors."""

    root: Path
    n_cases: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        lines = [f"dataset {self.root}: {self.n_cases} case(s)"]
        lines += [f"  {s}" for s in self.summary]
        lines += [f"ERROR   {e}" for e in self.errors]
        lines += [f"WARNING {w}" for w in self.warnings]
        lines.append("OK" if self.ok else f"{len(self.errors)} error(s)")
        return "\n".join(lines)


def _load(path: Path, report: CheckReport) -> tuple[nib.Nifti1Image, np.ndarray] | None:
    if not path.exists():
        report.errors.append(f"{path}: file missing")
        return None
    try:
        img = load_nifti(path)
        data = np.asarray(img.dataobj)
    except Exception as e:
        report.errors.append(f"{path}: unreadable or corrupt NIfTI ({type(e).__name__}: {e})")
        return None
    return img, data


def check_dataset(root: str | os.PathLike[str]) -> CheckReport:
    """Check every case of an MSD folder; see :class:`CheckReport`."""
    root = Path(root)
    report = CheckReport(root)
    try:
        cases, meta = list_cases(root)
    except DataError as e:
        report.errors.append(str(e))
        return report
    report.n_cases = len(cases)
    if not cases:
        report.errors.append(f"{root}: no training cases")
        return report
    ids = [c.case_id for c in cases]
    for d in sorted({i for i in ids if ids.count(i) > 1}):
        report.errors.append(f"{root}: duplicate case id {d!r}")
    mods = modalities(meta)
    declared = label_values(meta)
    spacings, shapes, found = [], [], set()
    for c in cases:
        ref = _check_images(c, len(mods), report)
        if ref is not None:
            spacings.append(tuple(float(z) for z in ref.header.get_zooms()[:3]))
            shapes.append(tuple(ref.shape[:3]))
        if c.label is None:
            report.errors.append(f"{root / 'labelsTr'}: no label for case {c.case_id}")
        else:
            found |= _check_label(c.label, c.images[0], ref, declared, report)
    if spacings:
        sp = np.median(np.asarray(spacings), axis=0)
        sh = np.median(np.asarray(shapes), axis=0)
        report.summary.append(f"modalities: {', '.join(mods)}")
        report.summary.append(f"labels declared: {declared}; found: {sorted(int(v) for v in found)}")
        report.summary.append(
            f"median shape: {tuple(int(v) for v in sh)}, "
            f"median spacing (mm): {tuple(round(float(v), 3) for v in sp)}"
        )
    return report


def _check_images(case: Case, n_modalities: int, report: CheckReport) -> nib.Nifti1Image | None:
    """Check a case's image files; returns the first readable 3D/4D one (the reference grid)."""
    n_chan = 0
    ref = None
    for p in case.images:
        got = _load(p, report)
        if got is None:
            continue
        img, data = got
        if data.ndim < 3 or min(data.shape[:3]) < 2:
            report.errors.append(f"{p}: 2D data (shape {data.shape}); 3D volumes are required")
            continue
        if data.ndim > 4:
            report.errors.append(f"{p}: {data.ndim}D data (shape {data.shape})")
            continue
        n_chan += data.shape[3] if data.ndim == 4 else 1
        if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
            report.errors.append(f"{p}: {int((~np.isfinite(data)).sum())} non-finite intensities")
        if ref is None:
            ref = img
        elif img.shape[:3] != ref.shape[:3]:
            report.errors.append(f"{p}: shape {img.shape[:3]} differs from {case.images[0]}")
    if ref is not None and n_chan and n_chan != n_modalities:
        report.errors.append(
            f"{case.images[0]}: {n_chan} modality channel(s), dataset.json declares {n_modalities}"
        )
    return ref


def _check_label(
    label: Path, image: Path, ref: nib.Nifti1Image | None, declared: list[int] | None, report: CheckReport
) -> set[int]:
    """Check a case's ``label`` file against its reference image (read from ``image``; ``None``
    when no image was readable: the label is only read); returns the label values found."""
    got = _load(label, report)
    if got is None or ref is None:
        return set()
    lab, ldata = got
    if ldata.shape[:3] != ref.shape[:3] or ldata.ndim != 3:
        report.errors.append(f"{label}: label shape {ldata.shape} differs from image shape {ref.shape[:3]}")
        return set()
    if not np.allclose(lab.affine, ref.affine, atol=1e-3):
        report.errors.append(f"{label}: label affine differs from the image's ({image})")
    if np.issubdtype(ldata.dtype, np.floating) and not np.isfinite(ldata).all():
        report.errors.append(f"{label}: non-finite label values")
        return set()
    values = set(np.unique(ldata).tolist())
    if declared is not None:
        bad = sorted(v for v in values if v not in declared)
        if bad:
            report.errors.append(
                f"{label}: label values {bad} not declared in dataset.json (declared {declared})"
            )
    if values <= {0}:
        report.warnings.append(f"{label}: empty label (background only)")
    return values
