"""The fast-compiling variant of the NTK programs: the same numbers, one jitted object per variant."""

import jax
import jax.numpy as jnp
import numpy as np

from ntksearch.ntk import ntk_metrics
from ntksearch.ntk.compile import FAST_COMPILE_OPTIONS, jitted
from ntksearch.ntk.linearised import linearised_metrics
from tests.ntk.problems import Problem, make_cnn


def _double(a: jax.Array) -> jax.Array:
    return a * 2.0


def test_jitted_is_cached_per_variant():
    assert jitted(_double, fast=True) is jitted(_double, fast=True)
    assert jitted(_double, fast=True) is not jitted(_double, fast=False)
    assert FAST_COMPILE_OPTIONS == {"xla_backend_optimization_level": 0}
    np.testing.assert_array_equal(jitted(_double, fast=True)(jnp.arange(3.0)), [0.0, 2.0, 4.0])


def test_fast_and_optimised_programs_give_the_same_estimates(problem: Problem):
    key = jax.random.key(3)
    fast = ntk_metrics(problem.apply_fn, problem.params, problem.x, key=key, rtol=0.05, fast_compile=True)
    full = ntk_metrics(problem.apply_fn, problem.params, problem.x, key=key, rtol=0.05, fast_compile=False)
    assert fast.keys() == full.keys()
    for q in fast:  # same probes, same stopping decisions: equal up to float64 rounding
        np.testing.assert_allclose(fast[q].value, full[q].value, rtol=1e-9)
        assert fast[q].matvecs == full[q].matvecs


def test_fast_and_optimised_linearised_metrics_agree():
    cnn = make_cnn()  # classifier logits (N, C): the dense per-example Jacobian path and the held-out products
    y = jax.nn.one_hot(jnp.arange(cnn.x.shape[0]) % 3, 3, dtype=cnn.x.dtype)
    kw = dict(key=jax.random.key(0), rtol=1e-2)
    fast = linearised_metrics(cnn.apply_fn, cnn.params, cnn.x, y, cnn.x, jnp.arange(cnn.x.shape[0]) % 3,
                              fast_compile=True, **kw)
    full = linearised_metrics(cnn.apply_fn, cnn.params, cnn.x, y, cnn.x, jnp.arange(cnn.x.shape[0]) % 3,
                              fast_compile=False, **kw)
    assert fast.keys() == full.keys()
    for q in fast:
        np.testing.assert_allclose(fast[q].value, full[q].value, rtol=1e-9)
