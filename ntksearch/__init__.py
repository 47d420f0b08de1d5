"""ntksearch: neural architecture and hyperparameter search scored at initialisation with NTK proxies."""

from ntksearch.ntk import (
    Estimate,
    ExactNTKStats,
    NonFiniteModelError,
    NTKOperator,
    exact_ntk,
    exact_ntk_stats,
    ntk_metrics,
)

__version__ = "0.1.0"

__all__ = [
    "Estimate",
    "ExactNTKStats",
    "NTKOperator",
    "NonFiniteModelError",
    "__version__",
    "exact_ntk",
    "exact_ntk_stats",
    "ntk_metrics",
]
