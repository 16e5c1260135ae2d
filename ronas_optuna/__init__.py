"""ronas_optuna: RONASMIS-style neural architecture search for 3D medical segmentation in Optuna."""

from ._version import __version__
from .controller import Controller, ControllerConfig
from .evaluator import DiceResult, Evaluator
from .final import FinalModel, derive_best
from .journal import SnapshotJournalStorage
from .network import RONASNet
from .objective import NASObjective
from .sampler import RONASSampler
from .settings import SearchSettings
from .space import Architecture, Decision, SearchSpace
from .supernet import CheckpointError, Supernet
from .trainer import PathTrainer

__all__ = [
    "Architecture",
    "CheckpointError",
    "Controller",
    "ControllerConfig",
    "Decision",
    "DiceResult",
    "Evaluator",
    "FinalModel",
    "NASObjective",
    "PathTrainer",
    "RONASNet",
    "RONASSampler",
    "SearchSettings",
    "SearchSpace",
    "SnapshotJournalStorage",
    "Supernet",
    "__version__",
    "derive_best",
]
