"""Study set-up: storages, samplers, the existing-study guard, resume of interrupted trials, trial budgets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ntksearch.proxies.linearised import schedule_steps
from ntksearch.report import leaderboard_frame
from ntksearch.search import (
    SAMPLERS,
    ProxyObjective,
    StorageError,
    StorageSpec,
    StudyError,
    attrs,
    load_experiment,
    make_sampler,
    make_storage,
    open_study,
    run_search,
)
from ntksearch.search.study import (
    FINISHED,
    RUN_FILE,
    experiment_objective,
    load_existing_study,
    record_interruption,
    settings_identity,
    study_identity,
)
from tests.search.helpers import write_experiment


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def test_run_search_stores_metadata_and_run_file(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(tmp_path, trials=2))
    study = run_search(experiment)
    assert len(finished(study)) == 2 and study.metric_names == ["default_score"]
    assert study.user_attrs["ntksearch"]["objective"] == ["default_score"]
    run = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    assert run == {"config": str(experiment.path), "storage": f"sqlite:///{tmp_path / 'run' / 'study.db'}",
                   "study": "tiny"}
    assert len(load_existing_study(StorageSpec(run["storage"]), "tiny").trials) == 2


def test_existing_study_needs_resume(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(tmp_path, trials=1))
    run_search(experiment)
    with pytest.raises(StudyError, match="already has 1 trials: pass --resume"):
        run_search(experiment)
    with pytest.raises(StudyError, match=r"created from a different experiment \(objective, objective_spec"):
        open_study(dataclasses.replace(experiment, objective=load_experiment(write_experiment(
            tmp_path, "other.yaml", objective="ntk_trace")).objective), resume=True)
    assert len(finished(run_search(experiment, resume=True))) == 1  # nothing left to do
    assert len(finished(run_search(experiment, resume=True, n_trials=2))) == 2


def test_identity_ignores_new_fields_left_at_their_defaults() -> None:
    old = dataclasses.make_dataclass("Options", [("rtol", float, dataclasses.field(default=0.05))], frozen=True)
    new = dataclasses.make_dataclass("Options", [("rtol", float, dataclasses.field(default=0.05)),
                                                 ("sketch", int, dataclasses.field(default=8))], frozen=True)
    assert settings_identity(old()) == settings_identity(new()) == {"type": "Options"}
    assert settings_identity(old(rtol=0.01)) == settings_identity(new(rtol=0.01)) == {"type": "Options", "rtol": 0.01}
    assert settings_identity(new(sketch=16)) != settings_identity(old())
    holder = dataclasses.make_dataclass("Spec", [("ntk", object, dataclasses.field(default_factory=old))])
    assert settings_identity(holder()) == {"type": "Spec", "ntk": {"type": "Options"}}  # nested objects always appear


def test_studies_stored_with_the_first_identity_format_still_resume(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(tmp_path, trials=1))
    study = run_search(experiment)
    legacy = study_identity(experiment, version=1)
    assert "version" not in legacy and isinstance(legacy["scoring"], str)
    study.set_user_attr(attrs.METADATA, legacy)  # as written by the first release
    assert len(finished(run_search(experiment, resume=True, n_trials=2))) == 2
    study.set_user_attr(attrs.METADATA, {**legacy, "seed": legacy["seed"] + 1})
    with pytest.raises(StudyError, match=r"different experiment \(seed changed\)"):
        open_study(experiment, resume=True)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # study.ask() simulates the interrupted trial
def test_resume_fails_interrupted_trials_and_reruns_their_params(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(tmp_path, trials=2))
    study = run_search(experiment)
    interrupted = study.ask()  # a trial whose process died while it ran
    params = experiment.space.sample(interrupted).params
    worker = open_study(experiment, join=True)  # workers never touch running trials
    assert worker.trials[interrupted.number].state == TrialState.RUNNING

    study = run_search(experiment, resume=True, n_trials=4)
    trials = study.get_trials(deepcopy=False)
    failed = trials[interrupted.number]
    assert failed.state == TrialState.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == interrupted.number)
    assert retry.state == TrialState.COMPLETE and retry.params == params
    assert len(finished(study)) == 4  # the interrupted trial counts towards the total
    completed = [t.params["init_scale"] for t in trials if t.state == TrialState.COMPLETE]
    assert len(completed) == len(set(completed)) == 3


def test_ctrl_c_is_recorded_and_retried_on_resume_like_a_killed_process(tmp_path: Path, monkeypatch) -> None:
    experiment = load_experiment(write_experiment(tmp_path, trials=3))
    evaluate = ProxyObjective.evaluate

    def interrupted_at_trial_1(self, point, number):
        if number == 1:
            raise KeyboardInterrupt
        return evaluate(self, point, number)

    monkeypatch.setattr(ProxyObjective, "evaluate", interrupted_at_trial_1)
    with pytest.raises(KeyboardInterrupt):
        run_search(experiment)
    monkeypatch.setattr(ProxyObjective, "evaluate", evaluate)
    study = load_existing_study(experiment.storage, experiment.study)
    interrupted = study.trials[1]
    assert interrupted.state == TrialState.FAIL and study.user_attrs["interrupted:1"] == "SIGINT"
    assert leaderboard_frame(study).set_index("trial").loc[1, "fail_reason"] == (
        "interrupted by Ctrl-C (SIGINT); not retried yet (run --resume retries it)")

    study = run_search(experiment, resume=True)
    trials = study.get_trials(deepcopy=False)
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 1)
    assert retry.state == TrialState.COMPLETE and retry.params == interrupted.params
    assert "fail_reason" not in retry.user_attrs
    assert leaderboard_frame(study).set_index("trial").loc[1, "fail_reason"] == (
        f"interrupted by Ctrl-C (SIGINT); retried as trial {retry.number}")
    assert len(finished(study)) == 3
    assert len(finished(run_search(experiment, resume=True, n_trials=4))) == 4  # retried once only
    assert sum(t.system_attrs.get("failed_trial") == 1 for t in study.get_trials(deepcopy=False)) == 1


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_ctrl_c_between_trials_fails_the_running_one_and_spares_other_failures(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    study.tell(study.ask(), state=TrialState.FAIL)  # failed without a reason: Ctrl-C inside the objective
    trial = study.ask()
    trial.set_user_attr("fail_reason", "non-finite model")
    study.tell(trial, state=TrialState.FAIL)  # failed for its own reason
    study.ask()  # left RUNNING: Ctrl-C while Optuna asked for it
    assert record_interruption(study, [0, 1], all_running=False) == [0]  # a worker: only its own trials
    assert record_interruption(study, [], all_running=True) == [2]  # a run: every running trial is its own
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    assert study.user_attrs == {"interrupted:0": "SIGINT", "interrupted:2": "SIGINT"}


def test_journal_storage_and_workers_share_the_total(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(tmp_path, trials=3, storage=f"journal:{tmp_path / 'j.log'}"))
    run_search(experiment, join=True, n_trials=2)
    study = run_search(experiment, join=True)  # a second worker stops at the study's total
    assert len(finished(study)) == 3


def test_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a storage URL"):
        make_storage(StorageSpec("redis://localhost"))
    with pytest.raises(StorageError, match="cannot open storage postgresql"):
        make_storage(StorageSpec("postgresql+psycopg2://user:pw@127.0.0.1:1/db"))
    with pytest.raises(StudyError, match="no study 'absent'"):
        load_existing_study(StorageSpec(f"sqlite:///{tmp_path / 'x.db'}"), "absent")


def test_samplers_are_seeded(tmp_path: Path) -> None:
    space = load_experiment(write_experiment(tmp_path)).space
    for name in ("tpe", "random", "nsga2"):
        draws = []
        for _ in range(2):
            study = optuna.create_study(sampler=make_sampler(name, seed=7, space=space))
            draws.append([space.sample(study.ask()).params for _ in range(3)])
        assert draws[0] == draws[1], name
    assert set(SAMPLERS) == {"tpe", "nsga2", "random", "grid", "gp", "cmaes"}


def test_grid_sampler_walks_the_space(tmp_path: Path) -> None:
    scales = {"type": "categorical", "choices": [0.5, 1.0, 2.0]}
    space_doc = {"family": "mlp", "hyperparameters": {"depth": 1, "width": 16, "init_scale": scales}}
    experiment = load_experiment(write_experiment(tmp_path, space_doc=space_doc, sampler="grid", trials=None))
    study = run_search(experiment)
    assert sorted(t.params["init_scale"] for t in study.trials) == [p.params["init_scale"]
                                                                   for p in experiment.space.enumerate()]


def test_the_objective_counts_linearised_steps_on_the_confirmation_run(tmp_path: Path) -> None:
    """The linearised proxies' t is the confirmation's: its training-set cap and epochs override."""
    experiment = load_experiment(write_experiment(tmp_path, confirm={"max_train": 100, "epochs": 3},
                                                  scoring={"batch_size": 16, "linearised": {"val_batch_size": 20}}))
    objective = experiment_objective(experiment)
    assert (objective.train_size, objective.epochs, len(objective.x_val)) == (100, 3, 20)
    point = experiment.space.point_from_params({"init_scale": 1.0})
    assert objective.linearised_options(point).steps == schedule_steps({**point.train, "epochs": 3}, 100)
    assert experiment_objective(dataclasses.replace(experiment, confirm=None)).train_size == 1257  # the split
