"""ronas_optuna: RONASMIS-style neural architecture search for 3D medical segmentation in Optuna.

The public API is what this package exports (``__all__``): one object for a whole search
(:func:`create_search`), the sampler for a user's own ``study.optimize`` (:class:`RONASSampler`,
:class:`ControllerConfig`), the pieces of a search (:class:`SearchSpace`, :class:`Architecture`,
:class:`Supernet`, :class:`NASObjective`, :class:`MSDDataset`, :class:`SearchSettings` and its
groups), the final
network (:class:`FinalModel`, :class:`RONASNet`, :func:`derive_best`, :func:`derive_front`,
:func:`finetune`), storage (:class:`SnapshotJournalStorage`) and the errors a script may catch
(:class:`UserError` and its kinds). Every other module and name is internal: it may change without
notice. ``ronas_optuna.bench`` is the library of ``ronas benchmark``.

The names below are imported on first use (PEP 562), so ``import ronas_optuna.cli`` and
``ronas --help`` do not pay for torch.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_exports
from ._version import __version__

if TYPE_CHECKING:
    from .controller import SEARCH_CONTROLLER, ControllerConfig
    from .data import MSDDataset
    from .errors import (
        CheckpointError,
        DataError,
        RunFolderBusy,
        SettingsError,
        StorageError,
        UserError,
        WriteError,
    )
    from .final import derive_best, derive_front, finetune
    from .journal import SnapshotJournalStorage
    from .limits import Limits
    from .model import FinalModel
    from .network import RONASNet
    from .objective import NASObjective
    from .sampler import RONASSampler
    from .search import Search, create_search
    from .settings import (
        DataSettings,
        FinetuneSettings,
        ObjectiveSettings,
        SearchSettings,
        SpaceSettings,
        TrainingSettings,
    )
    from .space import Architecture, SearchSpace
    from .supernet import Supernet

#: Public name -> the module that defines it.
_EXPORTS = {
    "Architecture": "space",
    "CheckpointError": "errors",
    "ControllerConfig": "controller",
    "DataError": "errors",
    "FinalModel": "model",
    "Limits": "limits",
    "MSDDataset": "data",
    "NASObjective": "objective",
    "RONASNet": "network",
    "RONASSampler": "sampler",
    "SEARCH_CONTROLLER": "controller",
    "RunFolderBusy": "errors",
    "Search": "search",
    "SearchSettings": "settings",
    "SearchSpace": "space",
    "SettingsError": "errors",
    "SnapshotJournalStorage": "journal",
    "StorageError": "errors",
    "Supernet": "supernet",
    "DataSettings": "settings",
    "FinetuneSettings": "settings",
    "ObjectiveSettings": "settings",
    "SpaceSettings": "settings",
    "TrainingSettings": "settings",
    "UserError": "errors",
    "WriteError": "errors",
    "create_search": "search",
    "derive_best": "final",
    "derive_front": "final",
    "finetune": "final",
}

#: Internal names this package exported before 0.2.0 -> their module (a FutureWarning says where).
_MOVED = {
    "Controller": "controller",
    "Decision": "space",
    "DiceResult": "evaluator",
    "Evaluator": "evaluator",
    "PathTrainer": "trainer",
}

__all__ = [
    "SEARCH_CONTROLLER",
    "Architecture",
    "CheckpointError",
    "ControllerConfig",
    "DataError",
    "DataSettings",
    "FinalModel",
    "FinetuneSettings",
    "Limits",
    "MSDDataset",
    "NASObjective",
    "ObjectiveSettings",
    "RONASNet",
    "RONASSampler",
    "RunFolderBusy",
    "Search",
    "SearchSettings",
    "SearchSpace",
    "SettingsError",
    "SnapshotJournalStorage",
    "SpaceSettings",
    "StorageError",
    "Supernet",
    "TrainingSettings",
    "UserError",
    "WriteError",
    "__version__",
    "create_search",
    "derive_best",
    "derive_front",
    "finetune",
]

_public_getattr, __dir__ = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        module = f"{__name__}.{_MOVED[name]}"
        warnings.warn(
            f"ronas_optuna.{name} is internal and no longer exported; import it from {module}",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), name)
    return _public_getattr(name)
