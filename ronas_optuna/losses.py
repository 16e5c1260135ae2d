"""Dice + cross-entropy with deep supervision, distillation, and the patient-wise Dice metric."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: Sums a tensor over the ranks of a data-parallel job (differentiably); ``None``: one process.
Reduce = Callable[[torch.Tensor], torch.Tensor]


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5, *, reduce: Reduce | None = None
) -> torch.Tensor:
    """1 - mean soft Dice over foreground classes, batch-wise (nnU-Net's "batch dice"); with
    ``reduce``, over the batch of all ranks."""
    k = logits.shape[1]
    probs = torch.softmax(logits.float(), 1)
    onehot = F.one_hot(target, k).movedim(-1, 1).float()
    dims = (0, 2, 3, 4)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    if reduce is not None:
        inter, denom = reduce(inter), reduce(denom)
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice[1:].mean()


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, *, reduce: Reduce | None = None) -> torch.Tensor:
    return soft_dice_loss(logits, target, reduce=reduce) + F.cross_entropy(logits.float(), target)


def deep_supervision_loss(
    outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor, *, reduce: Reduce | None = None
) -> torch.Tensor:
    """Dice + CE summed over resolutions with weights 1, 1/2, 1/4, ... (normalised)."""
    if isinstance(outputs, torch.Tensor):
        return dice_ce_loss(outputs, target, reduce=reduce)
    weights = [0.5**i for i in range(len(outputs))]
    total = torch.zeros((), device=target.device)
    for w, out in zip(weights, outputs):
        t = target
        if out.shape[2:] != target.shape[1:]:
            t = F.interpolate(target[:, None].float(), size=out.shape[2:], mode="nearest")[:, 0].long()
        total = total + w * dice_ce_loss(out, t, reduce=reduce)
    return total / sum(weights)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL divergence from the teacher's class probabilities to the student's, summed over classes
    and averaged over voxels (in-place distillation: both are paths of one supernet)."""
    log_s = F.log_softmax(student.float(), 1)
    log_t = F.log_softmax(teacher.detach().float(), 1)
    return (log_t.exp() * (log_t - log_s)).sum(1).mean()


def dice_per_class(pred: np.ndarray, label: np.ndarray, num_classes: int) -> list[float]:
    """Dice of each foreground class of one case; a class absent from both scores 1."""
    out = []
    for k in range(1, num_classes):
        p, t = pred == k, label == k
        s = int(p.sum()) + int(t.sum())
        out.append(1.0 if s == 0 else 2.0 * int((p & t).sum()) / s)
    return out
