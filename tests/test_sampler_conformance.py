"""Optuna's reusable sampler suites run against RONASSampler with a fixed search space (with the
space taken from the first trial, they run in ``package/samplers/ronas/tests``, on the class the
OptunaHub package loads)."""

import pytest
from optuna.testing.pytest_samplers import BasicSamplerTestCase, MultiObjectiveSamplerTestCase

from ronas_optuna.sampler import RONASSampler


class TestRONASSamplerWithFixedSpace(BasicSamplerTestCase, MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        from ronas_optuna import SearchSpace

        return lambda: RONASSampler(SearchSpace.default(depth=2), seed=0)
