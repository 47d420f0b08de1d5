"""Study set-up and the search loop: :func:`open_study` and :func:`run_search`.

One code path serves a single ``ntksearch run`` and any number of ``ntksearch worker`` processes sharing a
study: each process opens the study (``load_if_exists``), then optimises until the study holds ``trials``
finished trials (COMPLETE + FAIL, counted over every process by Optuna's ``MaxTrialsCallback``; workers
finishing together may overshoot by up to one trial each, as the callback runs after a trial ends).

**Resume.** ``run --resume`` continues a study whose previous run was interrupted, by Ctrl-C or by kill -9,
in the same way. Completed and failed trials stay as they are, except interrupted ones: a trial still RUNNING
(its process was killed: ``--resume`` asserts that no other process works on the study) is marked FAIL, a
trial failed by Ctrl-C already is (:func:`run_search` records the interruption, :func:`record_interruption`),
and the parameters of both are enqueued again through ``RetryHeartbeatStaleTrialCallback``, the same mechanism
heartbeats use for workers, so the retry keeps a ``failed_trial`` link to it; then only the remaining trials
run. Workers never touch running trials: on an RDB storage a dead worker's trial is failed and retried by the
heartbeat after its grace period.

**Output folders.** ``<output>/run.json`` names the study whose results the folder holds; a run of another
study (another storage or study name) refuses to reuse the folder unless ``--resume`` or ``--overwrite``
(:func:`claim_output`); ``--overwrite`` starts over, deleting the experiment's own study too.

**Sampler seeds.** A new study's sampler is seeded with the experiment's ``seed``, so an uninterrupted run is
reproducible; a resumed run or a worker derives another seed (:func:`sampler_seed`) so that it does not replay
the random draws of the first process and propose the same candidates again.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import secrets
import shutil
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
from ntksearch.search.attrs import retry_links
from ntksearch.search.compiled import ClearCompiledPrograms
from ntksearch.search.config import Experiment
from ntksearch.search.pipeline import optimize_ahead
from ntksearch.search.preflight import check_dataset_fit, check_output
from ntksearch.search.proxy_objective import ProxyObjective
from ntksearch.search.storage import StorageError, StorageSpec, absolute_url, local_file, make_storage

__all__ = [
    "FINISHED",
    "LEADERBOARD_DIR",
    "RUN_FILE",
    "StudyError",
    "claim_output",
    "experiment_objective",
    "load_existing_study",
    "open_study",
    "record_interruption",
    "recover_interrupted",
    "retry_links",
    "run_search",
    "sampler_seed",
    "settings_identity",
    "study_identity",
    "write_run_file",
]

FINISHED = (TrialState.COMPLETE, TrialState.FAIL)
RUN_FILE = "run.json"
LEADERBOARD_DIR = "leaderboard"

Callback = Callable[[optuna.Study, FrozenTrial], None]


class StudyError(StorageError):
    """The study exists and cannot be used as asked (not resumed, made from another config)."""


IDENTITY_VERSION = 2  # 1: settings compared as repr strings (a new field broke resuming); 2: non-default fields


def settings_identity(value: Any) -> Any:
    """A settings value as JSON data: a dataclass becomes the dict of its type name and its fields, leaving out
    scalar fields equal to their defaults (so adding a field with a default leaves the identity of existing
    configs unchanged); nested dataclasses always appear (a changed default score or options object counts);
    tuples become lists, other values stay as they are."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            current = getattr(value, f.name)
            default = (f.default if f.default is not dataclasses.MISSING else
                       f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
            if dataclasses.is_dataclass(current) or default is dataclasses.MISSING or current != default:
                out[f.name] = settings_identity(current)
        return {"type": type(value).__name__, **out}
    if isinstance(value, list | tuple):
        return [settings_identity(v) for v in value]
    if isinstance(value, dict):
        return {str(k): settings_identity(v) for k, v in value.items()}
    return value


def study_identity(experiment: Experiment, *, version: int = IDENTITY_VERSION) -> dict[str, Any]:
    """What determines an experiment's trials; stored in the study and compared on resume (in the stored
    study's ``version`` of the format, so studies made by earlier releases still resume)."""
    space_text = experiment.space.path.read_bytes() if experiment.space.path else b""
    settings = repr if version == 1 else settings_identity
    return {
        **({} if version == 1 else {"version": version}),
        "experiment": experiment.name,
        "seed": experiment.seed,
        "family": experiment.space.family,
        "space_sha256": hashlib.sha256(space_text).hexdigest(),
        "dataset": {"name": experiment.dataset.name, **experiment.dataset.options},
        "scoring": settings(experiment.scoring),
        "objective": experiment.objective.names,
        "directions": experiment.objective.directions,
        "objective_spec": settings(experiment.objective),
        "record": None if experiment.record is None else list(experiment.record),
    }


def open_study(experiment: Experiment, *, resume: bool = False, join: bool = False, overwrite: bool = False
               ) -> optuna.Study:
    """Create or open the experiment's study.

    Args:
      resume: continue an existing study of this experiment (recovering its interrupted trials).
      join: a worker: open the study whatever it holds, never touching running trials.
      overwrite: start over: delete the experiment's study from the storage first, if it exists.

    Raises:
      StudyError: the study holds trials and neither ``resume`` nor ``join`` is set, or it was created from a
        different experiment (space, objective, dataset, scoring, seed or recorded proxies changed).
      StorageError: the storage cannot be opened.
    """
    storage = make_storage(experiment.storage)
    identity = study_identity(experiment)
    if overwrite and experiment.study in optuna.get_all_study_names(storage=storage):
        optuna.delete_study(study_name=experiment.study, storage=storage)
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
    elif stored != (current := study_identity(experiment, version=stored.get("version", 1))):
        changed = sorted(k for k in current.keys() | stored.keys() if current.get(k) != stored.get(k))
        raise StudyError(f"study {experiment.study!r} in {experiment.storage.url} was created from a different "
                         f"experiment ({', '.join(changed)} changed); use another study name or output folder")
    if not (resume or join) and study.get_trials(deepcopy=False):
        raise StudyError(f"study {experiment.study!r} in {experiment.storage.url} already has "
                         f"{len(study.get_trials(deepcopy=False))} trials: pass --resume to continue it, "
                         "--overwrite to start over, or choose a new output folder (output:) or study name")
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
    """Retry every interrupted trial once more; returns their numbers.

    Interrupted trials are those still RUNNING (their process was killed or died; they are marked FAIL first)
    and those failed by Ctrl-C (:func:`~ntksearch.search.attrs.interruptions`) that were not retried yet. Their
    parameters are enqueued again through ``RetryHeartbeatStaleTrialCallback`` (at most ``max_retry`` times
    per candidate), without their user attributes. A process killed while its trial was still being sampled
    leaves only the parameters drawn so far: the retry keeps those and the sampler draws the rest. Only for a
    study no live process works on (``run --resume``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    trials = study.get_trials(deepcopy=False)
    retried, by_ctrl_c = retry_links(trials), attrs.interruptions(study.user_attrs)
    numbers = []
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
        elif not (trial.state == TrialState.FAIL and trial.number in by_ctrl_c and trial.number not in retried):
            continue
        candidate = copy.deepcopy(trial)
        candidate.user_attrs = {}
        retry(study, candidate)
        numbers.append(trial.number)
    return numbers


def claim_output(experiment: Experiment, *, resume: bool = False, overwrite: bool = False) -> None:
    """Keep the results of another study in the output folder from being overwritten.

    The folder's ``run.json`` names the storage and study whose results it holds. When they are not this
    experiment's, refuse (``StudyError``) unless ``resume`` or ``overwrite``. With ``overwrite`` the folder's
    previous ``run.json`` and leaderboard are removed.
    """
    run_file = experiment.output / RUN_FILE
    if overwrite:
        run_file.unlink(missing_ok=True)
        shutil.rmtree(experiment.output / LEADERBOARD_DIR, ignore_errors=True)
        return
    if resume or not run_file.exists():
        return
    try:
        previous = json.loads(run_file.read_text())
        owner = (previous["storage"], previous["study"])
    except (OSError, ValueError, KeyError, TypeError):
        owner = ("an unreadable run file", "?")
    if owner != (absolute_url(experiment.storage.url), experiment.study):
        raise StudyError(f"{experiment.output} holds the results of study {owner[1]!r} in {owner[0]} ({run_file}); "
                         "pass --overwrite to replace them, or choose another output folder (output:)")


def experiment_objective(experiment: Experiment, dataset: Dataset | None = None) -> ProxyObjective:
    """The experiment's :class:`ProxyObjective` on ``dataset`` (default: load the experiment's); the linearised
    proxies count steps on the training set and epochs that confirmation will use (``confirm.max_train``,
    ``confirm.epochs``).

    Raises:
      ConfigError: a bad dataset option, or sizes that do not fit the dataset
        (:func:`~ntksearch.search.preflight.check_dataset_fit`). DatasetNotFoundError: the dataset's files are
        absent.
    """
    dataset = dataset if dataset is not None else experiment.dataset.load()
    check_dataset_fit(experiment, dataset)
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
               threads: int | None = None, processes: int | None = None, resume: bool = False, join: bool = False,
               overwrite: bool = False, progress: Callback | None = None, dataset: Dataset | None = None,
               callbacks: Sequence[Callback] = ()) -> optuna.Study:
    """Run (or continue) the experiment's search and return its study.

    Args:
      n_trials: override the config's total ``trials`` (finished trials of the whole study).
      timeout: override the config's ``timeout`` (seconds for this invocation).
      threads: override the config's ``threads`` (and set ``processes`` to 1): candidates scored at once, so
        that one compiles while another runs. A ``run`` scores them with
        :func:`~ntksearch.search.pipeline.optimize_ahead`, reproducible from (``seed``, threads); a worker
        (``join``) with Optuna's ``n_jobs`` threads, which keep heartbeats but sample in an order that depends
        on timing.
      processes: override the config's ``processes`` (and set ``threads`` to 1): candidates scored at once in
        this many worker processes of ``optimize_ahead``; the same search as that many threads, faster where
        there are cores for them. A worker (``join``) is one process and ignores it (start more workers).
      resume: continue an existing study (see the module docstring). join: run as a worker.
      overwrite: start over: delete the experiment's existing study and the output folder's previous results
        (:func:`claim_output`).
      progress: an Optuna callback called after every trial (e.g. :class:`ntksearch.search.ProgressLine`).
      dataset: the experiment's dataset, when already loaded.
      callbacks: more Optuna callbacks, called after every trial this process finishes (besides
        :class:`~ntksearch.search.compiled.ClearCompiledPrograms`, which bounds JAX's compiled programs).

    Writes ``<output>/run.json`` (storage URL and study name, for ``ntksearch leaderboard <output>``).

    Raises:
      ConfigError: the experiment does not fit its dataset or its output folder cannot be written
        (:mod:`ntksearch.search.preflight`), checked before the study is opened.
      StudyError: the study or the output folder holds results that would be overwritten (see ``resume`` and
        ``overwrite``). StorageError: the storage cannot be opened.
    """
    objective = experiment_objective(experiment, dataset)
    check_output(experiment, create=True)
    claim_output(experiment, resume=resume or join, overwrite=overwrite)
    study = open_study(experiment, resume=resume, join=join, overwrite=overwrite)
    write_run_file(experiment)
    total = n_trials if n_trials is not None else experiment.trials
    timeout = timeout if timeout is not None else experiment.timeout
    if threads is None and processes is None:
        threads, processes = experiment.threads, experiment.processes
    threads, processes = threads or 1, processes or 1
    callbacks = [*callbacks, ClearCompiledPrograms(objective), *([] if progress is None else [progress])]
    remaining = None
    if total is not None:
        remaining = total - len(study.get_trials(deepcopy=False, states=FINISHED))
    if remaining is None or remaining > 0:
        started: list[int] = []
        try:
            if max(threads, processes) > 1 and not join:  # the only process: reproducible threads or processes
                optimize_ahead(study, objective, threads=threads, processes=processes, n_trials=remaining,
                               timeout=timeout, callbacks=callbacks, started=started)
            else:  # workers count the study's total together, and send heartbeats
                if total is not None:
                    callbacks.insert(0, MaxTrialsCallback(total, states=FINISHED))
                study.optimize(_tracked(objective, started), n_trials=remaining, timeout=timeout,
                               callbacks=callbacks, n_jobs=threads)
        except KeyboardInterrupt:
            record_interruption(study, started, all_running=not join)
            raise
    return study


def _tracked(objective: Callable[[optuna.Trial], Any], started: list[int]) -> Callable[[optuna.Trial], Any]:
    """``objective`` appending each trial's number to ``started`` first."""
    def call(trial: optuna.Trial) -> Any:
        started.append(trial.number)
        return objective(trial)

    return call


def record_interruption(study: optuna.Study, numbers: Sequence[int], *, all_running: bool) -> list[int]:
    """After Ctrl-C: fail the trials it interrupted and record why (``interrupted:<number>`` study attributes),
    so that ``run --resume`` retries them as it retries a killed process's trials; returns their numbers.

    Ctrl-C inside the objective leaves its trial FAIL without a ``fail_reason`` (Optuna failed it); between
    trials (Optuna asking for or telling one) it may leave a trial RUNNING. ``numbers`` are the trials this
    process started; ``all_running``: this process is the study's only one (``run``), so every RUNNING trial
    is its own.
    """
    trials = study.get_trials(deepcopy=False)
    hit = [t for t in trials if t.state == TrialState.RUNNING and (all_running or t.number in numbers)]
    hit += [t for t in trials if t.number in numbers and t.state == TrialState.FAIL
            and attrs.FAIL_REASON not in t.user_attrs]
    for trial in hit:
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
        study.set_user_attr(attrs.interrupted_key(trial.number), "SIGINT")
    return [t.number for t in hit]


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
      StudyError: there is no such study (the message lists the studies there; a SQLite or journal file that
        does not exist is not created). StorageError: bad storage.
    """
    local = local_file(storage.url)
    if local is not None and not local.is_file():
        raise StudyError(f"no study {name!r} in {storage.url}: {local} does not exist (nothing was created)")
    opened = make_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=opened)
    except KeyError:
        names = optuna.get_all_study_names(storage=opened)
        raise StudyError(f"no study {name!r} in {storage.url}; studies there: {', '.join(names) or 'none'}") from None
