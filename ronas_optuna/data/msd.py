"""Medical Segmentation Decathlon datasets: reading, nnU-Net-style preprocessing, cache, splits.

Arrays are ``(C, X, Y, Z)`` in RAS+ orientation (``nibabel.as_closest_canonical``). Each preprocessed
case keeps what is needed to write a prediction back in the original geometry: the original affine,
header and shape, the crop box and the shape before resampling (see :meth:`Preprocessor.invert`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
from skimage.transform import resize

from ..errors import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")


#: Largest factor by which resampling may multiply a volume's voxel count.
MAX_GROWTH = 64


def strip_nifti(name: str) -> str:
    for s in NIFTI_SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return name


@dataclass(frozen=True)
class Case:
    """One training case: its id, image file(s) (one per modality, or one 4D file) and label."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None


def read_dataset_json(root: Path) -> dict[str, Any] | None:
    p = root / "dataset.json"
    if not p.exists():
        return None
    try:
        with open(p, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: cannot read dataset.json ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{p}: dataset.json must hold a JSON object")
    return data


def _resolve_images(root: Path, rel: str) -> tuple[Path, ...]:
    """An MSD image entry: a single (possibly 4D) file, or nnU-Net's ``<id>_0000.nii.gz`` files."""
    p = (root / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
    if p.exists():
        return (p,)
    stem = strip_nifti(p.name)
    per_mod = sorted(p.parent.glob(f"{stem}_[0-9][0-9][0-9][0-9].nii*"))
    return tuple(per_mod) if per_mod else (p,)


def _inside(root: Path, rel: Any, where: str) -> str:
    """``rel`` if it names a path inside ``root``; a ``DataError`` otherwise."""
    if not isinstance(rel, str) or not rel:
        raise DataError(f"{root / 'dataset.json'}: {where} must be a relative path, got {rel!r}")
    target = (root / rel).resolve()
    if Path(rel).is_absolute() or not target.is_relative_to(root.resolve()):
        raise DataError(f"{root / 'dataset.json'}: {where} {rel!r} points outside the dataset folder")
    return rel


def list_cases(root: str | os.PathLike[str]) -> tuple[list[Case], dict[str, Any]]:
    """The training cases of an MSD folder and its (possibly synthesised) ``dataset.json``.

    Without ``dataset.json``, ``imagesTr`` and ``labelsTr`` are paired by file name.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    meta = read_dataset_json(root)
    cases: list[Case] = []
    if meta is not None:
        training = meta.get("training")
        if not isinstance(training, list):
            raise DataError(f"{root / 'dataset.json'}: 'training' must be a list of cases")
        for i, entry in enumerate(training):
            if not isinstance(entry, dict) or "image" not in entry:
                raise DataError(f"{root / 'dataset.json'}: training[{i}] lacks 'image'")
            images = _resolve_images(root, _inside(root, entry["image"], f"training[{i}].image"))
            label = (
                (root / _inside(root, entry["label"], f"training[{i}].label")).resolve()
                if entry.get("label")
                else None
            )
            cid = strip_nifti(Path(entry["image"]).name)
            cases.append(Case(cid, images, label))
    else:
        img_dir, lab_dir = root / "imagesTr", root / "labelsTr"
        if not img_dir.is_dir():
            raise DataError(f"{root}: neither dataset.json nor imagesTr/ found")
        groups: dict[str, list[Path]] = {}
        for p in sorted(img_dir.iterdir()):
            if p.name.startswith(".") or not p.name.endswith(NIFTI_SUFFIXES):
                continue
            stem = strip_nifti(p.name)
            if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit():
                stem = stem[:-5]
            groups.setdefault(stem, []).append(p)
        for cid, imgs in groups.items():
            lab = next(
                (lab_dir / f"{cid}{s}" for s in NIFTI_SUFFIXES if (lab_dir / f"{cid}{s}").exists()), None
            )
            cases.append(Case(cid, tuple(imgs), lab))
        meta = {"modality": {"0": "unknown"}, "labels": {}, "training": []}
    return cases, meta


def modalities(meta: Mapping[str, Any]) -> list[str]:
    mod = meta.get("modality") or meta.get("channel_names") or {"0": "unknown"}
    return [str(mod[k]) for k in sorted(mod, key=lambda k: int(k))]


def label_values(meta: Mapping[str, Any]) -> list[int] | None:
    """Declared label values (``None`` when ``dataset.json`` declares none)."""
    labels = meta.get("labels") or {}
    if not labels:
        return None
    try:
        vals = sorted(int(k) for k in labels)
    except ValueError:  # nnU-Net v2 style {"background": 0, ...}
        vals = sorted(int(v) for v in labels.values())
    return vals


# ---------------------------------------------------------------------------- geometry helpers
def load_nifti(path: str | os.PathLike[str]) -> nib.Nifti1Image:
    """``nibabel.load`` typed as the NIfTI image it returns for ``.nii``/``.nii.gz`` files."""
    return cast(nib.Nifti1Image, nib.load(str(path)))


def load_canonical(paths: Sequence[Path]) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Load image file(s) as a ``(C, X, Y, Z)`` float32 RAS+ array; returns the first original."""
    chans: list[np.ndarray] = []
    first = None
    for p in paths:
        img = load_nifti(p)
        first = first or img
        can = nib.as_closest_canonical(img)
        data = np.asarray(can.dataobj, dtype=np.float32)
        if data.ndim == 4:
            chans.extend(np.moveaxis(data, -1, 0))
        elif data.ndim == 3:
            chans.append(data)
        else:
            raise DataError(f"{p}: expected a 3D or 4D volume, got shape {data.shape}")
    assert first is not None
    return np.stack(chans), first


def spacing_of(img: nib.Nifti1Image) -> tuple[float, float, float]:
    """Voxel spacing (mm) along the RAS+ canonical axes."""
    ornt = nib.orientations.io_orientation(img.affine)
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    out = [0.0, 0.0, 0.0]
    for src, (dst, _) in enumerate(ornt[:3]):
        out[int(dst)] = float(zooms[src])
    return out[0], out[1], out[2]


def canonical_shape_of(img: nib.Nifti1Image) -> tuple[int, int, int]:
    ornt = nib.orientations.io_orientation(img.affine)
    out = [0, 0, 0]
    for src, (dst, _) in enumerate(ornt[:3]):
        out[int(dst)] = int(img.shape[src])
    return out[0], out[1], out[2]


def to_original_orientation(data: np.ndarray, original_affine: np.ndarray) -> np.ndarray:
    """Undo ``as_closest_canonical`` on a 3D array."""
    ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
    target = nib.orientations.io_orientation(original_affine)
    return nib.orientations.apply_orientation(data, nib.orientations.ornt_transform(ras, target))


def nonzero_bbox(image: np.ndarray) -> tuple[tuple[int, int], ...]:
    mask = np.any(image != 0, axis=0)
    if not mask.any():
        return tuple((0, s) for s in mask.shape)
    box = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.where(mask.any(axis=other))[0]
        box.append((int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def median_spacing(
    spacings: Sequence[Sequence[float]], anisotropy_threshold: float = 3.0
) -> tuple[float, ...]:
    """nnU-Net's target spacing: the median, but the 10th percentile on a very coarse axis."""
    arr = np.asarray(spacings, dtype=float)
    target = np.median(arr, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    if target[worst] > anisotropy_threshold * max(target[others]):
        target[worst] = max(np.percentile(arr[:, worst], 10), anisotropy_threshold * max(target[others]))
    return tuple(float(v) for v in target)


# ---------------------------------------------------------------------------- preprocessing
@dataclass
class Preprocessor:
    """Crop, resample and normalise; invertible for writing predictions back.

    Attributes:
        spacing: Target spacing (mm) along X, Y, Z (RAS+).
        schemes: Per channel ``"ct"`` (clip to foreground percentiles, then z-score with dataset
            statistics) or ``"zscore"`` (per case over the non-zero region).
        ct_stats: Per channel ``{"lower", "upper", "mean", "std"}`` for ``"ct"`` channels.
        crop: Crop to the non-zero region.
        image_order: Spline order for images (1 linear, 3 cubic); labels use nearest.
    """

    spacing: tuple[float, float, float]
    schemes: list[str]
    ct_stats: list[dict[str, float] | None] = field(default_factory=list)
    crop: bool = True
    image_order: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessor:
        return cls(
            spacing=tuple(float(v) for v in d["spacing"]),  # type: ignore[arg-type]
            schemes=list(d["schemes"]),
            ct_stats=list(d.get("ct_stats") or []),
            crop=bool(d.get("crop", True)),
            image_order=int(d.get("image_order", 1)),
        )

    def _resample(self, arr: np.ndarray, spacing: Sequence[float], order: int) -> np.ndarray:
        new_shape = tuple(
            max(1, int(round(s * sp / t))) for s, sp, t in zip(arr.shape[-3:], spacing, self.spacing)
        )
        if new_shape == arr.shape[-3:]:
            return arr
        kw = dict(order=order, mode="edge", anti_aliasing=False, preserve_range=True)
        if arr.ndim == 4:
            return np.stack([resize(c, new_shape, **kw) for c in arr]).astype(np.float32)
        if order == 0:
            return resize(arr, new_shape, **kw).astype(arr.dtype)
        return resize(arr, new_shape, **kw).astype(np.float32)

    def geometry(self, image: np.ndarray, original: nib.Nifti1Image, files: Sequence[Path]) -> dict[str, Any]:
        bbox = nonzero_bbox(image) if self.crop else tuple((0, s) for s in image.shape[1:])
        return {
            "files": [str(p) for p in files],
            "original_affine": np.asarray(original.affine).tolist(),
            "original_shape": list(original.shape[:3]),
            "canonical_shape": list(image.shape[1:]),
            "bbox": [list(b) for b in bbox],
            "spacing": list(spacing_of(original)),
        }

    def crop_resample(
        self, image: np.ndarray, label: np.ndarray | None, props: Mapping[str, Any]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        sl = tuple(slice(a, b) for a, b in props["bbox"])
        image = image[(slice(None), *sl)]
        image = self._resample(image, props["spacing"], self.image_order)
        if label is not None:
            label = self._resample(label[sl].astype(np.uint8), props["spacing"], 0)
        return image, label

    def normalise(self, image: np.ndarray) -> np.ndarray:
        out = np.empty_like(image, dtype=np.float32)
        for c, scheme in enumerate(self.schemes):
            x = image[c]
            if scheme == "ct":
                st = self.ct_stats[c] if c < len(self.ct_stats) else None
                if not st:
                    raise DataError("CT normalisation needs dataset statistics (ct_stats)")
                out[c] = (np.clip(x, st["lower"], st["upper"]) - st["mean"]) / max(st["std"], 1e-8)
            else:
                mask = x != 0
                if mask.sum() < 10:
                    mask = np.ones_like(mask)
                m, s = float(x[mask].mean()), float(x[mask].std())
                out[c] = np.where(mask, (x - m) / max(s, 1e-8), 0.0)
        return out

    def __call__(
        self, image_files: Sequence[Path], label_file: Path | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """Preprocess one case; returns ``(image, label or None, properties)``."""
        image, original = load_canonical(image_files)
        if image.shape[0] != len(self.schemes):
            raise DataError(
                f"{image_files[0]}: {image.shape[0]} channel(s), the model expects {len(self.schemes)}"
            )
        props = self.geometry(image, original, image_files)
        label = None
        if label_file is not None:
            label = np.asarray(nib.as_closest_canonical(load_nifti(label_file)).dataobj)
            label = np.rint(label).astype(np.uint8)
        self.check_growth(image.shape[1:], props, image_files[0])
        image, label = self.crop_resample(image, label, props)
        props["preprocessed_shape"] = list(image.shape[1:])
        return self.normalise(image), label, props

    def check_growth(self, shape: Sequence[int], props: Mapping[str, Any], source: Path) -> None:
        """Refuse a resampling that would make the volume more than ``MAX_GROWTH`` times larger
        (a header with a wrong spacing, say) before it is attempted."""
        spacing = props.get("original_spacing") or props.get("spacing")
        if spacing is None:
            return
        factor = float(np.prod([float(s) / float(t) for s, t in zip(spacing, self.spacing)]))
        if factor > MAX_GROWTH:
            new = [round(int(n) * float(s) / float(t)) for n, s, t in zip(shape, spacing, self.spacing)]
            raise DataError(
                f"{source}: spacing {tuple(round(float(s), 3) for s in spacing)} mm resampled to "
                f"{tuple(self.spacing)} mm would grow {tuple(int(n) for n in shape)} to {tuple(new)} "
                f"({factor:.0f}x the voxels, more than {MAX_GROWTH}x); check the file's header"
            )

    def invert(
        self, prediction: np.ndarray, props: Mapping[str, Any], *, probabilities: bool = False
    ) -> np.ndarray:
        """Map a prediction back to the original image grid (orientation, crop, spacing undone).

        Args:
            prediction: Labels ``(X, Y, Z)`` or, with ``probabilities``, ``(K, X, Y, Z)``.
            props: The properties of the case from :meth:`__call__`.
            probabilities: Resample class probabilities linearly, then take the arg-max
                (smoother than resampling labels).

        Returns:
            A ``uint8`` label volume with the original file's shape and voxel order.
        """
        bbox = props["bbox"]
        crop_shape = tuple(b - a for a, b in bbox)
        kw = dict(mode="edge", anti_aliasing=False, preserve_range=True)
        if probabilities:
            if tuple(prediction.shape[1:]) != crop_shape:
                prediction = np.stack([resize(p, crop_shape, order=1, **kw) for p in prediction])
            seg = np.argmax(prediction, axis=0).astype(np.uint8)
        else:
            seg = prediction.astype(np.uint8)
            if seg.shape != crop_shape:
                seg = resize(seg, crop_shape, order=0, **kw).astype(np.uint8)
        full = np.zeros(tuple(props["canonical_shape"]), dtype=np.uint8)
        full[tuple(slice(a, b) for a, b in bbox)] = seg
        return to_original_orientation(full, np.asarray(props["original_affine"]))


def write_label_like(seg: np.ndarray, reference: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """Write ``seg`` as NIfTI with the affine and header of ``reference`` (shape must match)."""
    ref = load_nifti(reference)
    if tuple(seg.shape) != tuple(ref.shape[:3]):
        raise DataError(f"{reference}: prediction shape {seg.shape} differs from {ref.shape[:3]}")
    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    img = nib.Nifti1Image(seg.astype(np.uint8), ref.affine, header)
    img.header.set_slope_inter(1, 0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp.nii.gz", dir=out.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------- the dataset
@dataclass
class PreprocessedCase:
    case_id: str
    image: np.ndarray  # (C, X, Y, Z) float32
    label: np.ndarray  # (X, Y, Z) uint8
    props: dict[str, Any]


class MSDDataset:
    """An MSD-layout dataset, preprocessed on first use and cached on disk.

    Args:
        root: Folder with ``dataset.json`` (or ``imagesTr``/``labelsTr`` only).
        spacing: Target spacing (mm, RAS+ axes); a number means isotropic. Default: the median
            spacing (nnU-Net's anisotropy rule).
        cache_dir: Where preprocessed cases are stored, keyed by a hash of the configuration and
            the files' sizes and times. ``None`` keeps them in memory only.
        image_order: Spline order for image resampling (1 linear, 3 cubic).
        crop: Crop to the non-zero region.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        spacing: float | Sequence[float] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        image_order: int = 1,
        crop: bool = True,
    ):
        self.root = Path(root)
        self.cases, self.meta = list_cases(self.root)
        if not self.cases:
            raise DataError(f"{self.root}: the dataset has no training cases")
        ids = [c.case_id for c in self.cases]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise DataError(f"{self.root}: duplicate case ids {dup}")
        for c in self.cases:
            for p in (*c.images, c.label):
                if p is None or not p.exists():
                    raise DataError(f"{p or c.case_id}: file missing (case {c.case_id})")
        self.modalities = modalities(self.meta)
        declared = label_values(self.meta)
        self._declared_labels = declared
        headers = {}
        for c in self.cases:
            try:
                headers[c.case_id] = load_nifti(c.images[0])
            except Exception as e:
                raise DataError(f"{c.images[0]}: unreadable NIfTI ({e})") from None
        self.original_spacings = {k: spacing_of(h) for k, h in headers.items()}
        self.original_shapes = {k: canonical_shape_of(h) for k, h in headers.items()}
        if spacing is None:
            target = median_spacing(list(self.original_spacings.values()))
        elif isinstance(spacing, (int, float)):
            target = (float(spacing),) * 3
        else:
            target = tuple(float(s) for s in spacing)
        if len(target) != 3 or min(target) <= 0:
            raise DataError(f"spacing must be a positive number or three numbers, got {spacing}")
        schemes = ["ct" if m.strip().upper() == "CT" else "zscore" for m in self.modalities]
        self.preprocessor = Preprocessor(tuple(target), schemes, crop=crop, image_order=image_order)  # type: ignore[arg-type]
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._mem: dict[str, PreprocessedCase] = {}
        if "ct" in schemes:
            self.preprocessor.ct_stats = self._ct_stats()

    # -------------------------------------------------------------- properties
    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    @property
    def in_channels(self) -> int:
        return len(self.modalities)

    @property
    def num_classes(self) -> int:
        if self._declared_labels is not None:
            return max(self._declared_labels) + 1
        return int(max(int(self.load(i).label.max()) for i in self.case_ids)) + 1

    @property
    def label_names(self) -> dict[int, str]:
        labels = self.meta.get("labels") or {}
        try:
            return {int(k): str(v) for k, v in labels.items()}
        except ValueError:
            return {int(v): str(k) for k, v in labels.items()}

    def fingerprint(self) -> str:
        files = []
        for c in self.cases:
            for p in (*c.images, c.label):
                assert p is not None
                st = p.stat()
                files.append([str(p), st.st_size, int(st.st_mtime)])
        blob = json.dumps({"pre": self.preprocessor.to_dict(), "files": files}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def median_shape(self, case_ids: Sequence[str] | None = None) -> tuple[int, int, int]:
        """Median shape of the preprocessed (cropped and resampled) cases."""
        med = np.median(np.asarray([c.image.shape[1:] for c in self.load_all(case_ids)]), axis=0)
        return int(med[0]), int(med[1]), int(med[2])

    # -------------------------------------------------------------- loading
    def _case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise DataError(f"{self.root}: no case {case_id!r}")

    def _ct_stats(self) -> list[dict[str, float] | None]:
        stats: list[dict[str, float] | None] = []
        samples: list[list[np.ndarray]] = [[] for _ in self.modalities]
        rng = np.random.default_rng(0)
        for c in self.cases:
            image, _ = load_canonical(c.images)
            assert c.label is not None  # training cases have labels
            lab = np.asarray(nib.as_closest_canonical(load_nifti(c.label)).dataobj) > 0
            for ch in range(image.shape[0]):
                v = image[ch][lab]
                if v.size > 10000:
                    v = rng.choice(v, 10000, replace=False)
                samples[ch].append(v)
        for ch, scheme in enumerate(self.preprocessor.schemes):
            if scheme != "ct":
                stats.append(None)
                continue
            v = np.concatenate(samples[ch]) if samples[ch] else np.zeros(1)
            lo, hi = np.percentile(v, [0.5, 99.5])
            v = np.clip(v, lo, hi)
            stats.append(
                {"lower": float(lo), "upper": float(hi), "mean": float(v.mean()), "std": float(v.std())}
            )
        return stats

    def load(self, case_id: str) -> PreprocessedCase:
        """One preprocessed case (memory, then disk cache, then preprocessing)."""
        if case_id in self._mem:
            return self._mem[case_id]
        cache = None
        if self.cache_dir is not None:
            cache = self.cache_dir / self.fingerprint() / f"{case_id}.npz"
            if cache.exists():
                try:
                    with np.load(cache, allow_pickle=False) as z:
                        props = json.loads(str(z["props"]))
                        pc = PreprocessedCase(case_id, z["image"], z["label"], props)
                    self._mem[case_id] = pc
                    return pc
                except Exception:  # a broken cache entry is rebuilt, never trusted
                    cache.unlink(missing_ok=True)
        c = self._case(case_id)
        try:
            image, label, props = self.preprocessor(c.images, c.label)
        except DataError:
            raise
        except Exception as e:
            raise DataError(
                f"{c.images[0]}: cannot preprocess case {case_id} ({type(e).__name__}: {e})"
            ) from None
        assert label is not None
        if label.shape != image.shape[1:]:
            raise DataError(f"{c.label}: label shape {label.shape} differs from image {image.shape[1:]}")
        props["case_id"] = case_id
        pc = PreprocessedCase(case_id, image, label, props)
        self._mem[case_id] = pc
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz")
            os.close(fd)
            np.savez(tmp, image=image, label=label, props=json.dumps(props))
            os.replace(tmp, cache)
        return pc

    def load_all(self, case_ids: Sequence[str] | None = None) -> list[PreprocessedCase]:
        return [self.load(i) for i in (case_ids or self.case_ids)]

    # -------------------------------------------------------------- splits
    def split(self, val_fraction: float = 0.2, *, seed: int = 0) -> tuple[list[str], list[str]]:
        """A seeded train/validation split of case ids (at least one case each side)."""
        ids = self.case_ids
        if len(ids) < 2:
            raise DataError(f"{self.root}: need at least 2 cases for a train/validation split")
        perm = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
        n_val = min(max(1, int(round(val_fraction * len(ids)))), len(ids) - 1)
        return sorted(perm[n_val:]), sorted(perm[:n_val])

    def kfold(self, k: int = 5, *, seed: int = 0) -> list[tuple[list[str], list[str]]]:
        """``k`` seeded folds as ``(train_ids, val_ids)``."""
        ids = self.case_ids
        if not 2 <= k <= len(ids):
            raise DataError(f"k must be between 2 and the number of cases ({len(ids)}), got {k}")
        perm = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
        folds = [perm[i::k] for i in range(k)]
        return [
            (sorted(x for j, f in enumerate(folds) if j != i for x in f), sorted(folds[i])) for i in range(k)
        ]
