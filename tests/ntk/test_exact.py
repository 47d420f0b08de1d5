"""Dense references: the NTK of a linear model is known in closed form."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ntksearch.ntk import exact_jacobian, exact_ntk, exact_ntk_stats


def _linear(params, x):
    return x @ params["w"] + params["b"]


def test_linear_model_ntk_is_gram_kronecker_identity():
    # f(x)_a = Σ_k x_k W_ka + b_a  ⇒  K[(i,a),(j,b)] = (x_i·x_j + 1) δ_ab
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    expected = np.kron(np.asarray(x @ x.T) + 1.0, np.eye(2))
    np.testing.assert_allclose(exact_ntk(_linear, params, x), expected, rtol=1e-12, atol=1e-12)


def test_forward_and_reverse_jacobians_agree(problem):
    jac = exact_jacobian(problem.apply_fn, problem.params, problem.x)
    from jax.flatten_util import ravel_pytree

    theta, unravel = ravel_pytree(problem.params)
    f = lambda t: problem.apply_fn(unravel(t), problem.x).ravel()
    np.testing.assert_allclose(jac, jax.jacfwd(f)(theta), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jac, jax.jacrev(f)(theta), rtol=1e-10, atol=1e-12)


def test_stats_definitions(problem):
    kernel = np.asarray(exact_ntk(problem.apply_fn, problem.params, problem.x))
    stats = exact_ntk_stats(problem.apply_fn, problem.params, problem.x, problem.y)
    eig = np.linalg.eigvalsh(kernel)
    y = np.asarray(problem.y).ravel()
    assert np.isclose(stats.trace, eig.sum())
    assert np.isclose(stats.frobenius, np.sqrt((eig**2).sum()))
    assert np.isclose(stats.effective_rank, eig.sum() ** 2 / (eig**2).sum())
    assert np.isclose(stats.lambda_max, eig[-1])
    assert np.isclose(stats.label_alignment, y @ kernel @ y / (stats.frobenius * y @ y))
    assert -1.0 <= stats.label_alignment_centred <= 1.0
