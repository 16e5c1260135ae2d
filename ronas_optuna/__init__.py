"""ronas_optuna: RONASMIS-style neural architecture search for 3D medical segmentation in Optuna."""

from .controller import Controller, ControllerConfig
from .final import FinalModel, derive_best
from .network import RONASNet
from .objective import NASObjective
from .sampler import RONASSampler
from .space import Architecture, Decision, SearchSpace
from .supernet import CheckpointError, Supernet

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "CheckpointError",
    "Controller",
    "ControllerConfig",
    "Decision",
    "FinalModel",
    "NASObjective",
    "RONASNet",
    "RONASSampler",
    "SearchSpace",
    "Supernet",
    "derive_best",
]
