"""Fixtures for the report tests (factories live in :mod:`tests.report.factories`)."""

import pytest

from spectra.results import Analysis

from .factories import make_analysis


@pytest.fixture
def analysis() -> Analysis:
    return make_analysis()


@pytest.fixture
def evil_analysis() -> Analysis:
    return make_analysis(evil=True)
