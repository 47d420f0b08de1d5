"""Dense reference computations: the full Jacobian and NTK, for small models, tests and benchmarks.

These form J ∈ Rⁿˣᵖ (and K = J Jᵀ ∈ Rⁿˣⁿ) explicitly, so memory is O(n·p + n²). Use them to check the
matrix-free estimators in :mod:`ntksearch.ntk.estimators`, never inside a search.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from ntksearch.ntk.operator import ApplyFn, Array, Params, flat_model

__all__ = ["ExactNTKStats", "exact_jacobian", "exact_ntk", "exact_ntk_stats"]


def exact_jacobian(apply_fn: ApplyFn, params: Params, x: Array) -> Array:
    """J = ∂ vec(apply_fn(params, x)) / ∂θ as a dense (n, p) array.

    Uses reverse mode (n VJPs) when n ≤ p and forward mode (p JVPs) otherwise.
    """
    f, theta = flat_model(apply_fn, params, x)
    n = int(np.prod(jax.eval_shape(f, theta).shape))
    jac = jax.jacrev(f) if n <= theta.size else jax.jacfwd(f)
    return jax.jit(jac)(theta)


def exact_ntk(apply_fn: ApplyFn, params: Params, x: Array) -> Array:
    """The empirical NTK K = J Jᵀ as a dense (n, n) array (n = size of the flattened output)."""
    jac = exact_jacobian(apply_fn, params, x)
    return jac @ jac.T


@dataclass(frozen=True)
class ExactNTKStats:
    """Exact NTK quantities computed from the dense kernel (see :func:`exact_ntk_stats`)."""

    trace: float
    frobenius: float
    effective_rank: float
    lambda_max: float
    label_alignment: float | None
    label_alignment_centred: float | None


def exact_ntk_stats(apply_fn: ApplyFn, params: Params, x: Array, y: Array | None = None) -> ExactNTKStats:
    """tr K, ‖K‖_F, tr(K)²/tr(K²), λ_max(K) and the label alignments yᵀKy / (‖K‖_F ‖y‖²), densely.

    ``label_alignment_centred`` uses y minus its mean over the batch axis (axis 0). Computed in float64
    numpy from the dense kernel, whatever the model's dtype.
    """
    kernel = np.asarray(exact_ntk(apply_fn, params, x), dtype=np.float64)
    tr = float(np.trace(kernel))
    fro = float(np.linalg.norm(kernel))
    lam = float(np.linalg.eigvalsh(kernel)[-1])
    align = align_c = None
    if y is not None:
        y = np.asarray(y, dtype=np.float64)
        align = _alignment(kernel, y.ravel(), fro)
        align_c = _alignment(kernel, (y - y.mean(axis=0, keepdims=True)).ravel(), fro)
    return ExactNTKStats(tr, fro, tr**2 / fro**2, lam, align, align_c)


def _alignment(kernel: np.ndarray, y: np.ndarray, fro: float) -> float:
    """yᵀKy / (‖K‖_F ‖y‖²); NaN when K or y is zero."""
    denom = fro * (y @ y)
    return float(y @ kernel @ y / denom) if denom > 0 else float("nan")

