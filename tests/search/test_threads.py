"""Several candidates scored at once in one process (``threads:``): one thread compiles while another runs."""

from __future__ import annotations

import functools
from pathlib import Path

from optuna.trial import TrialState

import ntksearch.search.study as study_module
from ntksearch.search import ClearCompiledPrograms, ProxyObjective, attrs, load_experiment, run_search
from ntksearch.search.study import experiment_objective
from tests.search.helpers import TINY_SPACE, write_experiment

WIDTHS_SPACE = {**TINY_SPACE, "hyperparameters": {**TINY_SPACE["hyperparameters"],
                                                  "width": {"type": "categorical", "choices": [8, 12, 16]}}}


def test_threads_default_to_one_and_are_read_from_the_config(tmp_path: Path) -> None:
    assert load_experiment(write_experiment(tmp_path)).threads == 1
    assert load_experiment(write_experiment(tmp_path, threads=3)).threads == 3


def test_a_threaded_search_gives_each_candidate_its_sequential_values(tmp_path: Path, monkeypatch) -> None:
    made: list[ClearCompiledPrograms] = []

    class EveryProgramCleared(ClearCompiledPrograms):
        def __init__(self, objective):
            super().__init__(objective, max_programs=1)
            made.append(self)

    monkeypatch.setattr(study_module, "ClearCompiledPrograms", EveryProgramCleared)
    # every candidate on its own: with buckets, whether one is scored in its bucket's program depends on the
    # order the threads met the buckets in (equal values up to float32 summation order, not bit for bit)
    monkeypatch.setattr(study_module, "ProxyObjective", functools.partial(ProxyObjective, buckets=None))
    experiment = load_experiment(write_experiment(tmp_path, space_doc=WIDTHS_SPACE, trials=8, threads=2))
    study = run_search(experiment)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs[attrs.WORKER] for t in trials}) == 1  # one process
    # jax.clear_caches() ran while the other thread compiled or ran a program, and nothing broke
    assert len({t.params["width"] for t in trials}) > 1 and made[0].clears >= 1
    # each trial's proxies are, bit for bit, those of its candidate scored alone in this thread after the search
    objective = experiment_objective(experiment)
    for trial in trials:
        alone = objective.evaluate(experiment.space.point_from_params(trial.params), trial.number)
        assert trial.user_attrs[attrs.PROXIES] == {name: v.value for name, v in alone.proxies.items()}
