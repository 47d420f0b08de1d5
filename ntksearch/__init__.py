"""ntksearch: neural architecture and hyperparameter search scored at initialisation with NTK proxies.

The public API, by layer (see ``docs/architecture.md``):

* NTK core (pure JAX): :func:`ntk_metrics`, :func:`lambda_max`, :func:`linearised_metrics`,
  :func:`linearise_kernel` (:class:`LinearisedKernel`, :class:`LinearisedMetrics`), :class:`NTKOperator`,
  :func:`exact_ntk`, :func:`exact_ntk_stats`, :class:`Estimate`.
* Proxies: :data:`PROXIES`, :func:`compute_proxies`, :class:`ProxyInputs`, :class:`NTKOptions`,
  :class:`LinearisedOptions`, :func:`score`, :data:`DEFAULT_SCORE`, :func:`az_nas_rank_score` (AZ-NAS's
  aggregate over a population).
* Spaces and models: :func:`load_space`, :class:`SearchSpace`, :class:`Point`, :func:`build_model`,
  :class:`BuiltModel`, :data:`FAMILIES`, :func:`count_flops`, :func:`nb201_arch_string`, shape buckets
  (:class:`BucketGrid`, :func:`bucket_candidate`: one compiled program for many candidates).
* Data and training: :func:`load_dataset`, :class:`Dataset`, :func:`scoring_batch`, :class:`TrainHParams`,
  :func:`train_model`, :func:`stable_learning_rate`.
* Search and reports (Optuna; imported on first use so the core stays light): :class:`ProxyObjective`
  (:class:`ClearCompiledPrograms` bounds its compiled programs in long studies), :func:`load_experiment`,
  :func:`run_search`, :func:`confirm_candidates`, :func:`leaderboard_frame`, :func:`export_leaderboard`,
  :func:`proxy_quality`.
"""

from importlib import import_module
from importlib import metadata as _metadata
from typing import Any

from ntksearch.data import DATASETS, Dataset, DatasetNotFoundError, load_dataset, scoring_batch
from ntksearch.models import (
    FAMILIES,
    BucketGrid,
    BuildError,
    BuiltModel,
    bucket_candidate,
    build_model,
    count_flops,
    nb201_arch_string,
    nb201_edges,
)
from ntksearch.ntk import (
    Estimate,
    ExactNTKStats,
    LinearisedKernel,
    LinearisedMetrics,
    NonFiniteModelError,
    NTKOperator,
    exact_ntk,
    exact_ntk_stats,
    linearise_kernel,
    linearised_metrics,
    ntk_metrics,
    structured_kernel,
)
from ntksearch.ntk.spectra import lambda_max
from ntksearch.proxies import (
    AZ_NAS_TERMS,
    DEFAULT_SCORE,
    PROXIES,
    LinearisedOptions,
    NTKOptions,
    ProxyInputs,
    ProxyValue,
    az_nas_rank_score,
    compute_proxies,
    score,
)
from ntksearch.spaces import Point, SearchSpace, load_space
from ntksearch.train import TrainHParams, TrainResult, stable_learning_rate, train_model
from ntksearch.validation import ConfigError

__version__ = _metadata.version("ntksearch")  # one place: pyproject.toml

_LAZY = {
    "ProxyObjective": "ntksearch.search",
    "ClearCompiledPrograms": "ntksearch.search",
    "load_experiment": "ntksearch.search",
    "run_search": "ntksearch.search",
    "confirm_candidates": "ntksearch.search",
    "leaderboard_frame": "ntksearch.report",
    "export_leaderboard": "ntksearch.report",
    "proxy_quality": "ntksearch.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ntksearch' has no attribute {name!r}")

__all__ = [
    "AZ_NAS_TERMS",
    "DATASETS",
    "DEFAULT_SCORE",
    "FAMILIES",
    "PROXIES",
    "BucketGrid",
    "BuildError",
    "BuiltModel",
    "ClearCompiledPrograms",
    "ConfigError",
    "Dataset",
    "DatasetNotFoundError",
    "Estimate",
    "ExactNTKStats",
    "LinearisedKernel",
    "LinearisedMetrics",
    "LinearisedOptions",
    "NTKOperator",
    "NTKOptions",
    "NonFiniteModelError",
    "Point",
    "ProxyInputs",
    "ProxyObjective",
    "ProxyValue",
    "SearchSpace",
    "TrainHParams",
    "TrainResult",
    "__version__",
    "az_nas_rank_score",
    "bucket_candidate",
    "build_model",
    "compute_proxies",
    "confirm_candidates",
    "count_flops",
    "exact_ntk",
    "exact_ntk_stats",
    "export_leaderboard",
    "lambda_max",
    "leaderboard_frame",
    "linearise_kernel",
    "linearised_metrics",
    "load_dataset",
    "load_experiment",
    "load_space",
    "nb201_arch_string",
    "nb201_edges",
    "ntk_metrics",
    "proxy_quality",
    "run_search",
    "score",
    "scoring_batch",
    "stable_learning_rate",
    "structured_kernel",
    "train_model",
]
