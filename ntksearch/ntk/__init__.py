"""Matrix-free empirical NTK: operator, randomised estimators, spectra, linearised training and dense references
(pure JAX)."""

from ntksearch.ntk.estimators import QUANTITIES, Estimate, NonFiniteModelError, ntk_metrics
from ntksearch.ntk.exact import ExactNTKStats, exact_jacobian, exact_ntk, exact_ntk_stats
from ntksearch.ntk.linearised import LinearisedKernel, LinearisedMetrics, linearise_kernel, linearised_metrics
from ntksearch.ntk.operator import NTKOperator, jvp_batch, kvp_batch, vjp_batch
from ntksearch.ntk.options import METHODS, LinearisedOptions, NTKOptions
from ntksearch.ntk.structured import StructuredKernel, structured_kernel, structured_pays

__all__ = [
    "METHODS",
    "QUANTITIES",
    "Estimate",
    "ExactNTKStats",
    "LinearisedKernel",
    "LinearisedMetrics",
    "LinearisedOptions",
    "NTKOperator",
    "NTKOptions",
    "NonFiniteModelError",
    "StructuredKernel",
    "exact_jacobian",
    "exact_ntk",
    "exact_ntk_stats",
    "jvp_batch",
    "kvp_batch",
    "linearise_kernel",
    "linearised_metrics",
    "ntk_metrics",
    "structured_kernel",
    "structured_pays",
    "vjp_batch",
]
