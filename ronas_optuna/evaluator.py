"""Validation: full sliding-window inference of whole volumes and patient-wise Dice.

One :class:`Evaluator` scores any network on a fixed case list: a supernet path during the search
(``evaluator.evaluate(supernet.path(arch), patch)``), a derived or standalone network at export, in
the benchmark and for the dashboard's overlays. :meth:`Evaluator.evaluate_patches` is the cheap
proxy a trial's reward can use instead (``reward_patches``): Dice over a few fixed patches per case
(:func:`patch_centres`), no stitching.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .data.msd import PreprocessedCase
from .data.patches import extract_patch
from .device import resolve_device
from .inference import logits_of, sliding_window
from .losses import dice_per_class

Net = nn.Module | Callable[[torch.Tensor], torch.Tensor]


class DiceResult(NamedTuple):
    """Patient-wise Dice of one evaluation."""

    mean: float
    """Mean over cases and foreground classes."""
    per_class: list[float]
    """Mean over cases, one value per foreground class."""
    per_case: list[list[float]]
    """One list of foreground-class Dice per case."""

    @classmethod
    def from_per_case(cls, per_case: list[list[float]]) -> DiceResult:
        per_class = np.mean(np.asarray(per_case), axis=0).tolist()
        return cls(float(np.mean(per_case)), per_class, per_case)


def patch_centres(case: PreprocessedCase, n: int, seed: int = 0) -> np.ndarray:
    """``n`` fixed patch centres ``(n, 3)`` in ``case``: even ones on a voxel of each foreground
    class in turn (when the case has foreground), odd ones anywhere; seeded by ``seed`` and the
    case's id, so every trial and every process scores the same patches."""
    rng = np.random.default_rng([seed, zlib.crc32(case.case_id.encode())])
    classes = [int(k) for k in np.unique(case.label) if k != 0]
    out = []
    for i in range(n):
        if i % 2 == 0 and classes:
            voxels = np.argwhere(case.label == classes[(i // 2) % len(classes)])
            out.append(voxels[int(rng.integers(len(voxels)))])
        else:
            out.append(np.array([int(rng.integers(s)) for s in case.label.shape]))
    return np.stack(out).astype(np.int64) if out else np.zeros((0, 3), np.int64)


class Evaluator:
    """Scores networks on a fixed list of cases.

    Args:
        cases: Preprocessed cases with labels.
        num_classes: Output classes, background included.
        device: Where inference runs.
        amp: Mixed-precision inference on CUDA.
        overlap: Default sliding-window overlap.
    """

    def __init__(
        self,
        cases: Sequence[PreprocessedCase],
        num_classes: int,
        *,
        device: str | torch.device = "cpu",
        amp: bool = False,
        overlap: float = 0.25,
    ) -> None:
        self.cases = list(cases)
        self.num_classes = num_classes
        self.device = resolve_device(device)
        self.amp = amp and self.device.type == "cuda"
        self.overlap = overlap
        self._centres: dict[tuple[str, int, int], np.ndarray] = {}  # fixed: drawn once per case

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    def predict(
        self,
        net: Net,
        case: PreprocessedCase,
        patch: Sequence[int],
        *,
        overlap: float | None = None,
        mirror: bool = False,
    ) -> np.ndarray:
        """The label map ``(X, Y, Z)`` that ``net`` predicts for ``case`` (eval mode)."""
        if isinstance(net, nn.Module):
            net.eval()
        probs = sliding_window(
            net,
            case.image,
            patch,
            self.num_classes,
            overlap=self.overlap if overlap is None else overlap,
            mirror=mirror,
            device=self.device,
            amp=self.amp,
        )
        return probs.argmax(0).cpu().numpy()

    @torch.no_grad()
    def evaluate(
        self,
        net: Net,
        patch: Sequence[int],
        *,
        cases: Sequence[PreprocessedCase] | None = None,
        overlap: float | None = None,
        mirror: bool = False,
    ) -> DiceResult:
        """Dice of ``net`` on ``cases`` (default: the evaluator's own)."""
        per_case = []
        for c in self.cases if cases is None else cases:
            pred = self.predict(net, c, patch, overlap=overlap, mirror=mirror)
            per_case.append(dice_per_class(pred, c.label, self.num_classes))
        return DiceResult.from_per_case(per_case)

    @torch.no_grad()
    def evaluate_patches(
        self,
        net: Net,
        patch: Sequence[int],
        n: int,
        *,
        seed: int = 0,
        cases: Sequence[PreprocessedCase] | None = None,
        batch_size: int = 2,
    ) -> DiceResult:
        """Dice of ``net`` on ``n`` fixed patches of each case (:func:`patch_centres`), a case's
        patches pooled into one Dice per class: no sliding window, no stitching."""
        if isinstance(net, nn.Module):
            net.eval()
        per_case = []
        for c in self.cases if cases is None else cases:
            key = (c.case_id, n, seed)
            if key not in self._centres:  # not once per trial: the label scan is a volume's size
                self._centres[key] = patch_centres(c, n, seed)
            pairs = [extract_patch(c.image, c.label, centre, patch) for centre in self._centres[key]]
            images = torch.from_numpy(np.stack([image for image, _ in pairs])).float()
            preds = [
                logits_of(net, images[i : i + batch_size].to(self.device), amp=self.amp).argmax(1).cpu()
                for i in range(0, len(pairs), batch_size)
            ]
            label = np.stack([lab for _, lab in pairs])
            per_case.append(dice_per_class(torch.cat(preds).numpy(), label, self.num_classes))
        return DiceResult.from_per_case(per_case)
