"""The samplers a search can use, by name: one registry for the CLI, the runner and the benchmarks."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import SettingsError

if TYPE_CHECKING:  # the samplers are imported when one is made, so the command line starts fast
    import optuna
    from optuna.trial import FrozenTrial

    from .controller import ControllerConfig
    from .space import SearchSpace


@dataclass(frozen=True)
class SamplerRequest:
    """What a sampler factory gets.

    Args:
        space: The search space (the RL controller's decisions).
        seed: Sampler seed.
        constrained: The objective stores a memory-budget constraint.
        controller_config: Controller hyper-parameters (``ronas`` only; ``None``: a supernet
            search's, :data:`~ronas_optuna.controller.SEARCH_CONTROLLER`).
    """

    space: SearchSpace
    seed: int
    constrained: bool = False
    controller_config: ControllerConfig | None = None


Factory = Callable[[SamplerRequest], "optuna.samplers.BaseSampler"]


def _constraints(req: SamplerRequest) -> Callable[[FrozenTrial], Sequence[float]] | None:
    import optuna

    from .attrs import constraints_func

    # Optuna 5 samplers read constraints set with trial.set_constraint; older ones need the function.
    if req.constrained and not hasattr(optuna.Trial, "set_constraint"):
        return constraints_func
    return None


def _ronas(r: SamplerRequest) -> optuna.samplers.BaseSampler:
    from .controller import SEARCH_CONTROLLER
    from .sampler import RONASSampler

    return RONASSampler(r.space, seed=r.seed, controller_config=r.controller_config or SEARCH_CONTROLLER)


def _tpe(r: SamplerRequest) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.TPESampler(seed=r.seed, constraints_func=_constraints(r), multivariate=True)


def _random(r: SamplerRequest) -> optuna.samplers.BaseSampler:
    from .sampler import TrialKeyedRandomSampler

    return TrialKeyedRandomSampler(r.seed)


def _gp(r: SamplerRequest) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.GPSampler(seed=r.seed, constraints_func=_constraints(r))


def _nsga2(r: SamplerRequest) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=r.seed, constraints_func=_constraints(r))


#: ``ronas`` and ``random`` draw each trial from a stream keyed by (seed, trial number): resumed
#: searches reproduce, parallel workers never repeat a draw. ``tpe`` and ``gp`` keep one stream per
#: process; :func:`worker_seed` gives each worker its own.
SAMPLERS: dict[str, Factory] = {
    "ronas": _ronas,
    "tpe": _tpe,
    "random": _random,
    "gp": _gp,
    "nsga2": _nsga2,
}
SAMPLER_NAMES = tuple(SAMPLERS)


KEYED_BY_TRIAL = frozenset({"ronas", "random"})


def worker_seed(name: str, seed: int, trials_so_far: int) -> int:
    """The seed a worker process gives sampler ``name``: ``seed`` itself for the samplers keyed by
    trial number; for the others, a seed from ``seed``, the study's trial count when the worker
    starts and its process id, so that two workers (or a worker and its resumption) never share a
    random stream."""
    if name in KEYED_BY_TRIAL:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, trials_so_far, os.getpid()]).generate_state(1)[0])


def sampler_names() -> tuple[str, ...]:
    return tuple(SAMPLERS)


def check_sampler_names(names: list[str]) -> list[str]:
    """``names`` unchanged; ``ValueError`` naming the first unknown one."""
    for name in names:
        if name not in SAMPLERS:
            raise SettingsError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    return names


def make_sampler(
    name: str,
    space: SearchSpace,
    seed: int,
    *,
    constrained: bool = False,
    controller_config: ControllerConfig | None = None,
) -> optuna.samplers.BaseSampler:
    """A sampler by name (see :data:`SAMPLERS`)."""
    check_sampler_names([name])
    return SAMPLERS[name](SamplerRequest(space, seed, constrained, controller_config))
