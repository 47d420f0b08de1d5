"""Dense reference computations: the full Jacobian and NTK, for small models, tests and benchmarks.

These form J ∈ Rⁿˣᵖ (and K = J Jᵀ ∈ Rⁿˣⁿ) explicitly, so memory is O(n·p + n²). Use them to check the
matrix-free estimators in :mod:`ntksearch.ntk.estimators` and :mod:`ntksearch.ntk.linearised`, never inside a
search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from ntksearch.ntk.operator import ApplyFn, Array, Params, flat_model

__all__ = ["ExactNTKStats", "dense_linearised_metrics", "exact_jacobian", "exact_linearised_metrics", "exact_ntk",
           "exact_ntk_stats"]


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



def dense_linearised_metrics(kernel: np.ndarray, residual: np.ndarray, cross: np.ndarray | None,
                             val_outputs: np.ndarray | None, val_labels: np.ndarray | None, *,
                             learning_rate: float | str = "auto", steps: int = 100, ridge: float = 1e-3,
                             lr_fraction: float = 0.5) -> dict[str, float]:
    """The linearised-training quantities of :mod:`ntksearch.ntk.linearised` (gradient descent, no momentum) by
    the eigendecomposition K_AA = U diag(λ) Uᵀ, in float64.

    Args:
      kernel: K_AA (NC, NC). residual: Y_A − f₀(A) (N, C). cross: K_BA (MC, NC), or None without a held-out batch.
      val_outputs: f₀(B) (M, C). val_labels: (M,) integers. learning_rate: η or ``auto`` (lr_fraction · 2N/λ_max).

    Returns:
      ``train_loss``, ``complexity`` and, with a held-out batch, ``val_loss``, ``val_accuracy``; plus
      ``learning_rate`` (η), ``lambda_max`` and ``trace``.
    """
    kernel = np.asarray(kernel, np.float64)
    n_ex, n_outputs = residual.shape[0], residual.size
    residual = np.asarray(residual, np.float64).ravel()
    lam, vecs = np.linalg.eigh(kernel)
    lam = np.maximum(lam, 0.0)
    eta = lr_fraction * 2 * n_ex / lam[-1] if learning_rate == "auto" else float(learning_rate)
    a = eta * lam / n_ex
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # 1 − p_t without cancellation at small a
        p = (1 - a) ** steps
        decayed = np.where(a < 1, -np.expm1(steps * np.log1p(-np.where(a < 1, a, 0.0))), 1 - p)
        h = np.where(lam > 0, decayed / lam, steps * eta / n_ex)
    coef = vecs.T @ residual
    rho = ridge * float(np.trace(kernel)) / n_outputs
    out = {"train_loss": float(np.sum((p * coef) ** 2)) / (2 * n_ex),
           "complexity": float(residual @ np.linalg.solve(kernel + rho * np.eye(n_outputs), residual)) / n_ex,
           "learning_rate": eta, "lambda_max": float(lam[-1]), "trace": float(np.trace(kernel))}
    if cross is not None:
        pred = val_outputs + (np.asarray(cross, np.float64) @ (vecs @ (h * coef))).reshape(val_outputs.shape)
        out["val_loss"] = float(np.sum((pred - np.eye(pred.shape[1])[val_labels]) ** 2)) / (2 * len(val_labels))
        out["val_accuracy"] = float(np.mean(np.argmax(pred, axis=1) == val_labels))
    return out


def exact_linearised_metrics(apply_fn: ApplyFn, params: Params, x_train: Array, y_train: Array,
                             x_val: Array | None = None, y_val: Array | None = None, **setting: Any
                             ) -> dict[str, float]:
    """:func:`dense_linearised_metrics` with J_A and J_B formed densely (small models only).

    y_train: one-hot (N, C); y_val: integer labels (M,). ``setting``: learning_rate, steps, ridge, lr_fraction.
    """
    j_a = np.asarray(exact_jacobian(apply_fn, params, x_train), np.float64)
    outputs = np.asarray(apply_fn(params, x_train), np.float64)
    residual = np.asarray(y_train, np.float64) - outputs
    if x_val is None:
        return dense_linearised_metrics(j_a @ j_a.T, residual, None, None, None, **setting)
    j_b = np.asarray(exact_jacobian(apply_fn, params, x_val), np.float64)
    return dense_linearised_metrics(j_a @ j_a.T, residual, j_b @ j_a.T,
                                    np.asarray(apply_fn(params, x_val), np.float64), np.asarray(y_val), **setting)
