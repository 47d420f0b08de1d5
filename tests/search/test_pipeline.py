"""Several candidates scored at once (``threads:``, ``processes:``): one compiles while another runs."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import ntksearch.search.study as study_module
from ntksearch.search import (
    ClearCompiledPrograms,
    Evaluation,
    ProxyObjective,
    WorkerProcessDied,
    attrs,
    load_experiment,
    optimize_ahead,
    run_search,
)
from ntksearch.search.study import experiment_objective, load_existing_study
from ntksearch.validation import ConfigError
from tests.search.helpers import TINY_SPACE, write_experiment

# widths 8, 12 and 16 are three programs and one shape bucket (rounded up to 16)
WIDTHS_SPACE = {**TINY_SPACE, "hyperparameters": {**TINY_SPACE["hyperparameters"],
                                                  "width": {"type": "categorical", "choices": [8, 12, 16]}}}


def _trials(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, t.params, t.values, t.user_attrs.get(attrs.PROXIES)) for t in study.trials]


def test_threads_and_processes_default_to_one_and_are_read_from_the_config(tmp_path: Path) -> None:
    default = load_experiment(write_experiment(tmp_path))
    assert (default.threads, default.processes) == (1, 1)
    assert load_experiment(write_experiment(tmp_path, threads=3)).threads == 3
    assert load_experiment(write_experiment(tmp_path, processes=2, threads=1)).processes == 2
    with pytest.raises(ConfigError, match=r"tiny\.yaml.*processes.*threads or in processes, not both"):
        load_experiment(write_experiment(tmp_path, processes=2, threads=2))


def test_a_threaded_search_gives_each_candidate_its_sequential_values(tmp_path: Path, monkeypatch) -> None:
    made: list[ClearCompiledPrograms] = []

    class EveryProgramCleared(ClearCompiledPrograms):
        def __init__(self, objective):
            super().__init__(objective, max_programs=1)
            made.append(self)

    monkeypatch.setattr(study_module, "ClearCompiledPrograms", EveryProgramCleared)
    # every candidate on its own: in a bucket a candidate's values equal its stand-alone ones only up to float32
    # summation order, not bit for bit
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


def test_a_threaded_run_is_reproducible_from_its_seed(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):  # TPE, shape buckets on (the defaults): bucket decisions must not depend on timing
        folder = tmp_path / name
        folder.mkdir()
        runs.append(run_search(load_experiment(write_experiment(folder, space_doc=WIDTHS_SPACE, trials=12,
                                                                threads=3, sampler={"name": "tpe",
                                                                                    "n_startup_trials": 4}))))
    assert _trials(runs[0]) == _trials(runs[1])
    assert all(t.state == TrialState.COMPLETE for t in runs[0].trials)


def test_threads_sample_the_candidates_of_one_thread_under_a_random_sampler(tmp_path: Path) -> None:
    studies = {}
    for threads in (1, 2):
        folder = tmp_path / str(threads)
        folder.mkdir()
        studies[threads] = run_search(load_experiment(write_experiment(
            folder, space_doc=WIDTHS_SPACE, trials=6, threads=threads, sampler="random")))
    one, two = (studies[k].trials for k in (1, 2))
    assert [t.params for t in one] == [t.params for t in two]
    for a, b in zip(one, two, strict=True):  # in its bucket or alone: equal up to float32 summation order
        assert b.value == pytest.approx(a.value, rel=1e-12)
        assert b.user_attrs[attrs.PROXIES] == pytest.approx(a.user_attrs[attrs.PROXIES], rel=1e-5)


@pytest.mark.parametrize(("parallel", "in_flight"), [({"threads": 3}, [1, 2]), ({"processes": 2}, [1])])
def test_ctrl_c_leaves_the_trials_in_flight_for_resume(tmp_path: Path, parallel: dict, in_flight: list[int]) -> None:
    experiment = load_experiment(write_experiment(tmp_path, space_doc=WIDTHS_SPACE, trials=6, **parallel))

    def ctrl_c_after_the_first(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(experiment, callbacks=[ctrl_c_after_the_first])
    study = load_existing_study(experiment.storage, experiment.study)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] + [TrialState.FAIL] * len(in_flight)  # trial 0 told, the rest in flight
    assert {k for k in study.user_attrs if k.startswith("interrupted:")} == {f"interrupted:{n}" for n in in_flight}
    study = run_search(experiment, resume=True)
    retried = {t.system_attrs.get("failed_trial") for t in study.trials} - {None}
    assert retried == set(in_flight) and len(study.trials) == 6  # the interrupted trials count among the finished
    assert all(t.state == TrialState.COMPLETE for t in study.trials[1 + len(in_flight):])


def test_a_bug_while_scoring_fails_its_trial_and_those_in_flight(tmp_path: Path, monkeypatch) -> None:
    experiment = load_experiment(write_experiment(tmp_path, trials=4))
    objective = experiment_objective(experiment)
    evaluate = objective.evaluate

    def broken_at_1(point, number, *, met=None):
        if number == 1:
            raise RuntimeError("a bug")
        return evaluate(point, number, met=met)

    monkeypatch.setattr(objective, "evaluate", broken_at_1)
    study = optuna.create_study(directions=objective.directions)
    with pytest.raises(RuntimeError, match="a bug"):
        optimize_ahead(study, objective, threads=2, n_trials=4)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    with pytest.raises(ValueError, match="threads"):
        optimize_ahead(study, objective, threads=0)
    with pytest.raises(ValueError, match="not both"):
        optimize_ahead(study, objective, threads=2, processes=2)


def test_threaded_workers_share_the_study_total(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(tmp_path, space_doc=WIDTHS_SPACE, trials=5,
                                                  storage=f"journal:{tmp_path / 'shared.log'}"))
    run_search(experiment, join=True, threads=2, n_trials=3)  # Optuna's n_jobs threads, as `worker --threads 2`
    study = run_search(experiment, join=True, threads=2)  # a second worker stops at the study's total
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 5 <= len(finished) <= 6 and all(t.state == TrialState.COMPLETE for t in finished)


def test_worker_processes_run_the_search_of_as_many_threads(tmp_path: Path) -> None:
    runs = {}
    for kind in ("threads", "processes"):  # TPE with shape buckets: the same trials, the same values
        folder = tmp_path / kind
        folder.mkdir()
        runs[kind] = run_search(load_experiment(write_experiment(
            folder, space_doc=WIDTHS_SPACE, trials=8, sampler={"name": "tpe", "n_startup_trials": 3}, **{kind: 2})))
    assert _trials(runs["threads"]) == _trials(runs["processes"])
    trials = runs["processes"].trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert {t.user_attrs[attrs.WORKER].split(":")[1] for t in trials} == {str(os.getpid())}  # stored here
    assert all(t.user_attrs[attrs.N_PARAMS] > 0 and t.user_attrs[attrs.SECONDS]["build"] > 0 for t in trials)


class BrokenAt1(ProxyObjective):
    """Candidate 1 raises (``bug``) or ends its worker process (``die``); pickled by reference into the workers."""

    how = "bug"

    def evaluate(self, point, number, *, met=None) -> Evaluation:
        if number == 1 and self.how == "die":
            os._exit(3)
        if number == 1:
            raise RuntimeError("a bug in a worker process")
        return super().evaluate(point, number, met=met)


@pytest.mark.parametrize("how", ["bug", "die"])
def test_a_failing_worker_process_fails_the_trials_in_flight(tmp_path: Path, how: str) -> None:
    experiment = load_experiment(write_experiment(tmp_path))
    rng = np.random.default_rng(0)
    objective = BrokenAt1(experiment.space, (rng.standard_normal((16, 64)), np.eye(10)[rng.integers(0, 10, 16)]))
    objective.how = how
    study = optuna.create_study(directions=objective.directions)
    with pytest.raises(RuntimeError if how == "bug" else WorkerProcessDied,
                       match="a bug in a worker process" if how == "bug" else r"trials \[(0, )?1(, 2)?\].*--resume"):
        optimize_ahead(study, objective, processes=2, n_trials=4)
    # nothing is left RUNNING; trial 0 completes unless the broken pool took it down too (timing)
    states = [t.state for t in study.trials]
    assert states[1:] == [TrialState.FAIL] * (len(states) - 1) and states[0] in (TrialState.COMPLETE, TrialState.FAIL)
    assert states[0] == TrialState.COMPLETE or how == "die"
    if how == "die":
        assert "worker process died" in study.trials[1].user_attrs[attrs.FAIL_REASON]
