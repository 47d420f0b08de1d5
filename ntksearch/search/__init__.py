"""Searches with Optuna: experiment configs, the proxy objective, study set-up, resume and confirmation training.

Run a whole experiment with ``ntksearch run experiments/quickstart.yaml``, or use
:class:`ProxyObjective` in your own study (see :mod:`ntksearch.search.proxy_objective`).

The public names below are imported from their modules on first use, so that a reader of stored studies
(:mod:`ntksearch.report`) can import the trial-attribute names (:mod:`ntksearch.search.attrs`) without the
whole search stack (configs, datasets, training).
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ClearCompiledPrograms": "compiled",
    "ConfirmSpec": "config",
    "DatasetSpec": "config",
    "Experiment": "config",
    "SamplerSpec": "config",
    "ScoringSpec": "config",
    "load_experiment": "config",
    "confirm_candidates": "confirm",
    "confirm_trial": "confirm",
    "select_candidates": "confirm",
    "CandidateKeys": "proxy_objective",
    "CandidateSize": "proxy_objective",
    "Evaluation": "proxy_objective",
    "ProxyObjective": "proxy_objective",
    "candidate_keys": "proxy_objective",
    "Objective": "targets",
    "ProxyTarget": "targets",
    "ScoreTarget": "targets",
    "WeightedLog": "targets",
    "as_objective": "targets",
    "WorkerProcessDied": "pipeline",
    "optimize_ahead": "pipeline",
    "ProgressLine": "progress",
    "SAMPLERS": "samplers",
    "make_sampler": "samplers",
    "StorageError": "storage",
    "StorageSpec": "storage",
    "make_storage": "storage",
    "StudyError": "study",
    "experiment_objective": "study",
    "open_study": "study",
    "run_search": "study",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
