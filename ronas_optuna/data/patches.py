"""Patch sampling with foreground oversampling, augmentation, the loader, and patch-size candidates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .msd import PreprocessedCase


def candidate_patch_sizes(
    median_shape: Sequence[int],
    *,
    depth: int = 4,
    n: int = 5,
    max_voxels: int | None = 128**3,
    min_size: int | None = None,
) -> list[tuple[int, int, int]]:
    """Patch sizes for the ``patch`` decision (RONASMIS): per axis
    ``floor(extent / S) * S - S * k`` for ``k = 0..n-1`` with ``S = 2**depth``.

    Sizes stay at least ``min_size`` (default ``S``); a candidate larger than ``max_voxels`` is
    shrunk on its largest axis first. A candidate of ``S`` on every axis gets ``2 * S`` on the
    axis of the largest extent: an architecture that halves every axis at every level would
    reach one voxel, which instance normalisation cannot train on. Returns distinct sizes,
    largest first.
    """
    s = 2**depth
    lo = min_size or s
    base = [max(lo, (int(e) // s) * s) for e in median_shape]
    out: list[tuple[int, int, int]] = []
    for k in range(n):
        p = [max(lo, b - s * k) for b in base]
        while max_voxels and int(np.prod(p)) > max_voxels and max(p) > lo:
            i = int(np.argmax(p))
            p[i] -= s
        if all(v == s for v in p):
            p[int(np.argmax(base))] = 2 * s
        t = (p[0], p[1], p[2])
        if t not in out:
            out.append(t)
    return out


def _pad_to(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Pad the last three axes symmetrically up to ``shape``."""
    pads = [(0, 0)] * (arr.ndim - 3)
    for s, t in zip(arr.shape[-3:], shape):
        d = max(0, t - s)
        pads.append((d // 2, d - d // 2))
    return np.pad(arr, pads) if any(p != (0, 0) for p in pads) else arr


def extract_patch(
    image: np.ndarray, label: np.ndarray, center: Sequence[int], patch: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The patch of size ``patch`` centred (as far as the volume allows) on ``center``."""
    image = _pad_to(image, patch)
    label = _pad_to(label, patch)
    starts = []
    for c, p, s in zip(center, patch, label.shape):
        starts.append(int(np.clip(c - p // 2, 0, s - p)))
    sl = tuple(slice(a, a + p) for a, p in zip(starts, patch))
    return image[(slice(None), *sl)], label[sl]


def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random flips, in-plane 90-degree rotations, intensity scale/shift and gamma."""
    for ax in range(3):
        if rng.random() < 0.5:
            image = np.flip(image, ax + 1)
            label = np.flip(label, ax)
    if image.shape[1] == image.shape[2]:
        k = int(rng.integers(4))
        if k:
            image = np.rot90(image, k, axes=(1, 2))
            label = np.rot90(label, k, axes=(0, 1))
    image = np.ascontiguousarray(image, dtype=np.float32)
    image = image * rng.uniform(0.9, 1.1, size=(image.shape[0], 1, 1, 1)).astype(np.float32)
    image = image + rng.normal(0, 0.1, size=(image.shape[0], 1, 1, 1)).astype(np.float32)
    if rng.random() < 0.3:
        g = rng.uniform(0.7, 1.5)
        for c in range(image.shape[0]):
            lo, hi = float(image[c].min()), float(image[c].max())
            if hi - lo > 1e-6:
                image[c] = ((image[c] - lo) / (hi - lo)) ** g * (hi - lo) + lo
    return image, np.ascontiguousarray(label)


def foreground_locations(cases: Sequence[PreprocessedCase], seed: int = 0) -> list[dict[int, np.ndarray]]:
    """Per case and foreground class, up to 5,000 voxel coordinates (enough to centre on any
    structure). Compute once and pass to every :class:`PatchDataset` over the same cases."""
    rng = np.random.default_rng([seed, 2**31])
    out = []
    for c in cases:
        locs = {}
        for k in np.unique(c.label):
            if k == 0:
                continue
            idx = np.argwhere(c.label == k)
            if len(idx) > 5000:
                idx = idx[rng.choice(len(idx), 5000, replace=False)]
            locs[int(k)] = idx
        out.append(locs)
    return out


class PatchDataset(Dataset):
    """Random training patches; item ``i`` depends only on ``(seed, start + i)``.

    Args:
        cases: Preprocessed training cases.
        patch_size: ``(X, Y, Z)``.
        length: Number of patches.
        seed: Seed of the whole stream.
        start: Offset in the stream (e.g. ``trial_number * steps * batch``), so consecutive
            trials see fresh patches and any trial can be reproduced alone.
        fg_fraction: Share of patches centred on a foreground voxel (classes drawn fairly).
        augment: Apply :func:`augment`.
        shard: ``(rank, world, batch)``: this rank's items of a data-parallel job whose ranks
            each load ``batch`` patches per step; item ``i`` is then stream item
            ``start + (i // batch * world + rank) * batch + i % batch``, the ``rank``-th slot of
            the batch one process with ``world * batch`` would load.
    """

    def __init__(
        self,
        cases: Sequence[PreprocessedCase],
        patch_size: Sequence[int],
        *,
        length: int,
        seed: int = 0,
        start: int = 0,
        fg_fraction: float = 0.33,
        augment: bool = True,
        locations: list[dict[int, np.ndarray]] | None = None,
        shard: tuple[int, int, int] = (0, 1, 1),
    ):
        if not cases:
            raise ValueError("PatchDataset needs at least one case")
        self.cases = list(cases)
        self.patch = tuple(int(p) for p in patch_size)
        self.length, self.seed, self.start = int(length), int(seed), int(start)
        self.fg_fraction = fg_fraction
        self.augment = augment
        self.locations = locations if locations is not None else foreground_locations(self.cases, seed)
        self.shard = shard

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rank, world, batch = self.shard
        k = int(i) if world == 1 else (int(i) // batch * world + rank) * batch + int(i) % batch
        rng = np.random.default_rng([self.seed, self.start + k])
        ci = int(rng.integers(len(self.cases)))
        case, locs = self.cases[ci], self.locations[ci]
        if locs and rng.random() < self.fg_fraction:
            k = list(locs)[int(rng.integers(len(locs)))]
            center = locs[k][int(rng.integers(len(locs[k])))]
        else:
            center = [int(rng.integers(s)) for s in case.label.shape]
        image, label = extract_patch(case.image, case.label, center, self.patch)
        if self.augment:
            image, label = augment(image, label, rng)
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(label.astype(np.int64))


def make_loader(
    dataset: PatchDataset, batch_size: int, *, num_workers: int = 0, pin_memory: bool = False
) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` in order (the randomness lives in the items)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )
