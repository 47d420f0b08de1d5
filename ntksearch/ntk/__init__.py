"""Matrix-free empirical NTK: operator, randomised estimators, spectra and dense references (pure JAX)."""

from ntksearch.ntk.estimators import METHODS, QUANTITIES, Estimate, NonFiniteModelError, ntk_metrics
from ntksearch.ntk.exact import ExactNTKStats, exact_jacobian, exact_ntk, exact_ntk_stats
from ntksearch.ntk.operator import NTKOperator, jvp_batch, kvp_batch, vjp_batch

__all__ = [
    "METHODS",
    "QUANTITIES",
    "Estimate",
    "ExactNTKStats",
    "NTKOperator",
    "NonFiniteModelError",
    "exact_jacobian",
    "exact_ntk",
    "exact_ntk_stats",
    "jvp_batch",
    "kvp_batch",
    "ntk_metrics",
    "vjp_batch",
]
