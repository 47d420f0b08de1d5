"""Extreme eigenvalues of the empirical NTK by matrix-free Lanczos.

λ_max(K) = λ_max(J Jᵀ) = λ_max(JᵀJ) = σ_max(J)², so Lanczos runs on the smaller of the two Gram matrices
(A = K when n ≤ p, A = JᵀJ otherwise); each iteration is one product A v (one JVP and one VJP).

With full reorthogonalisation, after k steps the largest Ritz value θ of the tridiagonal T_k satisfies
θ ≤ λ_max, and the residual r = A s − θ s of its Ritz vector s has the computable norm β_k |e_kᵀ y|, which
bounds the distance from θ to an eigenvalue of A (|λ − θ| ≤ ‖r‖). For NTKs at initialisation the top
eigenvalue is usually well separated (the "mean" mode), so a handful of iterations reach ‖r‖ ≤ 10⁻³ θ.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ntksearch.ntk.estimators import Estimate
from ntksearch.ntk.operator import ApplyFn, Array, NTKOperator, Params, adjoint_images, images, smaller_side

__all__ = ["lambda_max"]


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
      rtol: stop when the Ritz residual norm ‖A s − θ s‖ ≤ rtol · θ.

    Returns:
      An :class:`Estimate` whose ``value`` is the top Ritz value θ (a lower bound on λ_max) and whose
      ``stderr`` is the residual norm ‖A s − θ s‖ (a deterministic a-posteriori error bound, not a
      statistical standard error); ``converged`` tells whether ``rtol`` was met.
    """
    if max_iters < 1:
        raise ValueError(f"max_iters must be ≥ 1, got {max_iters}")
    op = NTKOperator.create(apply_fn, params, x)
    side = smaller_side(op.n, op.p)
    dim = min(op.n, op.p)
    steps = min(max_iters, dim)

    def gram_product(v: Array) -> Array:
        return adjoint_images(side, apply_fn, params, x, images(side, apply_fn, params, x, v[None]))[0]

    v = jax.random.normal(key, (dim,), op.dtype)
    basis = [v / jnp.linalg.norm(v)]
    alphas: list[float] = []
    betas: list[float] = []
    theta = resid = 0.0
    converged = False
    for _ in range(steps):
        w = gram_product(basis[-1])
        alphas.append(float(w @ basis[-1]))
        stacked = jnp.stack(basis)
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - stacked.T @ (stacked @ w)
        beta = float(jnp.linalg.norm(w))
        evals, evecs = np.linalg.eigh(_tridiagonal(alphas, betas))
        theta, resid = float(evals[-1]), beta * abs(float(evecs[-1, -1]))
        if not np.isfinite(theta):
            break
        if resid <= rtol * abs(theta) or beta <= 1e-12 * max(abs(theta), 1e-30):
            converged = True
            break
        betas.append(beta)
        basis.append(w / beta)
    n_iter = len(alphas)
    n_jvp, n_vjp = n_iter, n_iter
    return Estimate(theta, resid, 0.0, "lanczos", n_jvp, n_vjp, n_iter, converged)


def _tridiagonal(alphas: list[float], betas: list[float]) -> np.ndarray:
    k = len(alphas)
    t = np.diag(np.asarray(alphas, dtype=np.float64))
    if k > 1:
        off = np.asarray(betas[: k - 1], dtype=np.float64)
        t += np.diag(off, 1) + np.diag(off, -1)
    return t
