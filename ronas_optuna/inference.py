"""Sliding-window prediction with Gaussian weighting and mirroring, and NIfTI in/out."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .data.msd import DataError, Preprocessor, strip_nifti, write_label_like
from .files import remove_stale_temp_files

_MODALITY = re.compile(r"_\d{4}$")


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """nnU-Net's Gaussian importance map (centre weighted, never zero)."""
    axes = []
    for p in patch:
        x = torch.arange(p, dtype=torch.float32) - (p - 1) / 2
        axes.append(torch.exp(-(x**2) / (2 * (p * sigma_scale) ** 2)))
    g = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    g = g / g.max()
    return g.clamp_min(g[g > 0].min())


def _starts(size: int, patch: int, step: float) -> list[int]:
    if size <= patch:
        return [0]
    n = int(np.ceil((size - patch) / (patch * step))) + 1
    return sorted({int(round(v)) for v in np.linspace(0, size - patch, n)})


@torch.no_grad()
def logits_of(
    net: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, *, amp: bool = False
) -> torch.Tensor:
    """Full-resolution float logits of ``batch`` (the first output of a deep-supervision list);
    ``amp``: bfloat16 (or float16) autocast on CUDA."""
    device = batch.device
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    with torch.autocast(device.type, dtype=dtype, enabled=amp and device.type == "cuda"):
        logits = net(batch)
    if isinstance(logits, (list, tuple)):
        logits = logits[0]
    return logits.float()


def sliding_window(
    net: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray | torch.Tensor,
    patch_size: Sequence[int],
    num_classes: int,
    *,
    overlap: float = 0.5,
    mirror: bool = False,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    amp: bool = False,
) -> torch.Tensor:
    """Class probabilities ``(K, X, Y, Z)`` of a whole ``(C, X, Y, Z)`` volume.

    Windows of ``patch_size`` overlapping by ``overlap`` are weighted by a Gaussian; ``mirror``
    averages predictions over all 8 axis flips (test-time augmentation). Volumes smaller than the
    patch are zero-padded and cropped back.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    device = torch.device(device)
    x = torch.as_tensor(
        np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image, dtype=torch.float32
    )
    shape = x.shape[1:]
    patch = [int(p) for p in patch_size]
    pads = []
    for s, p in zip(shape, patch):
        d = max(0, p - s)
        pads.append((d // 2, d - d // 2))
    if any(sum(p) for p in pads):
        flat = [v for pr in reversed(pads) for v in pr]
        x = torch.nn.functional.pad(x, flat)
    full = x.shape[1:]
    weight = gaussian_importance(patch).to(device)
    probs = torch.zeros((num_classes, *full), device=device)
    norm = torch.zeros(full, device=device)
    step = 1 - overlap
    corners = list(itertools.product(*[_starts(s, p, step) for s, p in zip(full, patch)]))
    flips: list[tuple[int, ...]] = [()]
    if mirror:
        flips = [f for r in range(4) for f in itertools.combinations((2, 3, 4), r)]
    for i in range(0, len(corners), batch_size):
        chunk = corners[i : i + batch_size]
        batch = torch.stack(
            [x[:, a : a + patch[0], b : b + patch[1], c : c + patch[2]] for a, b, c in chunk]
        ).to(device, non_blocking=True)
        out: torch.Tensor = torch.zeros((len(chunk), num_classes, *patch), device=device)
        for f in flips:
            inp = torch.flip(batch, f) if f else batch
            prob = torch.softmax(logits_of(net, inp, amp=amp), 1)
            out += torch.flip(prob, f) if f else prob
        out /= len(flips)
        for (a, b, c), o in zip(chunk, out):
            sl = (slice(a, a + patch[0]), slice(b, b + patch[1]), slice(c, c + patch[2]))
            probs[(slice(None), *sl)] += o * weight
            norm[sl] += weight
    probs /= norm
    crop = tuple(slice(p[0], p[0] + s) for p, s in zip(pads, shape))
    return probs[(slice(None), *crop)]


def group_modalities(paths: Sequence[str | os.PathLike[str]]) -> list[list[Path]]:
    """Cases from input files: ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ... (the MSD/nnU-Net
    convention for one file per modality) form one case, in modality order; any other file is a
    case of its own (a 3D image, or a 4D image holding every modality)."""
    groups: dict[str, list[Path]] = {}
    for p in map(Path, paths):
        stem = strip_nifti(p.name)
        key = str(p.parent / stem[:-5]) if _MODALITY.search(stem) else str(p)
        groups.setdefault(key, []).append(p)
    return [sorted(g, key=lambda f: f.name) for g in groups.values()]


def output_paths(cases: Sequence[Sequence[Path]], out_dir: str | os.PathLike[str]) -> list[Path]:
    """``<out_dir>/<case>.nii.gz`` per case; ``DataError`` if one would replace an input or two
    cases would write the same file (checked before any work)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: the output folder is a file")
    inputs = {f.resolve() for files in cases for f in files}
    outs: dict[Path, Path] = {}
    for files in cases:
        stem = strip_nifti(files[0].name)
        name = stem[:-5] if len(files) > 1 and _MODALITY.search(stem) else stem
        out = (out_dir / f"{name}.nii.gz").resolve()
        if out in inputs:
            raise DataError(f"{out}: the output would replace an input; choose another -o folder")
        if out in outs:
            raise DataError(
                f"{outs[out]} and {files[0]} would both be written to {out}; predict them separately"
            )
        outs[out] = files[0]
    return list(outs)


def predict_files(
    net: torch.nn.Module,
    preprocessor: Preprocessor,
    patch_size: Sequence[int],
    inputs: Sequence[str | os.PathLike[str] | Sequence[str | os.PathLike[str]]],
    out_dir: str | os.PathLike[str],
    *,
    num_classes: int,
    overlap: float = 0.5,
    mirror: bool = False,
    device: str | torch.device = "cpu",
    amp: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Segment NIfTI files; each label is written with its input's affine, header and shape.

    Every output path is checked first: none may be an input, no two may coincide. Each file is
    written atomically (a temporary file, then a rename), so an interrupted run leaves no partial
    output.

    Args:
        inputs: One path per case, or a sequence of per-modality paths per case.
    """
    cases = [
        [Path(item)] if isinstance(item, (str, os.PathLike)) else [Path(p) for p in item] for item in inputs
    ]
    for files in cases:
        for f in files:
            if not f.is_file():
                raise DataError(f"{f}: input file does not exist")
    outs = output_paths(cases, out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out_dir)
    net = net.to(device).eval()
    for files, out in zip(cases, outs):
        try:
            image, _, props = preprocessor(files)
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{files[0]}: cannot read input ({type(e).__name__}: {e})") from None
        probs = sliding_window(
            net, image, patch_size, num_classes, overlap=overlap, mirror=mirror, device=device, amp=amp
        )
        seg = preprocessor.invert(probs.cpu().numpy(), props, probabilities=True)
        write_label_like(seg, files[0], out)
        if progress:
            progress(str(out))
    return outs
