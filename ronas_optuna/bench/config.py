"""What one ``ronas benchmark`` run compares, declared once: the fields are the command's options."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import SettingsError
from ..settings import SearchSettings, check_fields, option


@dataclass(kw_only=True)
class BenchmarkConfig:
    """Settings of one benchmark run (plain JSON); the search settings are a search's own.

    ``folds`` > 1 rotates the held-out test cases (k-fold over all cases; with as many folds as
    cases, leave-one-out): in each fold the search sees only the other cases (split into its own
    training and validation cases) and every method is scored on the fold's test cases.
    ``timeout`` gives every search the same wall time (trials stop at ``trials`` or ``timeout``).
    ``handmade`` adds MONAI's DynUNet with nnU-Net's defaults (:mod:`.handmade`), trained on the
    cases the search may use for the time of the RONAS search plus its export (CPU time of the
    process on the CPU, so that other work on the machine does not shrink either side; wall time on
    an accelerator).
    """

    data: str
    samplers: list[str] = option(
        ("ronas", "tpe", "random", "gp"), "Samplers to compare (comma-separated).", listed=True
    )
    seeds: int = option(3, "Seeds per sampler and fold.", minimum=1)
    trials: int = option(30, "Trials per search.", minimum=1)
    storage: str = option("sqlite:///ronas_benchmark.db", "Optuna storage of the benchmark's studies.")
    settings: SearchSettings = field(default_factory=SearchSettings)
    scratch_steps: int | None = option(
        None,
        "Steps of each search's final architecture trained alone, on the cases the final network "
        "trained on (default: as long as the search and its export took, on the same clock as "
        "DynUNet; 0: none).",
        minimum=0,
    )
    hpo_trials: int | None = option(None, "Trials of the no-sharing TPE reference (0: skip).", minimum=0)
    folds: int = option(
        1,
        "Rotate the held-out test cases over this many folds (the number of cases: leave-one-out).",
        minimum=1,
    )
    timeout: float | None = option(
        None, "Seconds per search (every sampler gets the same wall time).", positive=True
    )
    handmade: bool = option(
        False,
        "Add MONAI DynUNet (nnU-Net defaults) trained for the RONAS search's time: CPU time on the CPU, "
        "wall time on a GPU (needs [bench]).",
    )
    scratch_recipe: str = option(
        "search",
        "How the search's architecture trains alone: search (the search's optimizer at its constant "
        "rate), nnunet-sgd or adam (DynUNet's recipes).",
        choices=("search", "nnunet-sgd", "adam"),
    )
    handmade_recipe: str = option(
        "auto",
        "How DynUNet trains: nnunet-sgd (nnU-Net's SGD, Nesterov 0.99, lr 0.01, poly), adam (1e-3), or "
        "auto (per fold, the one with the higher validation Dice after the same budget on the "
        "training cases alone).",
        choices=("auto", "nnunet-sgd", "adam"),
    )
    controller: str = option(
        "default",
        "RONAS's controller: default, or a variant 'field=value[,field=value]' of ControllerConfig.",
    )
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...")
    output: str | None = option(None, "Folder for table and plot (default: beside the storage).")
    split_seed: int = 0
    #: Run only these folds (0-based; ``None``: all): one process per fold on one storage.
    only_folds: list[int] | None = None
    #: Run only these seeds (``None``: 0 to ``seeds - 1``): one process per seed on one storage.
    only_seeds: list[int] | None = None
    #: Explicit cases of a one-fold benchmark (``None``: a seeded split; training: the rest).
    train_ids: list[str] | None = None
    val_ids: list[str] | None = None
    test_ids: list[str] | None = None
    #: Cases the references' learning curves are scored on (``None``: no curves), never the test
    #: cases: DynUNet's and the same-architecture twin's Dice at every eighth of their budget.
    curve_ids: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON; the settings in their flat form (:meth:`SearchSettings.to_dict`)."""
        return {**asdict(self), "settings": self.settings.to_dict()}

    def __post_init__(self) -> None:
        check_fields(self)
        if self.controller != "default":
            from .variant import controller_variant

            try:
                controller_variant(self.controller)
            except ValueError as e:
                raise SettingsError(str(e).replace("--variant", "controller")) from None
        if self.only_folds is not None and not set(self.only_folds) <= set(range(self.folds)):
            raise SettingsError(f"only_folds {self.only_folds}: folds are 0 to {self.folds - 1}")
        if self.only_seeds is not None and not set(self.only_seeds) <= set(range(self.seeds)):
            raise SettingsError(f"only_seeds {self.only_seeds}: seeds are 0 to {self.seeds - 1}")
