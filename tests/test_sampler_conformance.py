"""Optuna's reusable sampler suites run against RONASSampler."""

import pytest
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
)

from ronas_optuna.sampler import RONASSampler


class TestRONASSampler(BasicSamplerTestCase, RelativeSamplerTestCase, MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: RONASSampler(seed=0)


class TestRONASSamplerWithFixedSpace(BasicSamplerTestCase, MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        from ronas_optuna import SearchSpace

        return lambda: RONASSampler(SearchSpace.default(depth=2), seed=0)
