"""Compiled-program eviction belongs to the study's runner: a callback, never the objective itself."""

from __future__ import annotations

from pathlib import Path

import jax
import pytest

import ntksearch.search.study as study_module
from ntksearch.data import load_dataset
from ntksearch.models.buckets import DEFAULT_GRID
from ntksearch.search import ClearCompiledPrograms, ProxyObjective, load_experiment, run_search
from ntksearch.spaces import load_space
from tests.search.helpers import write_experiment, write_space

BATCH = 16
WIDTHS = [8, 12, 8, 12, 16, 8]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def widths_space(tmp_path: Path):
    return load_space(write_space(tmp_path, {"family": "mlp", "hyperparameters": {
        "depth": 1, "width": {"type": "categorical", "choices": [8, 12, 16]}}}))


@pytest.fixture
def clears(monkeypatch) -> list[int]:
    cleared: list[int] = []
    monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(1))
    return cleared


def _run(objective: ProxyObjective, space, callback=None) -> None:
    for number, width in enumerate(WIDTHS):
        objective.evaluate(space.point_from_params({"width": width}), number)
        if callback is not None:
            callback(None, None)


def test_caches_are_cleared_beyond_the_program_cap(widths_space, digits, clears) -> None:
    objective = ProxyObjective(widths_space, digits, proxies=[], batch_size=BATCH, buckets=None)
    callback = ClearCompiledPrograms(objective, max_programs=2)
    _run(objective, widths_space, callback)
    # 8 and 12 fit under the cap (repeats are free); 16 is a third program: drop all, then 8 again fits
    assert len(clears) == callback.clears == 1 and callback.programs == set(objective.last_programs)
    # in per-layer buckets the same candidates need two programs: width 8 on its own, then the width-16 bucket's
    bucketed = ProxyObjective(widths_space, digits, proxies=[], batch_size=BATCH, buckets=DEFAULT_GRID)
    _run(bucketed, widths_space, ClearCompiledPrograms(bucketed, max_programs=2))
    assert len(clears) == 1 and bucketed.bucketed_candidates == 5
    # this search's default grid (few buckets: the default score's kernel is factored) needs one program
    uniform = ProxyObjective(widths_space, digits, proxies=[], batch_size=BATCH)
    assert uniform.buckets.uniform
    _run(uniform, widths_space, ClearCompiledPrograms(uniform, max_programs=2))
    assert len(clears) == 1 and uniform.bucketed_candidates == len(WIDTHS)


def test_the_objective_alone_never_clears_the_process_caches(widths_space, digits, clears) -> None:
    objective = ProxyObjective(widths_space, digits, proxies=[], batch_size=BATCH, buckets=None)
    _run(objective, widths_space)
    assert clears == [] and len(objective.last_programs) == 1


def test_the_old_cap_argument_warns_that_it_moved(widths_space, digits) -> None:
    with pytest.warns(DeprecationWarning, match="ClearCompiledPrograms"):
        ProxyObjective(widths_space, digits, proxies=[], batch_size=BATCH, max_cached_architectures=2)
    with pytest.raises(ValueError, match="max_programs"):
        ClearCompiledPrograms(None, max_programs=0)


def test_run_search_passes_the_callback(tmp_path: Path, monkeypatch) -> None:
    made: list[ClearCompiledPrograms] = []

    class Recorded(ClearCompiledPrograms):
        def __init__(self, objective: ProxyObjective):
            super().__init__(objective)
            made.append(self)

    monkeypatch.setattr(study_module, "ClearCompiledPrograms", Recorded)
    run_search(load_experiment(write_experiment(tmp_path, trials=2)))
    assert len(made) == 1 and made[0].programs and made[0].programs >= set(made[0].objective.last_programs)
