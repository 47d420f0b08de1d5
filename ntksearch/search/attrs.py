"""Names of what a search stores in Optuna, shared by the writers (objective, confirmation, study set-up) and
the readers (leaderboards, reports, the CLI).

Per trial (``trial.user_attrs``), written by :class:`~ntksearch.search.ProxyObjective`:

* ``proxies``: ``{proxy: value}``; ``stderr``: ``{proxy: standard error}`` (non-finite values are kept);
* ``seconds``: ``{"build": s, <proxy group>: s, ...}``;
* ``n_params``, ``flops``: the candidate's size and counted forward FLOPs of one example;
* ``arch``: the resolved architecture point as JSON; ``nb201_arch``: the NAS-Bench-201 string (nb201 only);
* ``non_finite``: recorded proxies (not in the objective) whose value is not finite;
* ``fail_reason``: why a FAIL trial failed (build error, non-finite model or objective);
* ``worker``: ``host:pid`` of the process that scored it (several workers may share one study).

Per retried trial (``trial.system_attrs``, written by Optuna's ``RetryHeartbeatStaleTrialCallback``): the
trials it retries (:func:`retry_links`).

Per study (``study.user_attrs``): ``ntksearch`` (what the study was created from, checked on resume),
``confirm:<trial number>``, one confirmation-training result per trained candidate, and
``interrupted:<trial number>`` (``"SIGINT"``) for each trial a Ctrl-C failed (``run --resume`` retries them).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

__all__ = [
    "ARCH",
    "CONFIRM_PREFIX",
    "FAIL_REASON",
    "FLOPS",
    "INTERRUPTED_PREFIX",
    "METADATA",
    "NB201_ARCH",
    "NON_FINITE",
    "N_PARAMS",
    "PROXIES",
    "SECONDS",
    "STDERR",
    "WORKER",
    "confirm_key",
    "confirmations",
    "interrupted_key",
    "interruptions",
    "retry_links",
]

PROXIES = "proxies"
STDERR = "stderr"
SECONDS = "seconds"
N_PARAMS = "n_params"
FLOPS = "flops"
ARCH = "arch"
NB201_ARCH = "nb201_arch"
NON_FINITE = "non_finite"
FAIL_REASON = "fail_reason"
WORKER = "worker"
METADATA = "ntksearch"
CONFIRM_PREFIX = "confirm:"
INTERRUPTED_PREFIX = "interrupted:"


def confirm_key(number: int) -> str:
    """The study attribute holding trial ``number``'s confirmation result."""
    return f"{CONFIRM_PREFIX}{number}"


def confirmations(study_attrs: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Trial number → confirmation result, from ``study.user_attrs``."""
    return _numbered(study_attrs, CONFIRM_PREFIX)


def interrupted_key(number: int) -> str:
    """The study attribute recording that trial ``number`` was interrupted by Ctrl-C."""
    return f"{INTERRUPTED_PREFIX}{number}"


def interruptions(study_attrs: Mapping[str, Any]) -> dict[int, str]:
    """Trial number → the signal that interrupted it (``"SIGINT"``), from ``study.user_attrs``."""
    return _numbered(study_attrs, INTERRUPTED_PREFIX)


def _numbered(study_attrs: Mapping[str, Any], prefix: str) -> dict[int, Any]:
    return {int(key[len(prefix):]): value for key, value in study_attrs.items() if key.startswith(prefix)}


def retry_links(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    """Interrupted trial number → the number of the trial that retried it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return {RetryHeartbeatStaleTrialCallback.retry_history(t)[-1]: t.number for t in trials
                if RetryHeartbeatStaleTrialCallback.retry_history(t)}
