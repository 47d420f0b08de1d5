"""Dense references for the linearised-training tests: K_AA, K_BA and r₀ from the full Jacobians, the definitions
by the eigendecomposition of K_AA (:mod:`ntksearch.ntk.exact`), and heavy-ball gradient descent run step by step
in function space (independent of both)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from ntksearch.ntk import exact_jacobian
from ntksearch.ntk.exact import dense_linearised_metrics
from tests.ntk.problems import Problem


class Dense(NamedTuple):
    """The dense objects of a problem with a held-out batch."""

    kernel: np.ndarray  # K_AA (NC, NC)
    cross: np.ndarray  # K_BA (MC, NC)
    residual: np.ndarray  # r₀ (NC,)
    val_outputs: np.ndarray  # f₀(B) (M, C)
    val_labels: np.ndarray  # (M,)


def dense(problem: Problem, x_val, y_val) -> Dense:
    j_a = np.asarray(exact_jacobian(problem.apply_fn, problem.params, problem.x), np.float64)
    j_b = np.asarray(exact_jacobian(problem.apply_fn, problem.params, x_val), np.float64)
    f0 = np.asarray(problem.apply_fn(problem.params, problem.x), np.float64)
    return Dense(j_a @ j_a.T, j_b @ j_a.T, (np.asarray(problem.y) - f0).ravel(),
                 np.asarray(problem.apply_fn(problem.params, x_val), np.float64), np.asarray(y_val))


def dense_metrics(d: Dense, eta: float, steps: int, ridge: float) -> dict[str, float]:
    """The definitions at one gradient-descent setting (:func:`ntksearch.ntk.exact.dense_linearised_metrics`)."""
    return dense_linearised_metrics(d.kernel, d.residual.reshape(len(d.residual) // d.val_outputs.shape[1], -1),
                                    d.cross, d.val_outputs, d.val_labels, learning_rate=eta, steps=steps, ridge=ridge)


def simulate(d: Dense, eta: float, steps: int, momentum: float) -> tuple[float, float]:
    """(train_loss, val_loss) by running heavy-ball gradient descent on the linearised model in function space:
    θ_s − θ₀ = J_Aᵀ a_s with a_{s+1} = a_s + β(a_s − a_{s−1}) + (η/N)(r₀ − K_AA a_s)."""
    n_ex = d.residual.size // d.val_outputs.shape[1]
    a = previous = np.zeros_like(d.residual)
    for _ in range(steps):
        a, previous = a + momentum * (a - previous) + eta / n_ex * (d.residual - d.kernel @ a), a
    r = d.residual - d.kernel @ a
    pred = d.val_outputs + (d.cross @ a).reshape(d.val_outputs.shape)
    target = np.eye(d.val_outputs.shape[1])[d.val_labels]
    return float(r @ r) / (2 * n_ex), float(np.sum((pred - target) ** 2)) / (2 * len(target))


def held_out(problem: Problem) -> tuple[jax.Array, np.ndarray]:
    """Other examples of the training batch's shape (reversed, rescaled and shifted) with labels 0, 1, …, C − 1, …"""
    n_ex, n_classes = problem.y.shape
    return problem.x[::-1] * 0.8 + 0.1, np.arange(n_ex) % n_classes
