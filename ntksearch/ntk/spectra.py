"""The largest eigenvalue of the empirical NTK by matrix-free block Krylov iteration.

λ_max(K) = λ_max(J Jᵀ) = λ_max(JᵀJ) = σ_max(J)², so the iteration runs on the smaller of the two Gram
matrices (A = K when n ≤ p, A = JᵀJ otherwise, d = min(n, p)); one product A v costs one JVP and one VJP.

**Block Krylov with Rayleigh–Ritz.** Start from a random orthonormal block V₀ ∈ Rᵈˣᵇ; step j multiplies the
newest block, W = A Vⱼ, and extends the orthonormal basis Q = [V₀ … Vⱼ] of the Krylov space
span{V₀, A V₀, …, Aʲ V₀} with Vⱼ₊₁ = orth((I − QQᵀ) W) (full reorthogonalisation). Rayleigh–Ritz on Q uses the
stored products exactly: H = Qᵀ(AQ), θ = λ_max(H), Ritz vector s = Q y, and the residual
r = (AQ) y − θ s. Then θ ≤ λ_max, and ‖r‖ bounds the distance from θ to an eigenvalue of A
(|λ − θ| ≤ ‖r‖). b = 1 is plain Lanczos; a block converges in fewer steps (the gap that matters is to the
(b+1)-th eigenvalue) and, more to the point on CPU, its products are one call of the compiled kernel the
trace estimators already compiled for this model (:func:`ntksearch.ntk.estimators.probe_products` with the
same side and block size b = 16), so λ_max costs no compilation of its own. For NTKs at initialisation the
top eigenvalue is usually well separated (the "mean" mode): 2–3 blocks reach ‖r‖ ≤ 10⁻³ θ.

The small dense linear algebra runs on the host in float64. (An XLA loop would be tidier, but XLA:CPU runs
convolutions inside loops ~70× slower.)
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from ntksearch.ntk.estimators import Estimate, NonFiniteModelError, ProbeKernel, host_rng, probe_mesh
from ntksearch.ntk.kernel import prepare_kernel
from ntksearch.ntk.operator import ApplyFn, Array, NTKOperator, Params, smaller_side
from ntksearch.ntk.options import CompileMode, NTKOptions

__all__ = ["DEFAULT_BLOCK_SIZE", "lambda_max", "rayleigh_ritz_top"]

DEFAULT_BLOCK_SIZE = 16  # the trace estimators' block size at their default budgets: their kernel is reused
_DEFAULTS = NTKOptions()  # max_iters and rtol default to its lanczos_iters and lanczos_rtol


def rayleigh_ritz_top(basis: np.ndarray, images: np.ndarray) -> tuple[float, float]:
    """Top Ritz value θ of A on the orthonormal ``basis`` Q (d, k), given ``images`` AQ (d, k), and the norm of
    its residual ‖(AQ) y − θ Q y‖ (y the unit eigenvector of θ of H = Qᵀ(AQ))."""
    h = basis.T @ images
    evals, evecs = np.linalg.eigh((h + h.T) / 2)
    y = evecs[:, -1]
    return float(evals[-1]), float(np.linalg.norm(images @ y - evals[-1] * (basis @ y)))


def _orthonormal_complement(block: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Orthonormal columns spanning (I − QQᵀ) block, orthogonal to ``basis`` Q (projected and QR'd twice)."""
    for _ in range(2):
        block = np.linalg.qr(block - basis @ (basis.T @ block))[0]
    return block


def lambda_max(
    apply_fn: ApplyFn,
    params: Params,
    x: Array,
    *,
    key: Array,
    max_iters: int = _DEFAULTS.lanczos_iters,
    rtol: float = _DEFAULTS.lanczos_rtol,
    block_size: int = DEFAULT_BLOCK_SIZE,
    compile_mode: CompileMode = _DEFAULTS.compile_mode,
) -> Estimate:
    """Largest eigenvalue of the empirical NTK of ``apply_fn`` at ``(params, x)`` (block Krylov, see above).

    ``max_iters`` and ``rtol`` default to :class:`NTKOptions`' ``lanczos_iters`` and ``lanczos_rtol``
    (``lambda_max(..., **options.spectrum_arguments())`` runs at given options).

    Args:
      key: PRNG key for the starting block.
      max_iters: block steps at most (each: b JVPs + b VJPs); the basis never exceeds d = min(n, p) vectors.
      rtol: stop once the Ritz residual norm ‖A s − θ s‖ ≤ rtol · θ (``converged``).
      block_size: b, vectors per step (capped at d).
      compile_mode: how the products compile (:mod:`ntksearch.ntk.compile`).

    Returns:
      An :class:`Estimate` whose ``value`` is the top Ritz value θ (a lower bound on λ_max) and whose
      ``stderr`` is the residual norm ‖A s − θ s‖ (a deterministic a-posteriori error bound, not a
      statistical standard error); ``converged`` tells whether ``rtol`` was met.
    """
    if max_iters < 1:
        raise ValueError(f"max_iters must be ≥ 1, got {max_iters}")
    if block_size < 1:
        raise ValueError(f"block_size must be ≥ 1, got {block_size}")
    op = NTKOperator.create(apply_fn, params, x)
    side, dim = smaller_side(op.n, op.p), min(op.n, op.p)
    b = min(block_size, dim)
    mesh = probe_mesh()
    setup = prepare_kernel(apply_fn, params, x, mesh, compile_mode)
    kernel = ProbeKernel(apply_fn, params, x, side=side, block_size=b, dim=dim, mesh=mesh, point=setup.point,
                         fast_compile=setup.fast_compile)

    def gram(block: np.ndarray) -> np.ndarray:  # (d, k ≤ b) → A block, via one call of the shared kernel
        images = np.asarray(kernel(block.T, adjoint=True).adjoint, np.float64)[: block.shape[1]].T
        if not np.all(np.isfinite(images)):
            raise NonFiniteModelError("the NTK product is not finite; λ_max is undefined")
        return images

    rng = host_rng(key)
    basis, images = np.zeros((dim, 0)), np.zeros((dim, 0))
    block = _orthonormal_complement(rng.standard_normal((dim, b)), basis)
    theta = resid = 0.0
    with threadpool_limits(1, user_api="blas"):
        for _ in range(max_iters):
            new = gram(block)
            basis, images = np.hstack([basis, block]), np.hstack([images, new])
            theta, resid = rayleigh_ritz_top(basis, images)
            width = min(b, dim - basis.shape[1])
            if resid <= rtol * abs(theta) or width == 0:
                break
            block = _orthonormal_complement(new[:, :width], basis)
    count = basis.shape[1]
    return Estimate(theta, resid, 0.0, "block-krylov", count, count, count, resid <= rtol * abs(theta))
