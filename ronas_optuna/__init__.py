"""ronas_optuna: RONASMIS-style neural architecture search for 3D medical segmentation in Optuna.

The names below are imported on first use (PEP 562), so ``import ronas_optuna.cli`` and
``ronas --help`` do not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._version import __version__

if TYPE_CHECKING:
    from .controller import Controller, ControllerConfig
    from .errors import CheckpointError
    from .evaluator import DiceResult, Evaluator
    from .final import derive_best, derive_front
    from .journal import SnapshotJournalStorage
    from .limits import Limits
    from .model import FinalModel
    from .network import RONASNet
    from .objective import NASObjective
    from .sampler import RONASSampler
    from .search import Search, create_search
    from .settings import SearchSettings
    from .space import Architecture, Decision, SearchSpace
    from .supernet import Supernet
    from .trainer import PathTrainer

#: Public name -> the module that defines it.
_EXPORTS = {
    "Architecture": "space",
    "CheckpointError": "errors",
    "Controller": "controller",
    "ControllerConfig": "controller",
    "Decision": "space",
    "DiceResult": "evaluator",
    "Evaluator": "evaluator",
    "FinalModel": "model",
    "Limits": "limits",
    "NASObjective": "objective",
    "PathTrainer": "trainer",
    "RONASNet": "network",
    "RONASSampler": "sampler",
    "Search": "search",
    "SearchSettings": "settings",
    "SearchSpace": "space",
    "SnapshotJournalStorage": "journal",
    "Supernet": "supernet",
    "create_search": "search",
    "derive_best": "final",
    "derive_front": "final",
}

__all__ = [
    "Architecture",
    "CheckpointError",
    "Controller",
    "ControllerConfig",
    "Decision",
    "DiceResult",
    "Evaluator",
    "FinalModel",
    "Limits",
    "NASObjective",
    "PathTrainer",
    "RONASNet",
    "RONASSampler",
    "Search",
    "SearchSettings",
    "SearchSpace",
    "SnapshotJournalStorage",
    "Supernet",
    "__version__",
    "create_search",
    "derive_best",
    "derive_front",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
