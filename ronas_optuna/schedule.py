"""Learning-rate schedules over a planned search, as pure functions of the global step.

A factor depends only on the step's position in the plan (warm-up, then ``trial.number *
steps_per_trial``, then the fine-tuning steps), so a resumed search continues the same curve.
"""

from __future__ import annotations

import math

#: Names accepted by ``SearchSettings.lr_schedule``.
SCHEDULES = ("constant", "cosine", "anneal")


def cosine_factor(step: int, total: int, *, floor: float = 0.02) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total``: 1 at step 0, ``floor`` at the
    last step and after it (a half cosine between)."""
    if total <= 1:
        return 1.0
    t = min(max(step, 0), total - 1) / (total - 1)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def lr_factor(schedule: str, step: int, total: int | None, *, finetune_steps: int = 0) -> float:
    """The factor of ``schedule`` at ``step`` of a plan of ``total`` steps whose last
    ``finetune_steps`` are the fine-tuning trial; 1 for ``constant`` or an unknown plan length.

    ``cosine`` decays over the whole plan; ``anneal`` keeps the rate during the search and decays
    it over the fine-tuning steps only (so the chosen architecture's weights settle).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"lr schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if schedule == "constant" or total is None:
        return 1.0
    if schedule == "cosine":
        return cosine_factor(step, total)
    first = total - finetune_steps
    return 1.0 if step < first else cosine_factor(step - first, finetune_steps)
