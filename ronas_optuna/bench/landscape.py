"""A seeded synthetic architecture-reward landscape (no training), to test and compare samplers.

``value(arch) = 0.5 + scale * (per-decision effects + pairwise interactions) / sd + noise``: each
choice of each decision has an effect; ``n_pairs`` random pairs of decisions interact; Gaussian noise
stands for the variance of a short shared-weight training run. ``sd`` is the spread of the noiseless
score over random architectures, so ``scale`` sets how far apart good and bad architectures are.

:class:`CostLandscape` adds a cost to minimise (a stand-in for measured memory): each choice has a
multiplicative cost, correlated with its effect on the value, so better architectures tend to
cost more and the two objectives trade off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna

from ..space import SearchSpace


class Landscape:
    """Seeded reward landscape over a :class:`SearchSpace`.

    Args:
        space: The search space.
        seed: Seed of effects, interactions and noise.
        n_pairs: Number of interacting decision pairs.
        interaction: Scale of interactions relative to per-decision effects.
        noise: Standard deviation of the evaluation noise (in value units).
        scale: Value units per standard deviation of the noiseless score.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        n_pairs: int = 12,
        interaction: float = 0.5,
        noise: float = 0.01,
        scale: float = 0.05,
    ):
        self.space = space
        rng = np.random.default_rng(seed)
        self.names = list(space)
        self.effects = {n: rng.normal(0, 1, len(d.choices)) for n, d in space.items()}
        self.pairs = []
        for _ in range(n_pairs):
            a, b = rng.choice(len(self.names), 2, replace=False)
            na, nb = self.names[a], self.names[b]
            w = rng.normal(0, interaction, (len(space[na].choices), len(space[nb].choices)))
            self.pairs.append((na, nb, w))
        self.noise = noise
        self.scale = scale
        self._noise_seed = seed
        probe = np.random.default_rng(seed + 1)
        raw = [self.raw(space.sample(probe)) for _ in range(2000)]
        self.mean, self.sd = float(np.mean(raw)), float(np.std(raw))

    def raw(self, arch: Mapping[str, Any]) -> float:
        idx = {n: self.space[n].choices.index(arch[n]) for n in self.names}
        s = sum(float(self.effects[n][idx[n]]) for n in self.names)
        s += sum(float(w[idx[a], idx[b]]) for a, b, w in self.pairs)
        return s

    def true_value(self, arch: Mapping[str, Any]) -> float:
        """The noiseless value."""
        return 0.5 + self.scale * (self.raw(arch) - self.mean) / self.sd

    def __call__(self, trial: optuna.Trial) -> float:
        arch = self.space.suggest(trial)
        rng = np.random.default_rng([self._noise_seed, trial.number])
        return self.true_value(arch) + float(rng.normal(0, self.noise))


class CostLandscape:
    """Two objectives over a :class:`Landscape`: its value (maximise) and a cost (minimise).

    ``cost(arch) = exp(spread * sum of per-choice cost effects / sqrt(decisions))``, each choice's
    cost effect ``correlation * its value effect + sqrt(1 - correlation**2) * independent normal``
    (noiseless: a cost is measured, not estimated).

    Args:
        landscape: The value landscape.
        correlation: How much a choice's cost follows its value effect (0: unrelated).
        spread: Log-cost units per standard deviation of the summed cost effects.
        seed: Seed of the independent part of the cost effects.
    """

    def __init__(
        self, landscape: Landscape, *, correlation: float = 0.6, spread: float = 0.5, seed: int = 0
    ) -> None:
        self.landscape = landscape
        rng = np.random.default_rng([seed, 11])
        rest = float(np.sqrt(1 - correlation**2))
        self.cost_effects = {
            n: correlation * e + rest * rng.normal(0, 1, len(e)) for n, e in landscape.effects.items()
        }
        self.spread = spread / np.sqrt(len(self.cost_effects))

    def cost(self, arch: Mapping[str, Any]) -> float:
        space = self.landscape.space
        total = sum(float(self.cost_effects[n][space[n].choices.index(arch[n])]) for n in self.cost_effects)
        return float(np.exp(self.spread * total))

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        value = self.landscape(trial)  # suggests the architecture
        return value, self.cost(trial.params)
