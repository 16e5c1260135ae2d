"""Optuna's reusable sampler suites against the class this package loads (the registry's layout:
``pytest package/samplers/ronas/tests`` from the registry's root)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from optuna.samplers import BaseSampler
from optuna.testing.pytest_samplers import BasicSamplerTestCase
from optuna.testing.pytest_samplers import MultiObjectiveSamplerTestCase
from optuna.testing.pytest_samplers import RelativeSamplerTestCase
import optunahub
import pytest


REGISTRY_ROOT = Path(__file__).resolve().parents[3]  # .../package
RONASSampler = optunahub.load_local_module(
    "samplers/ronas", registry_root=str(REGISTRY_ROOT)
).RONASSampler


class TestRONASSampler(
    BasicSamplerTestCase, RelativeSamplerTestCase, MultiObjectiveSamplerTestCase
):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: RONASSampler(seed=0)
