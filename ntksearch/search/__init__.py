"""Searches with Optuna: experiment configs, the proxy objective, study set-up, resume and confirmation training.

Run a whole experiment with ``ntksearch run experiments/quickstart.yaml``, or use
:class:`ProxyObjective` in your own study (see :mod:`ntksearch.search.objective`).
"""

from ntksearch.search.compiled import ClearCompiledPrograms
from ntksearch.search.config import ConfirmSpec, DatasetSpec, Experiment, SamplerSpec, ScoringSpec, load_experiment
from ntksearch.search.confirm import confirm_candidates, confirm_trial, select_candidates
from ntksearch.search.objective import CandidateKeys, Evaluation, ProxyObjective, candidate_keys
from ntksearch.search.objectives import Objective, ProxyTarget, ScoreTarget, WeightedLog, as_objective
from ntksearch.search.progress import ProgressLine
from ntksearch.search.samplers import SAMPLERS, make_sampler
from ntksearch.search.storage import StorageError, StorageSpec, make_storage
from ntksearch.search.study import StudyError, experiment_objective, open_study, run_search

__all__ = [
    "SAMPLERS",
    "CandidateKeys",
    "ClearCompiledPrograms",
    "ConfirmSpec",
    "DatasetSpec",
    "Evaluation",
    "Experiment",
    "Objective",
    "ProgressLine",
    "ProxyObjective",
    "ProxyTarget",
    "SamplerSpec",
    "ScoreTarget",
    "ScoringSpec",
    "StorageError",
    "StorageSpec",
    "StudyError",
    "WeightedLog",
    "as_objective",
    "candidate_keys",
    "confirm_candidates",
    "confirm_trial",
    "experiment_objective",
    "load_experiment",
    "make_sampler",
    "make_storage",
    "open_study",
    "run_search",
    "select_candidates",
]
