"""Extreme eigenvalues of the empirical NTK by matrix-free Lanczos.

λ_max(K) = λ_max(J Jᵀ) = λ_max(JᵀJ) = σ_max(J)², so Lanczos runs on the smaller of the two Gram matrices
(A = K when n ≤ p, A = JᵀJ otherwise); each iteration is one product A v (one JVP and one VJP).

With full reorthogonalisation, after k steps the largest Ritz value θ of the tridiagonal T_k satisfies
θ ≤ λ_max, and the residual r = A s − θ s of its Ritz vector s has the computable norm β_k |e_kᵀ y|, which
bounds the distance from θ to an eigenvalue of A (|λ − θ| ≤ ‖r‖). For NTKs at initialisation the top
eigenvalue is usually well separated (the "mean" mode), so a handful of iterations reach ‖r‖ ≤ 10⁻³ θ.

The iteration is one compiled function (``max_iters`` steps of a ``lax.fori_loop``; a breakdown — an
invariant subspace, so θ is exact — zeroes the remaining steps), keyed on ``apply_fn``, the side, the dimension
and ``max_iters``. The tiny tridiagonal eigenproblem is solved on the host.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ntksearch.ntk.estimators import Estimate
from ntksearch.ntk.operator import ApplyFn, Array, NTKOperator, Params, linearize, smaller_side

__all__ = ["lambda_max", "lanczos_tridiagonal", "top_ritz"]


def top_ritz(alphas: np.ndarray, betas: np.ndarray) -> tuple[float, float]:
    """Top Ritz value θ of the Lanczos tridiagonal (diagonal α, off-diagonal β₀…β_{k−2}) and its residual
    norm β_{k−1} |y_{k−1}| (y the unit eigenvector of θ)."""
    k = len(alphas)
    tri = np.diag(alphas) + np.diag(betas[: k - 1], 1) + np.diag(betas[: k - 1], -1)
    evals, evecs = np.linalg.eigh(tri)
    return float(evals[-1]), float(betas[k - 1] * abs(evecs[k - 1, -1]))


@partial(jax.jit, static_argnames=("apply_fn", "side", "dim", "max_iters"))
def lanczos_tridiagonal(apply_fn: ApplyFn, params: Params, x: Array, key: Array, *, side: str, dim: int,
                        max_iters: int) -> tuple[Array, Array]:
    """Compiled Lanczos with full reorthogonalisation on A (K or JᵀJ): the tridiagonal's (α, β), each (k,)."""
    lin = linearize(apply_fn, params, x)
    dtype = lin.z.dtype
    gram = lambda v: lin.adjoint_images(side, lin.images(side, v[None]))[0]
    v0 = jax.random.normal(key, (dim,), dtype)
    basis = jnp.zeros((max_iters + 1, dim), dtype).at[0].set(v0 / jnp.linalg.norm(v0))

    def step(j: Array, state: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
        basis, alphas, betas = state
        v = basis[j]
        w = gram(v)
        alphas = alphas.at[j].set(w @ v)
        live = jnp.where((jnp.arange(max_iters + 1) <= j)[:, None], basis, 0.0)
        for _ in range(2):  # reorthogonalise against v_0..v_j, twice is enough
            w = w - live.T @ (live @ w)
        beta = jnp.linalg.norm(w)
        ok = beta > 1e-12 * jnp.maximum(jnp.abs(alphas[0]), jnp.finfo(dtype).tiny)
        betas = betas.at[j].set(jnp.where(ok, beta, 0.0))
        return basis.at[j + 1].set(jnp.where(ok, w / jnp.where(ok, beta, 1.0), 0.0)), alphas, betas

    zeros = jnp.zeros(max_iters, dtype)
    _, alphas, betas = jax.lax.fori_loop(0, max_iters, step, (basis, zeros, zeros))
    return alphas, betas


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
      max_iters: Lanczos steps (each: one JVP + one VJP); capped at min(n, p).
      rtol: ``converged`` means the Ritz residual norm ‖A s − θ s‖ ≤ rtol · θ.

    Returns:
      An :class:`Estimate` whose ``value`` is the top Ritz value θ (a lower bound on λ_max) and whose
      ``stderr`` is the residual norm ‖A s − θ s‖ (a deterministic a-posteriori error bound, not a
      statistical standard error); ``converged`` tells whether ``rtol`` was met.
    """
    if max_iters < 1:
        raise ValueError(f"max_iters must be ≥ 1, got {max_iters}")
    op = NTKOperator.create(apply_fn, params, x)
    dim = min(op.n, op.p)
    iters = min(max_iters, dim)
    alphas, betas = jax.device_get(lanczos_tridiagonal(apply_fn, params, x, key, side=smaller_side(op.n, op.p),
                                                       dim=dim, max_iters=iters))
    theta, resid = top_ritz(np.asarray(alphas, np.float64), np.asarray(betas, np.float64))
    return Estimate(theta, resid, 0.0, "lanczos", iters, iters, iters, resid <= rtol * abs(theta))
