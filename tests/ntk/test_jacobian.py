"""The per-example dense Jacobian against the whole-batch one, its independence check and its cost rule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntksearch.models import build_model
from ntksearch.models.buckets import BucketGrid
from ntksearch.models.padded import bucket_candidate
from ntksearch.ntk import exact_jacobian, jacobian
from ntksearch.ntk import kernel as kernel_module
from ntksearch.ntk.forward import trace_forward
from ntksearch.ntk.jacobian import dense_jacobian, dense_jacobian_pays, per_example_jacobian
from ntksearch.ntk.kernel import dense_point
from tests.ntk.problems import cnn_apply, make_cnn, make_mlp, make_rnn


def _sizes(problem) -> tuple[int, int]:
    n = int(np.prod(jax.eval_shape(problem.apply_fn, problem.params, problem.x).shape))
    return n, sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(problem.params))


def test_per_example_jacobian_equals_the_batch_jacobian(problem):
    z, jac = per_example_jacobian(problem.apply_fn, problem.params, problem.x)
    np.testing.assert_allclose(jac, exact_jacobian(problem.apply_fn, problem.params, problem.x), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(z, jnp.ravel(problem.apply_fn(problem.params, problem.x)), rtol=1e-12)


def test_dense_jacobian_accepts_independent_examples(problem):
    point = dense_jacobian(problem.apply_fn, problem.params, problem.x)
    assert point is not None
    np.testing.assert_array_equal(point[1], per_example_jacobian(problem.apply_fn, problem.params, problem.x)[1])


def test_dense_jacobian_refuses_examples_that_interact():
    """Batch statistics couple the examples: the per-example Jacobian would be wrong, so None."""
    prob = make_cnn()
    centred = lambda p, x: cnn_apply(p, x - x.mean(axis=0, keepdims=True) + 0.5)
    normalised = lambda p, x: (lambda h: (h - h.mean(axis=0)) / (h.std(axis=0) + 1.0))(cnn_apply(p, x))
    for apply_fn in (centred, normalised):
        assert dense_jacobian(apply_fn, prob.params, prob.x) is None


def test_dense_jacobian_refuses_a_model_with_a_fixed_batch_size():
    prob = make_cnn(batch=12)
    fixed = lambda p, x: cnn_apply(p, x).reshape(12, -1)
    assert dense_jacobian(fixed, prob.params, prob.x) is None


def test_the_forward_trace_counts_matrix_products_and_convolutions_and_lists_primitives():
    mlp, cnn = make_mlp(batch=16, sizes=(6, 24, 24, 4)), make_cnn(batch=12, classes=3)
    forward = trace_forward(mlp.apply_fn, mlp.params, mlp.x)
    flops = forward.product_flops
    assert flops == 2 * 16 * (6 * 24 + 24 * 24 + 24 * 4) and forward.out.shape == (16, 4)
    assert {"dot_general", "add"} <= forward.primitives and "conv_general_dilated" not in forward.primitives
    conv1, conv2, head = 12 * 6 * 6 * 4 * (3 * 3 * 1), 12 * 3 * 3 * 6 * (3 * 3 * 4), 12 * 3 * 6  # 6×6, then stride 2
    assert trace_forward(cnn.apply_fn, cnn.params, cnn.x).product_flops == 2 * (conv1 + conv2 + head)
    nested = trace_forward(jax.jit(lambda p, x: mlp.apply_fn(p, x)), mlp.params, mlp.x)
    assert nested.product_flops == flops and "jit" in nested.primitives and "dot_general" in nested.primitives


def test_the_forward_trace_flags_batch_statistics():
    """Reductions over the examples (centring or normalising on the batch, Flax batch norm) flag the pass; the
    same models without them, and a layer norm (over features), do not."""
    cnn, mlp = make_cnn(), make_mlp()
    centred = lambda p, x: cnn_apply(p, x - x.mean(axis=0, keepdims=True) + 0.5)
    normalised = lambda p, x: (lambda h: (h - h.mean(axis=0)) / (h.std(axis=0) + 1.0))(cnn_apply(p, x))
    assert all(trace_forward(f, cnn.params, cnn.x).batch_statistics for f in (centred, normalised))
    assert not trace_forward(cnn.apply_fn, cnn.params, cnn.x).batch_statistics
    assert not trace_forward(mlp.apply_fn, mlp.params, mlp.x).batch_statistics
    assert not trace_forward(cnn.apply_fn, cnn.params, cnn.x[:1]).batch_statistics  # one example: nothing to couple
    arch = {"stages": 1, "channels": [4], "blocks": [1], "kernel": [3], "stride": [1], "pool": ["none"]}
    for norm, coupled in (("batch", True), ("layer", False)):
        built = build_model("cnn", {**arch, "norm": norm}, input_shape=(8, 8, 1), n_classes=3, key=jax.random.key(0))
        assert trace_forward(built.apply_fn, built.params, jnp.ones((6, 8, 8, 1))).batch_statistics == coupled
    # a padded MLP whose norm menu offers batch norm: a branch the candidate may not take does not flag it
    menu = BucketGrid(widths=(16,), menus=(("norm", ("none", "layer", "batch")),))
    for norm in ("layer", "batch"):
        built = build_model("mlp", {"depth": 1, "width": [9], "residual": False, "norm": norm}, input_shape=(8, 8, 1),
                            n_classes=3, key=jax.random.key(0))
        padded, x = bucket_candidate(built, menu), jnp.ones((6, 8, 8, 1))
        assert padded.apply_fn.norms == ("none", "layer", "batch")
        assert not trace_forward(padded.apply_fn, padded.params, x).batch_statistics
        assert trace_forward(built.apply_fn, built.params, x).batch_statistics == (norm == "batch")


def test_batch_statistics_skip_the_dense_jacobian(monkeypatch):
    """dense_point declines a model with batch statistics before compiling anything for it."""
    monkeypatch.setattr(kernel_module, "dense_jacobian", lambda *a, **k: pytest.fail("dense_jacobian was called"))
    cnn = make_cnn()
    centred = lambda p, x: cnn_apply(p, x - x.mean(axis=0, keepdims=True) + 0.5)
    assert dense_point(centred, cnn.params, cnn.x, None) is None


def _pays(apply_fn, params, x) -> bool:
    return dense_jacobian_pays(trace_forward(apply_fn, params, x), params, x)


def test_dense_pays_for_convolutions_not_for_dense_layers():
    """A conv pass costs far more than 2·n·p flops; an MLP pass (≈ 2·B·p) less."""
    cnn, mlp = make_cnn(), make_mlp()
    assert _pays(cnn.apply_fn, cnn.params, cnn.x)
    assert not _pays(mlp.apply_fn, mlp.params, mlp.x)
    rnn = make_rnn()  # the whole trajectory is the output: n·p ≫ the flops of a pass
    assert not _pays(rnn.apply_fn, rnn.params, rnn.x)


def test_dense_pays_needs_a_batch_axis_and_a_small_jacobian(monkeypatch):
    cnn = make_cnn()
    summed = lambda p, x: cnn_apply(p, x).sum(axis=0)  # no per-example output
    assert not _pays(summed, cnn.params, cnn.x)
    monkeypatch.setattr(jacobian, "DENSE_MAX_ENTRIES", _sizes(cnn)[0] * _sizes(cnn)[1] - 1)
    assert not _pays(cnn.apply_fn, cnn.params, cnn.x)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_check_tolerates_rounding_in_either_precision(dtype):
    prob = make_cnn()
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), prob.params)
    assert dense_jacobian(prob.apply_fn, params, prob.x.astype(dtype)) is not None
