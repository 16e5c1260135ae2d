import numpy as np
import pytest
import torch

from ronas_optuna.losses import (
    deep_supervision_loss,
    dice_ce_loss,
    dice_per_class,
    distillation_loss,
    soft_dice_loss,
)


def _perfect_logits(target, k=3, scale=50.0):
    return scale * torch.nn.functional.one_hot(target, k).movedim(-1, 1).float()


def test_soft_dice_is_zero_for_a_perfect_prediction_and_one_for_the_opposite():
    target = torch.randint(0, 3, (2, 8, 8, 4))
    assert float(soft_dice_loss(_perfect_logits(target), target)) == pytest.approx(0.0, abs=1e-4)
    wrong = _perfect_logits((target + 1) % 3)
    assert float(soft_dice_loss(wrong, target)) == pytest.approx(1.0, abs=1e-3)


def test_dice_ce_adds_cross_entropy():
    target = torch.randint(0, 3, (1, 4, 4, 4))
    logits = torch.randn(1, 3, 4, 4, 4)
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert float(dice_ce_loss(logits, target)) == pytest.approx(float(soft_dice_loss(logits, target) + ce))


def test_deep_supervision_weights_halve_per_level_and_targets_are_resized():
    target = torch.randint(0, 3, (1, 8, 8, 8))
    full = torch.randn(1, 3, 8, 8, 8)
    half = torch.randn(1, 3, 4, 4, 4)
    small_t = torch.nn.functional.interpolate(target[:, None].float(), size=(4, 4, 4), mode="nearest")[
        :, 0
    ].long()
    expected = (dice_ce_loss(full, target) + 0.5 * dice_ce_loss(half, small_t)) / 1.5
    assert float(deep_supervision_loss([full, half], target)) == pytest.approx(float(expected), rel=1e-6)
    assert float(deep_supervision_loss(full, target)) == pytest.approx(float(dice_ce_loss(full, target)))


@pytest.mark.parametrize("shape", [(4, 4, 4), (5, 3, 2)])
def test_dice_per_class(shape):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, size=shape)  # class 2 absent
    assert dice_per_class(label, label, 3) == [1.0, 1.0]
    pred = np.zeros(shape, dtype=int)
    assert dice_per_class(pred, label, 3) == [0.0 if label.any() else 1.0, 1.0]
    half = label.copy()
    half[label == 1] = 0
    half.flat[np.flatnonzero(label == 1)[: int((label == 1).sum()) // 2]] = 1
    p, t = (half == 1).sum(), (label == 1).sum()
    assert dice_per_class(half, label, 3)[0] == pytest.approx(2 * p / (p + t))


def test_distillation_is_zero_for_the_teacher_itself_and_teaches_only_the_student():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 3, 4, 4, 2, generator=g, requires_grad=True)
    assert distillation_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(2, 3, 4, 4, 2, generator=g, requires_grad=True)
    loss = distillation_loss(student, teacher)
    loss.backward()
    assert loss.item() > 0 and student.grad is not None and teacher.grad is None
    p, q = torch.softmax(teacher, 1), torch.softmax(student, 1)  # KL(p || q), voxel mean
    assert loss.item() == pytest.approx((p * (p.log() - q.log())).sum(1).mean().item(), rel=1e-5)
