r"""Lanczos on the empirical NTK from a given start vector, with Gauss(–Radau) quadrature and the trace of K.

Notation: K ∈ Rⁿˣⁿ symmetric positive semi-definite (the empirical NTK J Jᵀ of a batch), r ∈ Rⁿ a start vector.

**Lanczos with full reorthogonalisation.** Step j takes the product K q_j of the newest basis vector (one VJP
and one JVP, computed by the caller) and orthogonalises it twice against every basis vector ("twice is
enough"), so Q_k = [q₁ … q_k] (q₁ = r/‖r‖) stays orthonormal to rounding and spans the Krylov space
span{r, Kr, …, K^{k−1}r}. T_k = Q_kᵀ K Q_k is filled from the stored products (tridiagonal up to rounding) and
β_k = ‖(I − Q_kQ_kᵀ) K q_k‖ couples it to the next vector. Vectors are n long, so the host keeps Q and KQ
(2nk numbers, float64). If β_k vanishes, the space is invariant (r lies in k eigendirections of K): the run
goes on from a random vector orthogonal to Q, so the basis keeps growing towards Rⁿ without touching the
block of T_k that belongs to r.

**Quadrature.** With T_k = S diag(θ) Sᵀ (Ritz values θᵢ) and weights wᵢ = ‖r‖² S₁ᵢ²,

    rᵀ f(K) r ≈ Σᵢ wᵢ f(θᵢ)                  k-point Gauss quadrature, exact for polynomials of degree < 2k,
    f(K) r    ≈ ‖r‖ Q_k S f(θ) S₁,:ᵀ           the Lanczos approximation, exact for degree < k.

For f whose derivatives alternate in sign (f(λ) = 1/(λ + ρ)), Gauss underestimates rᵀf(K)r and the (k+1)-point
Gauss–Radau rule with one node fixed at a ≤ λ_min(K) overestimates it (Golub & Meurant 1994): the two bracket
the true value (:func:`gauss_radau`, a = 0 or just below for a PSD K).

**Trace.** tr K is estimated with the Lanczos basis as the deflation block (the idea of Hutch++, with a Krylov
basis): tr K = tr T_k + tr(ΠKΠ), Π = I − Q_kQ_kᵀ, and for Rademacher probes z drawn independently of Q,

    zᵀΠKΠz = zᵀKz − 2 (Q_kᵀz)·((KQ_k)ᵀz) + (Q_kᵀz)ᵀ T_k (Q_kᵀz)

is an unbiased sample of tr(ΠKΠ) that needs only zᵀKz = ‖Jᵀz‖² (one VJP) and the stored products. The
estimate's standard error is the samples' standard deviation / √m; it is exactly zero once Q spans Rⁿ. The
projections Q_kᵀz and (KQ_k)ᵀz are kept up to date as vectors and probes arrive (O(n) per pair).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Lanczos", "gauss_radau", "ritz"]

_BREAKDOWN = 1e-10  # β_k below this fraction of max |T_k| means an invariant subspace: restart


def ritz(tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ritz values θ (k,) of the symmetric ``tri`` (clipped at 0: K is PSD) and its eigenvectors S (k, k); the
    first row S₁,: holds the square roots of the Gauss weights (divided by ‖r‖)."""
    theta, vectors = np.linalg.eigh((tri + tri.T) / 2)
    return np.maximum(theta, 0.0), vectors


def gauss_radau(tri: np.ndarray, beta: float, node: float) -> np.ndarray:
    """The (k+1) × (k+1) Jacobi matrix of the Gauss–Radau rule with a node fixed at ``node`` (< every Ritz value):
    T_k bordered by β_k, with last diagonal entry ω = node + δ_k where (T_k − node·I) δ = β_k² e_k."""
    k = tri.shape[0]
    e_k = np.zeros(k)
    e_k[-1] = beta**2
    delta = np.linalg.solve(tri - node * np.eye(k), e_k)
    out = np.zeros((k + 1, k + 1))
    out[:k, :k] = tri
    out[k, k - 1] = out[k - 1, k] = beta
    out[k, k] = node + delta[-1]
    return out


class Lanczos:
    """A growing Lanczos basis of K with its products, T_k, the couplings β and the trace probes (host, float64).

    Args:
      n: the dimension of K. max_steps: the most basis vectors (capped at n). max_probes: the most trace probes.
      rng: draws restart vectors (independent of the probes, which the caller draws).
    """

    def __init__(self, n: int, max_steps: int, max_probes: int, rng: np.random.Generator):
        cap = min(max_steps, n)
        self.n, self.k, self.m, self.rng = n, 0, 0, rng
        self.basis, self.products = np.zeros((n, cap)), np.zeros((n, cap))
        self.tri, self.betas = np.zeros((cap, cap)), np.zeros(cap)
        self.probes = np.zeros((max_probes, n), np.int8)
        self.quads = np.zeros(max_probes)
        self.probe_basis, self.probe_products = np.zeros((cap, max_probes)), np.zeros((cap, max_probes))

    @property
    def full(self) -> bool:
        """Whether the basis spans Rⁿ (every quantity is then exact up to rounding)."""
        return self.k == self.n

    def add_probes(self, probes: np.ndarray, quads: np.ndarray) -> None:
        """Record Rademacher probes z (m, n) with their quadratic forms zᵀKz (m,)."""
        m = probes.shape[0]
        span = slice(self.m, self.m + m)
        self.probes[span], self.quads[span] = probes, quads
        self.probe_basis[: self.k, span] = self.basis[:, : self.k].T @ probes.T
        self.probe_products[: self.k, span] = self.products[:, : self.k].T @ probes.T
        self.m += m

    def extend(self, vector: np.ndarray, product: np.ndarray) -> np.ndarray:
        """Append the unit ``vector`` q_k (orthogonal to the basis) and its ``product`` K q_k; return the next unit
        vector (K q_k orthogonalised, or a random restart after a breakdown). Records β_k."""
        k = self.k
        self.basis[:, k], self.products[:, k] = vector, product
        column = self.basis[:, : k + 1].T @ product
        self.tri[: k + 1, k] = self.tri[k, : k + 1] = column
        self.probe_basis[k, : self.m] = self.probes[: self.m] @ vector
        self.probe_products[k, : self.m] = self.probes[: self.m] @ product
        self.k = k + 1
        if self.full:
            return np.zeros(self.n)
        residual = self._orthogonal(product - self.basis[:, : k + 1] @ column)
        self.betas[k] = beta = float(np.linalg.norm(residual))
        if beta <= _BREAKDOWN * np.max(np.abs(self.tri[: k + 1, : k + 1])):
            residual = self._orthogonal(self.rng.standard_normal(self.n))
        return residual / np.linalg.norm(residual)

    def _orthogonal(self, vector: np.ndarray) -> np.ndarray:
        """``vector`` with its components along the basis removed, twice."""
        basis = self.basis[:, : self.k]
        for _ in range(2):
            vector = vector - basis @ (basis.T @ vector)
        return vector

    def trace(self) -> tuple[float, float]:
        """(estimate, standard error) of tr K: tr T_k plus the probes' deflated residual (module docstring)."""
        k, m = self.k, self.m
        proj, proj_k = self.probe_basis[:k, :m], self.probe_products[:k, :m]
        tri = self.tri[:k, :k]
        samples = self.quads[:m] - 2 * np.sum(proj * proj_k, axis=0) + np.sum(proj * (tri @ proj), axis=0)
        if self.full or m == 0:
            return float(np.trace(tri)), 0.0 if self.full else math.inf
        stderr = float(np.std(samples, ddof=1) / math.sqrt(m)) if m > 1 else math.inf
        return float(np.trace(tri) + np.mean(samples)), stderr
