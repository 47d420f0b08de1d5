"""probe_fn: block outputs and additive taps in every family, checked against independent computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntksearch.models import BuiltModel, build_model
from ntksearch.models.base import Taps
from tests.models.test_families import CASES, SHAPE, X, _build


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request: pytest.FixtureRequest) -> BuiltModel:
    return _build(request.param)


def _zeros(arrays: list) -> list[jax.Array]:
    return [jnp.zeros(a.shape, a.dtype) for a in arrays]


def test_zero_taps_leave_the_model_unchanged_and_every_feature_tap_reaches_the_loss(built: BuiltModel) -> None:
    shapes = jax.eval_shape(built.probe_fn, built.params, X)

    def loss(taps: list[jax.Array]) -> tuple[jax.Array, object]:
        probe = built.probe_fn(built.params, X, Taps(features=taps))
        return jnp.sum(jnp.sin(probe.logits)), probe

    grads, probe = jax.grad(loss, has_aux=True)(_zeros(shapes.features))
    np.testing.assert_allclose(probe.logits, built.apply_fn(built.params, X), rtol=1e-5, atol=1e-6)
    assert [f.shape for f in probe.features] == [f.shape for f in jax.eval_shape(built.features_fn, built.params, X)]
    assert all(float(jnp.abs(g).sum()) > 0 for g in grads)
    assert len(probe.blocks) >= 2 and all(b.shape[0] == X.shape[0] for b in probe.blocks)
    again = build_model(built.family, built.point, input_shape=SHAPE, n_classes=3, key=jax.random.PRNGKey(7))
    assert again.probe_fn == built.probe_fn and hash(again.probe_fn) == hash(built.probe_fn)


def test_block_taps_cut_the_gradient_at_block_boundaries() -> None:
    # mlp blocks: h0 = x, h_l = tanh(h_{l-1} W_l + b_l); tap l-1's gradient of <g, h_l> is layer l's VJP alone
    built = _build("mlp", {"depth": 2, "width": [5, 4], "activation": "tanh"})
    blocks = built.probe_fn(built.params, X).blocks
    g = jax.random.normal(jax.random.PRNGKey(3), blocks[2].shape)
    grads = jax.grad(lambda taps: jnp.vdot(g, built.probe_fn(built.params, X, Taps(blocks=taps)).blocks[2]))(
        _zeros(blocks))
    layer = built.params["layers"][1]
    w, b = np.asarray(layer["kernel"][...], np.float64), np.asarray(layer["bias"][...], np.float64)
    h = np.tanh(np.asarray(blocks[1], np.float64) @ w + b)
    np.testing.assert_allclose(grads[1], (np.asarray(g) * (1 - h**2)) @ w.T, rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(grads[0]).max()) == 0.0  # the first layer is cut off
    assert float(jnp.abs(grads[2]).max()) == 0.0  # the head does not enter <g, h_2>


def test_rnn_feature_taps_enter_the_recursion() -> None:
    # tanh cell: h_t = tanh(x_t W + h_{t-1} U + b + tap_t); a nonzero tap must change the logits exactly so
    built = _build("rnn", {"cell": "tanh", "hidden": 3})
    probe = built.probe_fn(built.params, X)
    tap = 0.3 * jax.random.normal(jax.random.PRNGKey(4), probe.features[0].shape)
    tapped = built.probe_fn(built.params, X, Taps(features=[tap]))
    cell, head = built.params["layers"][0][0], built.params["head"]
    w, b = np.asarray(cell["inp"]["kernel"][...]), np.asarray(cell["inp"]["bias"][...])
    u = np.asarray(cell["rec"]["kernel"][...])
    seq, h = np.asarray(X).reshape(4, 8, 8), np.zeros((4, 3))
    for t in range(8):
        h = np.tanh(seq[:, t] @ w + b + h @ u + np.asarray(tap)[:, t])
    logits = h @ np.asarray(head["kernel"][...]) + np.asarray(head["bias"][...])
    np.testing.assert_allclose(tapped.logits, logits, rtol=1e-4, atol=1e-5)
    assert not np.allclose(tapped.logits, probe.logits, atol=1e-3)


def test_block_lists_follow_the_family_docstrings() -> None:
    def shapes(family: str, point: dict) -> list[tuple[int, ...]]:
        built = _build(family, point)
        return [b.shape for b in jax.eval_shape(built.probe_fn, built.params, X).blocks]

    assert shapes("mlp", {"depth": 2, "width": [5, 4]}) == [(4, 64), (4, 5), (4, 4)]
    assert shapes("cnn", {"stages": 2, "channels": [3, 5], "stride": [1, 2]}) == [(4, 8, 8, 1), (4, 8, 8, 3),
                                                                                  (4, 4, 4, 5)]
    assert shapes("rnn", {"cell": "gru", "layers": 2, "hidden": [3, 2], "bidirectional": True}) == [
        (4, 8, 8), (4, 8, 6), (4, 8, 4)]
    assert shapes("nb201", {"C": 2, "N": 1}) == [(4, 8, 8, 2), (4, 8, 8, 2), (4, 4, 4, 4), (4, 4, 4, 4),
                                                 (4, 2, 2, 8), (4, 2, 2, 8)]
    assert shapes("transformer", {"depth": 2, "heads": 1, "head_dim": 4}) == [(4, 8, 4)] * 4
