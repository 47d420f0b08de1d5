"""Convolutions with patch-product weight gradients against JAX's own rule, in float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ntksearch.ntk.conv_grads import with_patch_conv_grads

CASES = [  # (lhs shape, rhs shape, dimension numbers, strides, padding, rhs dilation)
    ((2, 9, 9, 3), (3, 3, 3, 4), ("NHWC", "HWIO", "NHWC"), (1, 1), "SAME", (1, 1)),
    ((2, 9, 8, 3), (3, 2, 3, 4), ("NHWC", "HWIO", "NHWC"), (2, 3), "SAME", (1, 1)),
    ((2, 9, 9, 3), (3, 3, 3, 4), ("NHWC", "HWIO", "NHWC"), (2, 2), "VALID", (1, 1)),
    ((2, 3, 10, 11), (4, 3, 3, 3), ("NCHW", "OIHW", "NCHW"), (2, 1), ((1, 2), (0, 1)), (1, 2)),
    ((3, 12, 2), (5, 2, 4), ("NWC", "WIO", "NWC"), (3,), "SAME", (1,)),
]


def _conv(dn, strides, padding, dilation):
    return lambda w, x: jnp.tanh(lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                                          dimension_numbers=dn))


@pytest.mark.parametrize(("lhs", "rhs", "dn", "strides", "padding", "dilation"), CASES)
def test_values_and_jacobians_equal_jax(lhs, rhs, dn, strides, padding, dilation):
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    x, w = jax.random.normal(kx, lhs), jax.random.normal(kw, rhs)
    conv = _conv(dn, strides, padding, dilation)
    patched = with_patch_conv_grads(conv)
    np.testing.assert_allclose(patched(w, x), conv(w, x), rtol=1e-13)
    for argnum in (0, 1):  # weights and inputs
        np.testing.assert_allclose(jax.jacrev(patched, argnum)(w, x), jax.jacrev(conv, argnum)(w, x),
                                   rtol=1e-11, atol=1e-12)


def test_per_example_jacobians_through_nested_jit_equal_jax():
    """Vmapped over examples (the dense Jacobian's use) and through a jitted sub-function."""
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 2))
    params = {"w1": jax.random.normal(jax.random.PRNGKey(2), (3, 3, 2, 5)), "w2": jnp.ones((5, 3))}
    block = jax.jit(lambda w, h: jax.nn.relu(lax.conv_general_dilated(h, w, (2, 2), "SAME",
                                                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))))

    def model(p, xs):
        return block(p["w1"], xs).mean(axis=(1, 2)) @ p["w2"]

    per_example = lambda f: jax.vmap(lambda xi: jax.jacrev(lambda p: f(p, xi[None]))(params))(x)
    want, got = per_example(model), per_example(with_patch_conv_grads(model))
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


def test_grouped_convolutions_keep_jax_rule():
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 6, 6, 4))
    w = jax.random.normal(jax.random.PRNGKey(4), (3, 3, 2, 4))
    grouped = lambda w, x: lax.conv_general_dilated(x, w, (1, 1), "SAME", feature_group_count=2,
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(jax.jacrev(with_patch_conv_grads(grouped))(w, x), jax.jacrev(grouped)(w, x),
                               rtol=1e-12)
