"""ronas_optuna: RONASMIS-style neural architecture search for 3D medical segmentation in Optuna."""

from .network import RONASNet
from .space import Architecture, Decision, SearchSpace
from .supernet import CheckpointError, Supernet

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "CheckpointError",
    "Decision",
    "RONASNet",
    "SearchSpace",
    "Supernet",
]
