"""RONASSampler on OptunaHub: the class the ``ronas_optuna`` package ships, re-exported (no second
copy to drift). ``pip install -r requirements.txt`` brings it."""

from ronas_optuna.controller import ControllerConfig
from ronas_optuna.sampler import RONASSampler

__all__ = ["ControllerConfig", "RONASSampler"]
