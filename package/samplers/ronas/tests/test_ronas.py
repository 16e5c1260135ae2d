"""Optuna's reusable sampler suites against the class this package loads (the registry's layout:
``pytest package/samplers/ronas/tests`` from the registry's root)."""

from __future__ import annotations

from pathlib import Path

import optunahub
import pytest
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
)

REGISTRY_ROOT = Path(__file__).resolve().parents[3]  # .../package
RONASSampler = optunahub.load_local_module("samplers/ronas", registry_root=str(REGISTRY_ROOT)).RONASSampler


class TestRONASSampler(BasicSamplerTestCase, RelativeSamplerTestCase, MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: RONASSampler(seed=0)
