"""Extreme eigenvalues of the empirical NTK by matrix-free Lanczos.

λ_max(K) = λ_max(J Jᵀ) = λ_max(JᵀJ) = σ_max(J)², so Lanczos runs on the smaller of the two Gram matrices
(A = K when n ≤ p, A = JᵀJ otherwise); each iteration is one product A v (one JVP and one VJP).

With full reorthogonalisation, after k steps the largest Ritz value θ of the tridiagonal T_k satisfies
θ ≤ λ_max, and the residual r = A s − θ s of its Ritz vector s has the computable norm β_k |e_kᵀ y|, which
bounds the distance from θ to an eigenvalue of A (|λ − θ| ≤ ‖r‖). For NTKs at initialisation the top
eigenvalue is usually well separated (the "mean" mode), so a handful of iterations reach ‖r‖ ≤ 10⁻³ θ.

Each iteration is one call of the compiled product kernel (:func:`ntksearch.ntk.estimators.probe_products`,
shared with the trace estimators); the reorthogonalisation and the tiny tridiagonal eigenproblem run on the
host in float64. (An XLA loop would be tidier, but XLA:CPU runs convolutions inside loops ~70× slower.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from threadpoolctl import threadpool_limits

from ntksearch.ntk.estimators import Estimate, NonFiniteModelError, probe_products
from ntksearch.ntk.operator import ApplyFn, Array, NTKOperator, Params, smaller_side

__all__ = ["lambda_max", "top_ritz"]


def top_ritz(alphas: np.ndarray, betas: np.ndarray) -> tuple[float, float]:
    """Top Ritz value θ of the Lanczos tridiagonal (diagonal α, off-diagonal β₀…β_{k−2}) and its residual
    norm β_{k−1} |y_{k−1}| (y the unit eigenvector of θ)."""
    k = len(alphas)
    tri = np.diag(alphas) + np.diag(betas[: k - 1], 1) + np.diag(betas[: k - 1], -1)
    evals, evecs = np.linalg.eigh(tri)
    return float(evals[-1]), float(betas[k - 1] * abs(evecs[k - 1, -1]))


def lambda_max(
    apply_fn: ApplyFn,
    params: Params,
    x: Array,
    *,
    key: Array,
    max_iters: int = 30,
    rtol: float = 1e-3,
) -> Estimate:
    """Largest eigenvalue of the empirical NTK of ``apply_fn`` at ``(params, x)``.

    Args:
      key: PRNG key for the Lanczos start vector.
      max_iters: Lanczos steps at most (each: one JVP + one VJP); capped at min(n, p).
      rtol: stop once the Ritz residual norm ‖A s − θ s‖ ≤ rtol · θ (``converged``).

    Returns:
      An :class:`Estimate` whose ``value`` is the top Ritz value θ (a lower bound on λ_max) and whose
      ``stderr`` is the residual norm ‖A s − θ s‖ (a deterministic a-posteriori error bound, not a
      statistical standard error); ``converged`` tells whether ``rtol`` was met.
    """
    if max_iters < 1:
        raise ValueError(f"max_iters must be ≥ 1, got {max_iters}")
    op = NTKOperator.create(apply_fn, params, x)
    side, dim = smaller_side(op.n, op.p), min(op.n, op.p)
    iters = min(max_iters, dim)
    dtype = np.dtype(op.dtype)
    gram = lambda v: np.asarray(probe_products(apply_fn, params, x, jnp.asarray(v[None], dtype), side=side,
                                               adjoint=True).adjoint[0], np.float64)
    v = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist()).standard_normal(dim)
    basis = [v / np.linalg.norm(v)]
    alphas: list[float] = []
    betas: list[float] = []
    theta = resid = 0.0
    with threadpool_limits(1, user_api="blas"):
        for _ in range(iters):
            w = gram(basis[-1])
            if not np.all(np.isfinite(w)):
                raise NonFiniteModelError("the NTK product is not finite; λ_max is undefined")
            alphas.append(float(w @ basis[-1]))
            stacked = np.stack(basis)
            for _ in range(2):  # full reorthogonalisation, twice is enough
                w = w - stacked.T @ (stacked @ w)
            beta = float(np.linalg.norm(w))
            breakdown = beta <= 1e-12 * max(abs(alphas[0]), 1e-300)  # invariant subspace: θ is exact
            betas.append(0.0 if breakdown else beta)
            theta, resid = top_ritz(np.asarray(alphas), np.asarray(betas))
            if breakdown or resid <= rtol * abs(theta):
                break
            basis.append(w / beta)
    n = len(alphas)
    return Estimate(theta, resid, 0.0, "lanczos", n, n, n, resid <= rtol * abs(theta))
