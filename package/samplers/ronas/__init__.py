"""RONASSampler on OptunaHub: the sampler of the ``ronas_optuna`` package, carried in ``_ronas/``
(copied from the library by ``package/sync.py``, checked against it by the library's tests), so
that it needs only ``requirements.txt``: optuna, torch, numpy and scipy."""

from ._ronas.controller import ControllerConfig
from ._ronas.sampler import RONASSampler


__all__ = ["ControllerConfig", "RONASSampler"]
