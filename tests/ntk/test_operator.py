"""NTKOperator products against the dense Jacobian."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntksearch.ntk import NTKOperator, exact_jacobian
from ntksearch.ntk.operator import adjoint_images, images, smaller_side
from tests.ntk.problems import make_mlp


def test_products_match_dense_jacobian(problem):
    op = NTKOperator.create(problem.apply_fn, problem.params, problem.x)
    jac = np.asarray(exact_jacobian(problem.apply_fn, problem.params, problem.x))
    assert jac.shape == (op.n, op.p)
    key_v, key_u = jax.random.split(jax.random.PRNGKey(7))
    v = jax.random.normal(key_v, (3, op.p))
    u = jax.random.normal(key_u, (3, op.n))
    np.testing.assert_allclose(op.jvp(v), v @ jac.T, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(op.vjp(u), u @ jac, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(op.matvec(u), u @ jac @ jac.T, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(op.matvec(u[0]), jac @ (jac.T @ u[0]), rtol=1e-10, atol=1e-9)
    assert op.jvp(v[0]).shape == (op.n,)
    assert op.vjp(u[0]).shape == (op.p,)


def test_side_images_and_gram_products(problem):
    op = NTKOperator.create(problem.apply_fn, problem.params, problem.x)
    jac = np.asarray(exact_jacobian(problem.apply_fn, problem.params, problem.x))
    for side, dim, gram in (("state", op.n, jac @ jac.T), ("param", op.p, jac.T @ jac)):
        w = jax.random.normal(jax.random.PRNGKey(1), (2, dim))
        img = images(side, problem.apply_fn, problem.params, problem.x, w)
        np.testing.assert_allclose(
            adjoint_images(side, problem.apply_fn, problem.params, problem.x, img), w @ gram,
            rtol=1e-9, atol=1e-9,
        )
    assert smaller_side(op.n, op.p) == ("state" if op.n <= op.p else "param")


def test_float32_by_default():
    with jax.enable_x64(False):
        prob = make_mlp()
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), prob.params)
        op = NTKOperator.create(prob.apply_fn, params, prob.x.astype(jnp.float32))
        assert op.dtype == jnp.float32
        assert op.matvec(jnp.ones(op.n)).dtype == jnp.float32


@pytest.mark.parametrize("shape", [(16, 4), (4, 16)])
def test_any_output_shape_is_flattened(shape):
    prob = make_mlp()
    reshape = lambda p, x: prob.apply_fn(p, x).reshape(shape)
    op = NTKOperator.create(reshape, prob.params, prob.x)
    assert (op.n, op.out_shape) == (64, shape)


@pytest.mark.parametrize(
    ("apply_fn", "params", "match"),
    [
        (lambda p, x: x @ p["w"] * p["n"], {"w": jnp.ones((6, 4)), "n": 3},
         r"params\['n'\] is a Python int \(3\), not an array"),
        (lambda p, x: x @ p["w"] + p["i"], {"w": jnp.ones((6, 4)), "i": jnp.arange(4)},
         r"params\['i'\] has dtype int\d+ \(shape \(4,\)\), which has no derivative"),
        (lambda p, x: x @ p["w"], {}, "params has no array leaves"),
        (lambda p, x: (x @ p["w"], x), {"w": jnp.ones((6, 4))}, "returned a tuple of 2 items; the NTK needs one array"),
        (lambda p, x: jnp.round(x @ p["w"]).astype(int), {"w": jnp.ones((6, 4))}, "returned an integer array"),
    ],
    ids=["python-int-leaf", "integer-array-leaf", "empty-params", "tuple-output", "integer-output"],
)
def test_unusable_models_are_refused_with_a_clear_message(apply_fn, params, match):
    from ntksearch.ntk import ntk_metrics
    from ntksearch.ntk.spectra import lambda_max

    x = jnp.ones((3, 6))
    with pytest.raises(ValueError, match=match):
        NTKOperator.create(apply_fn, params, x)
    with pytest.raises(ValueError, match=match):
        ntk_metrics(apply_fn, params, x, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=match):
        lambda_max(apply_fn, params, x, key=jax.random.PRNGKey(0))
