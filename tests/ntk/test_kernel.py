"""The product kernel: dense-Jacobian products against AD products, and the choice between them."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ntksearch.ntk.jacobian import dense_jacobian
from ntksearch.ntk.kernel import ProbeKernel, dense_point, dense_probe_products, gram_norms, probe_products
from tests.ntk.problems import cnn_apply, make_cnn, make_mlp


@pytest.mark.parametrize("side", ["state", "param"])
@pytest.mark.parametrize("adjoint", [False, True])
def test_dense_products_equal_ad_products(problem, side, adjoint):
    outputs, jac = dense_jacobian(problem.apply_fn, problem.params, problem.x)
    dim = jac.shape[0] if side == "state" else jac.shape[1]
    z = jax.random.normal(jax.random.PRNGKey(3), (5, dim))
    dense = dense_probe_products(jac, outputs, z, side=side, adjoint=adjoint)
    ad = probe_products(problem.apply_fn, problem.params, problem.x, z, side=side, adjoint=adjoint)
    for name in ("images", "adjoint", "image_norm", "adjoint_norm", "cosines", "outputs"):
        np.testing.assert_allclose(getattr(dense, name), getattr(ad, name), rtol=1e-10, atol=1e-12, err_msg=name)
    assert int(dense.n_nonfinite) == 0


def test_kernel_takes_the_dense_path_only_where_it_pays_and_is_valid():
    cnn, mlp = make_cnn(), make_mlp()
    kernel = lambda prob, **kw: ProbeKernel(prob.apply_fn, prob.params, prob.x, side="state", block_size=4, dim=3,
                                            mesh=None, **kw)
    assert kernel(cnn).dense and not kernel(mlp).dense
    assert not kernel(cnn, point=None).dense
    coupled = cnn._replace(apply_fn=lambda p, x: cnn_apply(p, x - x.mean(axis=0, keepdims=True)))
    assert dense_point(cnn.apply_fn, cnn.params, cnn.x, None) is not None
    assert dense_point(coupled.apply_fn, coupled.params, coupled.x, None) is None  # fails the independence check
    assert not kernel(coupled).dense


def test_gram_norms_give_the_exact_traces(problem):
    _, jac = dense_jacobian(problem.apply_fn, problem.params, problem.x)
    k = np.asarray(jac @ jac.T)
    for side, square in (("state", True), ("param", True), ("state", False)):
        norms = np.asarray(gram_norms(jac, side=side, square=square))
        np.testing.assert_allclose(norms[0] ** 2, np.trace(k), rtol=1e-12)
        np.testing.assert_allclose(norms[1] ** 2, np.sum(k**2) if square else 0.0, rtol=1e-12)
