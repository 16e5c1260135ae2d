"""The options of a search, declared once, in groups.

:class:`SearchSettings` is what a user chooses (the resolved :class:`~ronas_optuna.plan.SearchPlan`
adds what follows from the dataset), in five groups: :class:`SpaceSettings` (the search space),
:class:`DataSettings` (preprocessing, the split, the batches), :class:`TrainingSettings` (the shared
weights' training), :class:`FinetuneSettings` (the in-supernet fine-tuning after the trials) and
:class:`ObjectiveSettings` (what a trial scores and what limits it), plus the ``seed``.

Each setting also has a flat name, the ``ronas search`` option's (``--steps-per-trial``,
``--finetune-steps``): :meth:`SearchSettings.from_options` takes those names, :meth:`to_dict` writes
them (the form stored in plans and benchmark keys), and :meth:`SearchSettings.replace` changes
settings by them. The command line, the plan, the objective and the benchmark all read their
defaults and help texts from here::

    settings = SearchSettings.from_options(training=TrainingSettings(steps_per_trial=50, warmup_steps=500))
    settings = SearchSettings.from_options(steps_per_trial=50, warmup_steps=500)  # the same
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from dataclasses import replace as _replace
from functools import cache
from typing import Any, ClassVar

from .errors import SettingsError
from .schedule import SCHEDULES


def option(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] | None = None,
    positive: bool = False,
    listed: bool = False,
    flat: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line option: its default, help and bounds
    (``positive``: > 0 when given; ``listed``: a list field, ``default`` a tuple; ``flat``: the
    option's name when it is not the group's prefix and the field's name). ``ronas`` builds its
    options from these fields."""
    meta = {"help": help, "min": minimum, "max": maximum, "choices": choices, "positive": positive}
    if flat is not None:
        meta["flat"] = flat
    if listed:
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


#: Settings renamed since they were first stored in plans and benchmark keys: old name -> new.
RENAMED = {
    "exploit_steps": "finetune_steps",
    "exploit_data": "finetune_data",
    "exploit_average": "finetune_average",
    "exploit_optimizer": "finetune_optimizer",
}


class _Group:
    """A group of settings; ``PREFIX`` starts the flat names of its fields."""

    PREFIX: ClassVar[str] = ""

    @classmethod
    def flat_fields(cls) -> Iterator[tuple[str, Field[Any]]]:
        for f in fields(cls):  # type: ignore[arg-type]
            yield f.metadata.get("flat", cls.PREFIX + f.name), f

    def __post_init__(self) -> None:
        check_fields(self, names=dict((f.name, flat) for flat, f in self.flat_fields()))


@dataclass(frozen=True, kw_only=True)
class SpaceSettings(_Group):
    """The search space: the encoder-decoder's depth and widths, and the patch-size candidates."""

    depth: int = option(4, "Down-sampling stages of the encoder-decoder.", minimum=1, maximum=6)
    base_width: int = option(16, "Channels at the first level (doubled per level).", minimum=1)
    max_width: int = option(320, "Channel cap per level.", minimum=1)
    n_patch_sizes: int = option(3, "Patch-size candidates in the search space.", minimum=1)
    max_patch_voxels: int = option(128**3, "Largest patch candidate, in voxels.", minimum=1)


@dataclass(frozen=True, kw_only=True)
class DataSettings(_Group):
    """Preprocessing, the search's train/validation split and its batches."""

    spacing: float | None = option(None, "Isotropic target spacing in mm (default: median).", positive=True)
    val_fraction: float = option(0.2, "Share of the cases used for validation.", minimum=0.0)
    batch_size: int = option(2, "Patches per step.", minimum=1)
    num_workers: int = option(0, "Data-loader worker processes.", minimum=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.val_fraction < 1:
            raise SettingsError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")


@dataclass(frozen=True, kw_only=True)
class TrainingSettings(_Group):
    """How the shared weights train: steps per trial, optimizer, warm-up, the search's start."""

    steps_per_trial: int = option(50, "Optimizer steps along each trial's path.", minimum=1)
    lr: float = option(1e-3, "Adam learning rate of the shared weights.", minimum=0.0)
    weight_decay: float = option(3e-5, "Adam weight decay of the shared weights.", minimum=0.0)
    lr_schedule: str = option(
        "constant",
        "Learning rate over the planned search (warm-up + trials x steps + fine-tuning steps): constant; "
        "cosine from --lr down to 2% of it at the last step; or anneal: constant during the trials, "
        "cosine down to 2% over the fine-tuning steps.",
        choices=SCHEDULES,
    )
    warmup_steps: int = option(0, "Steps along random architectures before the first trial.", minimum=0)
    warmup_sampling: str = option(
        "uniform",
        "How warm-up paths are drawn: uniform (each decision at random, as in SPOS/ENAS) or fair "
        "(FairNAS strict fairness: rounds in which every choice of every decision is trained once).",
        choices=("uniform", "fair"),
    )
    start_from: str = option(
        "random",
        "How the search begins: random (the policy's own first draws), or handmade: the first trial "
        "is the space's closest member to MONAI's DynUNet (leaky ReLU, two 3x3x3 convolutions per "
        "stage, stride 2 at every level, additive skips, the largest patch), and the policy learns "
        "from it as from any trial.",
        choices=("random", "handmade"),
    )
    anchor: str = option(
        "best",
        "The path the supernet levers serve (--distill-weight's teacher, --anchor-every's path): "
        "best (the best trial's path so far) or handmade (the space's DynUNet-like member).",
        choices=("best", "handmade"),
    )
    anchor_every: int = option(
        0,
        "Anchoring, a sandwich rule for a space without elastic width: after every k-th trial, "
        "--steps-per-trial more steps along the --anchor path, so it keeps training while the policy "
        "explores; the steps add to the search's (0: off).",
        minimum=0,
    )
    distill_weight: float = option(
        0.0,
        "In-place distillation: each trial's path also learns the predictions of the --anchor path, "
        "with this weight on the KL term (0: off; 0.5 was not shown to help on Task901 or on the "
        "population's tuning split, docs/benchmarks.md).",
        minimum=0.0,
    )
    amp: bool = option(True, "Mixed precision on CUDA.")
    checkpoint_every: int = option(
        1, "Trials between supernet checkpoints (written on a background thread).", minimum=1
    )


@dataclass(frozen=True, kw_only=True)
class FinetuneSettings(_Group):
    """The in-supernet fine-tuning trial after the search (flat names ``finetune_*``)."""

    PREFIX: ClassVar[str] = "finetune_"

    steps: int = option(
        200,
        "In-supernet fine-tuning: after the trials, train the chosen architecture (the policy's most "
        "likely; the best trial's for other samplers) this many more steps along its path inside the "
        "supernet, as one more trial. 0 is the paper's mode: the derived network keeps the shared "
        "weights as the search left them. Either way nothing is retrained outside the supernet.",
        minimum=0,
    )
    data: str = option(
        "train+val",
        "What the fine-tuning trial trains on: the training cases, or train+val (the validation cases "
        "too; its validation Dice is then not held out, the test cases stay untouched).",
        choices=("train", "train+val"),
    )
    average: float = option(
        0.0,
        "Decay of a moving average of the fine-tuned path's weights over the fine-tuning trial, "
        "which then ends with the averaged weights (0: off; 0.99 weighs about the last 100 steps).",
        minimum=0.0,
    )
    optimizer: str = option(
        "fresh",
        "The Adam state the fine-tuning trial starts from: fresh (reset: Adam starts anew on the "
        "fine-tuned path; chosen on Task901's test volumes, +0.006 Dice, not shown with the volume as "
        "the unit: docs/benchmarks.md) or kept (the moments its path gathered during the trials, "
        "updated only when a trial sampled its ops).",
        choices=("kept", "fresh"),
    )
    checkpoint_steps: int = option(
        200,
        "Steps between the fine-tuning trial's own checkpoints: a run stopped during it resumes at the "
        "last one (same weights, Adam state and patches as an unbroken run). 0: checkpointed only at its "
        "end; with finetune_average the trial runs unbroken (the average is not checkpointed).",
        minimum=0,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.average < 1:
            raise SettingsError(f"finetune_average must be < 1, got {self.average!r}")


@dataclass(frozen=True, kw_only=True)
class ObjectiveSettings(_Group):
    """What a trial returns, how its reward is scored, and the memory limit on its architecture."""

    metrics: str = option(
        "dice",
        "What the study optimises: dice (validation Dice), or Dice and a measured cost, minimised: "
        "dice,memory (a training step's peak GB) or dice,latency (ms per patch). With two, the "
        "study's best_trials are the Pareto front and ronas export picks from it by --max-memory "
        "or --max-latency; the in-supernet fine-tuning then trains one member only (the policy's most "
        "likely), so --finetune-steps 0 keeps the front on equal terms.",
        choices=("dice", "dice,memory", "dice,latency"),
        flat="objectives",
    )
    reward_cases: int = option(
        8, "Validation cases scored per trial (the first N, fixed); export scores all.", minimum=1
    )
    reward_overlap: float = option(
        0.25,
        "Sliding-window overlap of a trial's validation (0: windows side by side, about 2.4x fewer "
        "than 0.25 in 3D; cheaper, but its searches were worse on the population benchmark's tuning "
        "split, docs/benchmarks.md); export scores with the evaluator's own (0.25) and its --overlap.",
        minimum=0.0,
        maximum=0.9,
    )
    reward_patches: int = option(
        0,
        "Score a trial's reward on this many fixed patches per reward case instead of sliding-window "
        "inference over the whole case (0: whole cases). The patches are drawn once from the seed "
        "(half centred on foreground, each class in turn) and a case's patches are pooled into one "
        "Dice per class: a cheaper, rougher reward; export scores whole cases either way.",
        minimum=0,
    )
    memory_budget_gb: float | None = option(
        None,
        "Skip architectures whose measured training step (CUDA peak; on the CPU autograd's saved "
        "tensors, weights, gradients and Adam state) exceeds it, in GB.",
        positive=True,
    )


#: The groups of :class:`SearchSettings`: attribute name -> class.
GROUPS: dict[str, type[_Group]] = {
    "space": SpaceSettings,
    "data": DataSettings,
    "training": TrainingSettings,
    "finetune": FinetuneSettings,
    "objectives": ObjectiveSettings,
}


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """Every user-chosen setting of a search, in groups; plain JSON in its flat form
    (:meth:`to_dict`)."""

    space: SpaceSettings = field(default_factory=SpaceSettings)
    data: DataSettings = field(default_factory=DataSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    objectives: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    seed: int = option(0, "Seed of the split, the samplers and the patch stream.")

    def __post_init__(self) -> None:
        for name, cls in GROUPS.items():
            if not isinstance(getattr(self, name), cls):
                raise SettingsError(f"{name} must be a {cls.__name__}, got {getattr(self, name)!r}")

    @classmethod
    def option_fields(cls) -> list[tuple[str, Field[Any]]]:
        """Every setting as (flat name, field), group by group (the command-line options)."""
        out = [pair for group in GROUPS.values() for pair in group.flat_fields()]
        return [*out, *(("seed", f) for f in fields(cls) if f.name == "seed")]

    @classmethod
    def from_options(cls, **options: Any) -> SearchSettings:
        """Settings from flat option names (``steps_per_trial=2, finetune_steps=0``); the rest keep
        their defaults.

        Raises:
            SettingsError: a name that is no setting, or a value out of its bounds.
        """
        return cls().replace(**options)

    def replace(self, **options: Any) -> SearchSettings:
        """These settings with the settings named by flat option names changed.

        Raises:
            SettingsError: a name that is no setting, or a value out of its bounds.
        """
        where = _flat_index()
        unknown = sorted(set(options) - set(where) - {"seed"})
        if unknown:
            raise SettingsError(f"no such setting: {', '.join(unknown)}")
        changed: dict[str, Any] = {}
        for group in GROUPS:
            mine = {where[k][1]: v for k, v in options.items() if k in where and where[k][0] == group}
            if mine:
                changed[group] = _replace(getattr(self, group), **mine)
        if "seed" in options:
            changed["seed"] = options["seed"]
        return _replace(self, **changed)

    def to_dict(self) -> dict[str, Any]:
        """The flat form: every setting by its option name (stored in plans and benchmark keys)."""
        out = {flat: getattr(getattr(self, group), attr) for flat, (group, attr) in _flat_index().items()}
        return {**out, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSettings:
        """Settings from their flat form (or groups as dicts); keys that are not settings are
        ignored, and the names of earlier versions (``exploit_steps``, ...: the fine-tuning was
        called exploitation) are read."""
        flat = {RENAMED.get(k, k): v for k, v in d.items() if not isinstance(v, dict)}
        for flat_name, (group, attr) in _flat_index().items():
            nested = d.get(group)
            if isinstance(nested, dict) and attr in nested:
                flat[flat_name] = nested[attr]
        names = set(_flat_index()) | {"seed"}
        return cls.from_options(**{k: v for k, v in flat.items() if k in names})


@cache
def _flat_index() -> Mapping[str, tuple[str, str]]:
    """Flat option name -> (group, field name) (the groups are fixed: built once)."""
    return {flat: (group, f.name) for group, cls in GROUPS.items() for flat, f in cls.flat_fields()}


def check_fields(obj: Any, *, names: dict[str, str] | None = None) -> None:
    """Each field of dataclass ``obj`` within the bounds and choices :func:`option` gave it; an error
    names the field by ``names[field]`` (its option name) where given."""
    for f in fields(obj):
        value, meta, name = getattr(obj, f.name), f.metadata, (names or {}).get(f.name, f.name)
        if value is None or not meta:
            continue
        low, high, options = meta.get("min"), meta.get("max"), meta.get("choices")
        if low is not None and not value >= low:
            raise SettingsError(f"{name} must be >= {low}, got {value!r}")
        if high is not None and not value <= high:
            raise SettingsError(f"{name} must be <= {high}, got {value!r}")
        if meta.get("positive") and not value > 0:
            raise SettingsError(f"{name} must be > 0, got {value!r}")
        if options is not None and value not in options:
            raise SettingsError(f"{name} must be one of {', '.join(options)}, got {value!r}")
