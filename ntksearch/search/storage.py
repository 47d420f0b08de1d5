"""Optuna storages from URLs: SQLite/PostgreSQL/MySQL (with heartbeats) and journal files.

* ``sqlite:///path/study.db`` (relative to the working directory; four slashes for an absolute path),
  ``postgresql+psycopg2://user:pass@host/db``, ``mysql+pymysql://...``: an ``RDBStorage`` whose running trials
  send a heartbeat every ``heartbeat_interval`` seconds. A trial whose worker was killed stops beating; after
  ``grace_period`` seconds the next worker to start a trial marks it failed and
  ``RetryHeartbeatStaleTrialCallback`` (the new name of ``RetryFailedTrialCallback``) re-enqueues its
  parameters, at most ``max_retry`` times. This is what lets many ``ntksearch worker`` processes share one
  PostgreSQL study with no coordinator.
* ``journal:path/study.log``: Optuna's ``JournalFileBackend``, an append-only file that several processes
  may share on one host or a shared filesystem (no heartbeats: ``ntksearch run --resume`` recovers its
  interrupted trials itself).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

from ntksearch.validation import path_problem

__all__ = [
    "JOURNAL_PREFIX",
    "RDB_SCHEMES",
    "StorageError",
    "StorageSpec",
    "absolute_url",
    "local_file",
    "make_storage",
    "storage_problem",
]

JOURNAL_PREFIX = "journal:"
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
_LOCAL_PREFIXES = ("sqlite:///", JOURNAL_PREFIX)
_ATTEMPTS = 3  # opening an empty database creates Optuna's schema; a worker losing that race retries
_RETRY_SECONDS = 0.5


class StorageError(RuntimeError):
    """The storage cannot be opened, or the study in it cannot be used as asked."""


@dataclass(frozen=True)
class StorageSpec:
    """Where the study lives and how dead workers are detected (see the module docstring)."""

    url: str
    heartbeat_interval: int = 60
    grace_period: int = 120
    max_retry: int = 3


def storage_problem(url: str) -> str | None:
    """Why ``url`` is not a storage URL this module opens, or ``None``."""
    prefix = _local_prefix(url)
    if prefix is not None:
        problem = path_problem(url[len(prefix):])
        return None if problem is None else f"storage {url!r} names no usable file: {problem}"
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else None
    if scheme in RDB_SCHEMES:
        return None
    return (f"{url!r} is not a storage URL; use sqlite:///<file>, postgresql+psycopg2://user:pass@host/db, "
            f"mysql+pymysql://... or journal:<file>")


def absolute_url(url: str) -> str:
    """``url`` with a relative SQLite or journal file path made absolute (for ``run.json``)."""
    local = local_file(url)
    return url if local is None else _local_prefix(url) + str(local.resolve())


def local_file(url: str) -> Path | None:
    """The file of a SQLite or journal URL, or ``None`` for a database server."""
    prefix = _local_prefix(url)
    return None if prefix is None else Path(url[len(prefix):]).expanduser()


def _local_prefix(url: str) -> str | None:
    return next((prefix for prefix in _LOCAL_PREFIXES if url.startswith(prefix)), None)


def make_storage(spec: StorageSpec) -> optuna.storages.BaseStorage:
    """Open (creating if needed) the storage of ``spec``; the parent folder of a local file is created.

    Raises:
      StorageError: a bad URL, a missing database driver, a database that cannot be reached, or a folder that
        cannot be created.
    """
    problem = storage_problem(spec.url)
    if problem is not None:
        raise StorageError(problem)
    local = local_file(spec.url)
    if local is not None:
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the folder of storage {spec.url}: {exc.strerror or exc}") from exc
    if spec.url.startswith(JOURNAL_PREFIX):
        return JournalStorage(JournalFileBackend(str(local)))
    attempt = 1
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(spec.url, heartbeat_interval=spec.heartbeat_interval,
                                  grace_period=spec.grace_period,
                                  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                      max_retry=spec.max_retry))
        except ImportError as exc:
            hint = " (pip install 'ntksearch[postgres]')" if spec.url.startswith("postgresql") else ""
            raise StorageError(f"{spec.url.split('://')[0]} storage needs a database driver{hint}: {exc}") from exc
        except Exception as exc:  # sqlalchemy's errors: unreachable server, bad credentials, corrupt file
            if attempt == _ATTEMPTS:
                raise StorageError(f"cannot open storage {spec.url}: {exc}") from exc
            time.sleep(_RETRY_SECONDS * attempt)  # workers starting together race on creating the schema
            attempt += 1
