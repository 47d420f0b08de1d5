"""NTK tests run in float64 on the small models of :mod:`tests.ntk.problems`."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import pytest

from tests.ntk.problems import PROBLEMS, Problem


@pytest.fixture(autouse=True)
def float64() -> Iterator[None]:
    with jax.enable_x64(True):
        yield


@pytest.fixture(params=sorted(PROBLEMS))
def problem(request: pytest.FixtureRequest) -> Problem:
    with jax.enable_x64(True):
        return PROBLEMS[request.param]()
