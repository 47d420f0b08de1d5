"""Study set-up and the search loop: :func:`open_study` and :func:`run_search`.

One code path serves a single ``ntksearch run`` and any number of ``ntksearch worker`` processes sharing a
study: each process opens the study (``load_if_exists``), then optimises until the study holds ``trials``
finished trials (COMPLETE + FAIL, counted over every process by Optuna's ``MaxTrialsCallback``; workers
finishing together may overshoot by up to one trial each, as the callback runs after a trial ends).

**Resume.** ``run --resume`` continues a study whose previous run was killed. Completed and failed trials
stay as they are; every trial still RUNNING (its process is dead: ``--resume`` asserts that no other process
works on the study) is marked FAIL and its parameters are enqueued again through
``RetryHeartbeatStaleTrialCallback``, the same mechanism heartbeats use for workers, so the retry keeps a
``failed_trial`` link to it; then only the remaining trials run. Workers never touch running trials: on an
RDB storage a dead worker's trial is failed and retried by the heartbeat after its grace period.

**Sampler seeds.** A new study's sampler is seeded with the experiment's ``seed``, so an uninterrupted run is
reproducible; a resumed run or a worker derives another seed (:func:`sampler_seed`) so that it does not replay
the random draws of the first process and propose the same candidates again.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from ntksearch.data import Dataset
from ntksearch.search import attrs
from ntksearch.search.config import Experiment
from ntksearch.search.objective import ProxyObjective
from ntksearch.search.storage import StorageError, StorageSpec, absolute_url, make_storage

__all__ = [
    "FINISHED",
    "RUN_FILE",
    "StudyError",
    "experiment_objective",
    "load_existing_study",
    "open_study",
    "recover_interrupted",
    "run_search",
    "sampler_seed",
    "study_identity",
    "write_run_file",
]

FINISHED = (TrialState.COMPLETE, TrialState.FAIL)
RUN_FILE = "run.json"

Callback = Callable[[optuna.Study, FrozenTrial], None]


class StudyError(StorageError):
    """The study exists and cannot be used as asked (not resumed, made from another config)."""


def study_identity(experiment: Experiment) -> dict[str, Any]:
    """What determines an experiment's trials; stored in the study and compared on resume."""
    space_text = experiment.space.path.read_bytes() if experiment.space.path else b""
    return {
        "experiment": experiment.name,
        "seed": experiment.seed,
        "family": experiment.space.family,
        "space_sha256": hashlib.sha256(space_text).hexdigest(),
        "dataset": {"name": experiment.dataset.name, **experiment.dataset.options},
        "scoring": repr(experiment.scoring),
        "objective": experiment.objective.names,
        "directions": experiment.objective.directions,
        "objective_spec": repr(experiment.objective),
        "record": None if experiment.record is None else list(experiment.record),
    }


def open_study(experiment: Experiment, *, resume: bool = False, join: bool = False) -> optuna.Study:
    """Create or open the experiment's study.

    Args:
      resume: continue an existing study of this experiment (recovering its interrupted trials).
      join: a worker: open the study whatever it holds, never touching running trials.

    Raises:
      StudyError: the study holds trials and neither ``resume`` nor ``join`` is set, or it was created from a
        different experiment (space, objective, dataset, scoring, seed or recorded proxies changed).
      StorageError: the storage cannot be opened.
    """
    storage = make_storage(experiment.storage)
    identity = study_identity(experiment)
    try:
        study = optuna.create_study(storage=storage, study_name=experiment.study, load_if_exists=True,
                                    directions=experiment.objective.directions)
    except ValueError as exc:  # directions differ from the stored study's
        raise StudyError(f"study {experiment.study!r} in {experiment.storage.url} cannot be opened: {exc}") from exc
    study.sampler = experiment.make_sampler(sampler_seed(experiment.seed, len(study.get_trials(deepcopy=False)),
                                                         worker=join))
    stored = study.user_attrs.get(attrs.METADATA)
    if stored is None:
        study.set_user_attr(attrs.METADATA, identity)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(experiment.objective.names)
    elif stored != identity:
        changed = sorted(k for k in identity.keys() | stored.keys() if identity.get(k) != stored.get(k))
        raise StudyError(f"study {experiment.study!r} in {experiment.storage.url} was created from a different "
                         f"experiment ({', '.join(changed)} changed); use another study name or output folder")
    if not (resume or join) and study.get_trials(deepcopy=False):
        raise StudyError(f"study {experiment.study!r} in {experiment.storage.url} already has "
                         f"{len(study.get_trials(deepcopy=False))} trials: pass --resume to continue it, or choose "
                         "a new output folder (output:) or study name")
    if resume:
        recover_interrupted(study, max_retry=experiment.storage.max_retry)
    return study


def sampler_seed(seed: int, n_trials: int, *, worker: bool = False) -> int:
    """The sampler seed of a process joining a study that holds ``n_trials`` trials.

    A fresh study uses ``seed`` itself (an uninterrupted run is reproducible). A resumed one gets a seed derived
    from ``(seed, n_trials)``, so it does not replay the random draws of the first run (which would propose the
    same candidates again); a worker mixes in fresh entropy too, so workers starting together differ.
    """
    if n_trials == 0 and not worker:
        return seed
    entropy = [seed, n_trials, *([secrets.randbits(64)] if worker else [])]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def recover_interrupted(study: optuna.Study, *, max_retry: int) -> list[int]:
    """Fail every RUNNING trial and enqueue its parameters again; returns the failed trial numbers.

    Only for a study no live process works on (``run --resume``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        retry(study, study.trials[trial.number])
        numbers.append(trial.number)
    return numbers


def experiment_objective(experiment: Experiment, dataset: Dataset | None = None) -> ProxyObjective:
    """The experiment's :class:`ProxyObjective` on ``dataset`` (default: load the experiment's); the linearised
    proxies count steps on the training set and epochs that confirmation will use (``confirm.max_train``,
    ``confirm.epochs``).

    Raises:
      ConfigError: a bad dataset option. DatasetNotFoundError: the dataset's files are absent.
    """
    dataset = dataset if dataset is not None else experiment.dataset.load()
    confirm = experiment.confirm
    train_size = len(dataset.y_train)
    if confirm is not None and confirm.max_train is not None:
        train_size = min(train_size, confirm.max_train)
    return ProxyObjective(experiment.space, dataset, proxies=experiment.record,
                          objective=experiment.objective, seed=experiment.seed, ntk=experiment.scoring.ntk,
                          linearised=experiment.scoring.linearised, train_size=train_size,
                          epochs=None if confirm is None else confirm.epochs,
                          batch_size=experiment.scoring.batch_size)


def run_search(experiment: Experiment, *, n_trials: int | None = None, timeout: float | None = None,
               resume: bool = False, join: bool = False, progress: Callback | None = None,
               dataset: Dataset | None = None, callbacks: Sequence[Callback] = ()) -> optuna.Study:
    """Run (or continue) the experiment's search and return its study.

    Args:
      n_trials: override the config's total ``trials`` (finished trials of the whole study).
      timeout: override the config's ``timeout`` (seconds for this invocation).
      resume: continue an existing study (see the module docstring). join: run as a worker.
      progress: an Optuna callback called after every trial (e.g. :class:`ntksearch.search.ProgressLine`).
      dataset: the experiment's dataset, when already loaded.
      callbacks: more Optuna callbacks, called after every trial this process finishes.

    Writes ``<output>/run.json`` (storage URL and study name, for ``ntksearch leaderboard <output>``).
    """
    objective = experiment_objective(experiment, dataset)
    study = open_study(experiment, resume=resume, join=join)
    write_run_file(experiment)
    total = n_trials if n_trials is not None else experiment.trials
    timeout = timeout if timeout is not None else experiment.timeout
    callbacks = [*callbacks, *([] if progress is None else [progress])]
    remaining = None
    if total is not None:
        remaining = total - len(study.get_trials(deepcopy=False, states=FINISHED))
        callbacks.insert(0, MaxTrialsCallback(total, states=FINISHED))
    if remaining is None or remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=timeout, callbacks=callbacks)
    return study


def write_run_file(experiment: Experiment) -> Path:
    """``<output>/run.json``: where the study lives and which config made it."""
    experiment.output.mkdir(parents=True, exist_ok=True)
    path = experiment.output / RUN_FILE
    path.write_text(json.dumps({"config": str(experiment.path), "storage": absolute_url(experiment.storage.url),
                                "study": experiment.study}, indent=2) + "\n")
    return path


def load_existing_study(storage: StorageSpec, name: str) -> optuna.Study:
    """Open study ``name`` that must already exist in ``storage``.

    Raises:
      StudyError: there is no such study (the message lists the studies there). StorageError: bad storage.
    """
    opened = make_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=opened)
    except KeyError:
        names = optuna.get_all_study_names(storage=opened)
        raise StudyError(f"no study {name!r} in {storage.url}; studies there: {', '.join(names) or 'none'}") from None
