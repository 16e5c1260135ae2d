"""The names under which a search stores what it knows in Optuna: trial and study attributes.

Every module reads and writes these keys through the constants here, so a key is spelled once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

#: Trial user attrs: the architecture's code and why a trial failed.
ATTR_ARCH = "arch"
ATTR_FAIL = "fail_reason"
#: Seconds per phase of a trial: sampler, warmup, train, validate, hooks, anchor, checkpoint.
ATTR_TIME = "time_s"
#: User attrs of an enqueued trial that change how it trains: its steps and its phase.
ATTR_STEPS = "steps"
ATTR_PHASE = "phase"
#: The phase of the trial that ends a search by fine-tuning the chosen path inside the supernet;
#: studies of earlier versions wrote ``"exploit"``, read as the same phase.
PHASE_FINETUNE = "finetune"
PHASES_FINETUNE = (PHASE_FINETUNE, "exploit")
#: Trial user attr: ``True`` on an enqueued trial the policy must not learn from (the fine-tuning
#: trial: its reward has more training than any other trial's).
ATTR_NO_CREDIT = "ronas:no_credit"
#: Trial user attr of a warm start's first trial: where its architecture came from (``"handmade"``).
ATTR_START = "start"
#: Trial user attrs of anchoring (``anchor_every``): the path trained after the trial, or why its
#: steps failed (the path then went back to its weights before them).
ATTR_ANCHOR = "anchor"
ATTR_ANCHOR_FAIL = "anchor_fail_reason"
#: Trial user attr of a fine-tuning trial that went on from a stopped run's checkpoint: the steps
#: that run had taken (``finetune_checkpoint_steps``).
ATTR_RESUMED = "resumed_at_step"
#: Measured cost of a trial's architecture (:mod:`~ronas_optuna.measure`): a training step's peak
#: memory in GB and how it was measured, forward FLOPs per patch, inference latency of one patch.
ATTR_MEMORY = "memory_gb"
ATTR_MEMORY_METHOD = "memory_method"
ATTR_FLOPS = "flops"
ATTR_LATENCY = "latency_ms"
#: More of a trial's user attrs: its architecture's parameter count and patch (``"64x64x32"``),
#: ``True`` when it exceeded the memory budget (not trained), its last training loss, its Dice per
#: foreground class, its seconds, and the search process's CUDA peak in GB.
ATTR_PARAMS = "params"
ATTR_PATCH = "patch"
ATTR_OVER_BUDGET = "over_budget"
ATTR_TRAIN_LOSS = "train_loss"
ATTR_DICE_PER_CLASS = "dice_per_class"
ATTR_SECONDS = "seconds"
ATTR_PEAK_MEMORY = "peak_memory_gb"
#: ``--objectives``: the user attr each objective after the first (validation Dice) minimises.
COST_OBJECTIVES = {"memory": ATTR_MEMORY, "latency": ATTR_LATENCY}
#: A two-objective study's metric names (optuna-dashboard's axes).
METRIC_NAMES = {"dice": "dice", **COST_OBJECTIVES}
#: The key of constraint values (a list; <= 0 is feasible): Optuna's trial system attr of what a
#: sampler's ``constraints_func`` returned, and the user attr of the memory-budget excess in GB.
CONSTRAINTS_KEY = "constraints"

#: Study user attrs: the sampler's name, the plan, and a data-parallel search's size.
STUDY_SAMPLER = "sampler"
STUDY_PLAN = "ronas:plan"
STUDY_RANKS = "ronas:ranks"
STUDY_GLOBAL_BATCH = "ronas:global_batch_size"


def constraints_func(trial: FrozenTrial) -> Sequence[float]:
    """For ``TPESampler(constraints_func=...)``: the memory-budget excess (GB), <= 0 is feasible."""
    return trial.user_attrs.get(CONSTRAINTS_KEY, [0.0])


def directions(objectives: str) -> list[Literal["maximize", "minimize"]]:
    """The study's directions for ``SearchSettings.objectives`` (``"dice,memory"``: Dice is
    maximised, every cost after it minimised)."""
    costs: list[Literal["maximize", "minimize"]] = ["minimize"] * objectives.count(",")
    return ["maximize", *costs]


def within_budget(trial: FrozenTrial) -> bool:
    """A finished trial with values whose architecture respects the memory budget (if one was set)."""
    return trial.values is not None and max(constraints_func(trial)) <= 0
