"""Validation: full sliding-window inference of whole volumes and patient-wise Dice.

One :class:`Evaluator` scores any network on a fixed case list: a supernet path during the search
(``evaluator.evaluate(supernet.path(arch), patch)``), a derived or standalone network at export, in
the benchmark and for the dashboard's overlays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .data.msd import PreprocessedCase
from .device import resolve_device
from .inference import sliding_window
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
