"""How the NTK programs compile: the same numbers either way, one jitted object per variant, the auto rule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntksearch.ntk import compile as compile_module
from ntksearch.ntk import ntk_metrics
from ntksearch.ntk.compile import (
    CPU_COMPILE_OPTIONS,
    FAST_COMPILE_OPTIONS,
    OPTIMISED_FROM_FLOPS,
    OPTIMISED_LOOPS_FROM_FLOPS,
    compiler_options,
    compiles_fast,
    jitted,
)
from ntksearch.ntk.forward import trace_forward
from ntksearch.ntk.linearised import linearised_metrics
from ntksearch.ntk.spectra import lambda_max
from tests.ntk.problems import Problem, make_cnn, make_mlp, make_rnn


def _double(a: jax.Array) -> jax.Array:
    return a * 2.0


def test_jitted_is_cached_per_variant():
    assert jitted(_double, fast=True) is jitted(_double, fast=True)
    assert jitted(_double, fast=True) is not jitted(_double, fast=False)
    assert FAST_COMPILE_OPTIONS == {"xla_backend_optimization_level": 0}
    np.testing.assert_array_equal(jitted(_double, fast=True)(jnp.arange(3.0)), [0.0, 2.0, 4.0])
    assert jitted(_double, fast=True)._cache_size() == 1  # attributes of the jitted function pass through


def test_compiler_options_include_the_cpu_options_the_installed_xla_accepts():
    assert CPU_COMPILE_OPTIONS == {"xla_cpu_use_fusion_emitters": False}
    assert compiler_options(True) == {**FAST_COMPILE_OPTIONS, **CPU_COMPILE_OPTIONS}  # jax 0.10 knows the option
    assert compiler_options(False) == CPU_COMPILE_OPTIONS


def test_compiler_options_leave_out_an_option_xla_rejects(monkeypatch):
    monkeypatch.setattr(compile_module, "CPU_COMPILE_OPTIONS", {"xla_cpu_no_such_option": True})
    compile_module._accepts_cpu_options.cache_clear()
    compiler_options.cache_clear()
    try:
        assert compiler_options(True) == FAST_COMPILE_OPTIONS
        assert compiler_options(False) == {}
    finally:
        monkeypatch.undo()
        compile_module._accepts_cpu_options.cache_clear()
        compiler_options.cache_clear()
    assert compiler_options(False) == CPU_COMPILE_OPTIONS


def test_auto_compiles_fast_unless_the_model_convolves():
    for make, fast in [(make_mlp, True), (make_rnn, True), (make_cnn, False)]:
        prob = make()
        forward = trace_forward(prob.apply_fn, prob.params, prob.x)
        assert compiles_fast("auto", forward) is fast
        assert compiles_fast("fast", forward) is True
        assert compiles_fast("optimised", forward) is False
    cnn = make_cnn()
    conv = lambda h, k: jax.lax.conv_general_dilated(h, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    conv_in_a_loop = lambda k, x: jax.lax.fori_loop(0, 2, lambda i, h: conv(h, k), x)  # found in the loop body
    assert compiles_fast("auto", trace_forward(conv_in_a_loop, jnp.ones((3, 3, 1, 1)), cnn.x)) is False
    assert compiles_fast("auto", trace_forward(cnn.apply_fn, cnn.params, cnn.x), runs_once=True) is False
    with pytest.raises(ValueError, match="allowed: auto, fast, optimised"):
        compiles_fast("quick", trace_forward(cnn.apply_fn, cnn.params, cnn.x))


@pytest.mark.parametrize(("make", "limit"), [(make_mlp, OPTIMISED_FROM_FLOPS), (make_rnn, OPTIMISED_LOOPS_FROM_FLOPS)])
def test_auto_compiles_large_forward_passes_at_the_default_level(make, limit):
    prob = make()
    per_example = trace_forward(prob.apply_fn, prob.params, prob.x).product_flops / prob.x.shape[0]
    smallest = math.ceil(limit / per_example)  # the smallest batch reaching the threshold (a loop's: lower)
    for batch, fast in [(smallest - 1, True), (smallest, False)]:
        x = jax.ShapeDtypeStruct((batch, *prob.x.shape[1:]), prob.x.dtype)  # traced abstractly: nothing runs
        forward = trace_forward(prob.apply_fn, prob.params, x)
        assert (forward.product_flops < limit) is fast
        assert compiles_fast("auto", forward) is fast
        assert compiles_fast("fast", forward) is True
        assert compiles_fast("auto", forward, runs_once=True) is True  # one call never repays a slower compile
        assert compiles_fast("optimised", forward, runs_once=True) is False


def test_fast_and_optimised_programs_give_the_same_estimates(problem: Problem):
    key = jax.random.key(3)
    fast = ntk_metrics(problem.apply_fn, problem.params, problem.x, key=key, compile_mode="fast")
    full = ntk_metrics(problem.apply_fn, problem.params, problem.x, key=key, compile_mode="optimised")
    assert fast.keys() == full.keys()
    for q in fast:  # same probes, same stopping decisions: equal up to float64 rounding
        np.testing.assert_allclose(fast[q].value, full[q].value, rtol=1e-9)
        assert fast[q].matvecs == full[q].matvecs
    top = [lambda_max(problem.apply_fn, problem.params, problem.x, key=key, compile_mode=mode).value
           for mode in ("fast", "optimised")]
    np.testing.assert_allclose(top[0], top[1], rtol=1e-9)


def test_fast_and_optimised_linearised_metrics_agree():
    cnn = make_cnn()  # classifier logits (N, C): the dense per-example Jacobian path and the held-out products
    labels = jnp.arange(cnn.x.shape[0]) % 3
    y = jax.nn.one_hot(labels, 3, dtype=cnn.x.dtype)
    runs = [linearised_metrics(cnn.apply_fn, cnn.params, cnn.x, y, cnn.x, labels, key=jax.random.key(0),
                               compile_mode=mode) for mode in ("fast", "optimised")]
    assert runs[0].keys() == runs[1].keys()
    for q in runs[0]:
        np.testing.assert_allclose(runs[0][q].value, runs[1][q].value, rtol=1e-9)
