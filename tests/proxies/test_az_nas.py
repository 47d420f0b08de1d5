"""AZ-NAS terms against hand computations (numpy, float64) on tiny models, and the rank aggregation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntksearch.models import build_model
from ntksearch.models.base import Probe, Taps
from ntksearch.models.layers import Ctx
from ntksearch.proxies import AZ_NAS_TERMS, ProxyInputs, az_nas_rank_score, compute_proxies
from tests.proxies.tiny_models import conv2x2_pass, mlp_pass, tiny

TERMS = ["az_expressivity", "az_progressivity", "az_trainability"]


def _values(t) -> dict[str, float]:
    return {name: v.value for name, v in compute_proxies([*TERMS, "az_complexity"], t.inputs).values.items()}


def _entropy(features: np.ndarray) -> float:
    """Entropy of the normalised eigenvalues of the channel covariance over batch × positions."""
    rows = features.reshape(-1, features.shape[-1])
    rows = rows - rows.mean(axis=0)
    s = np.linalg.eigvalsh(rows.T @ rows / len(rows))
    p = s / s.sum()
    return float(-np.sum(p * np.log(p + 1e-8)))


def _trainability(sigma: float) -> float:
    return 2.0 - sigma - 1.0 / (sigma + 1e-6)


def test_expressivity_and_progressivity_of_an_mlp() -> None:
    with jax.enable_x64(True):
        t = tiny("mlp", {"depth": 1, "width": 3, "activation": "tanh"}, (3, 4, 1), n=10)
        values = _values(t)
    p = mlp_pass(t)
    entropies = [_entropy(p["x"]), _entropy(p["h"])]  # blocks: the flattened input, the hidden layer's output
    assert values["az_expressivity"] == pytest.approx(sum(entropies), rel=1e-9)
    assert values["az_progressivity"] == pytest.approx(entropies[1] - entropies[0], rel=1e-9)
    assert values["az_complexity"] == t.inputs.flops


def test_trainability_of_a_one_unit_layer_is_the_norm_of_its_mean_jacobian() -> None:
    # with one output unit, G_inᵀG_out/N = mean_n J_nᵀ g_n² = mean_n J_nᵀ whatever the ±1 probe draws
    with jax.enable_x64(True):
        t = tiny("mlp", {"depth": 1, "width": 1, "activation": "tanh"}, (3, 4, 1), n=10)
        value = _values(t)["az_trainability"]
    h = mlp_pass(t)["h"]
    sigma = abs(np.mean(1 - h**2)) * np.linalg.norm(t.weights["layers.0.kernel"])
    assert value == pytest.approx(_trainability(sigma), rel=1e-9)


@pytest.mark.parametrize("size", [8, 7])
def test_trainability_folds_a_strided_grid_into_channels(size: int) -> None:
    # 2×2 stride-2 conv to one channel: each output reads its own 2×2 patch (SAME pads the end of odd sizes),
    # so A[(a, b)] = W[a, b] · mean over rows of relu'(pre) · [patch entry (a, b) is inside the image]
    with jax.enable_x64(True):
        t = tiny("cnn", {"stages": 1, "channels": 1, "kernel": 2, "stride": 2, "activation": "relu"},
                 (size, size, 1), n=5)
        values = _values(t)
    p = conv2x2_pass(t)
    active = (p["pre"][..., 0] > 0).astype(float)  # (n, i, j)
    share = np.einsum("nij,ijab->ab", active, p["valid"]) / active.size
    a = t.weights["stages.0.0.conv1.kernel"][:, :, 0, 0] * share
    assert values["az_trainability"] == pytest.approx(_trainability(np.linalg.norm(a)), rel=1e-9)
    single = -math.log(1 + 1e-8)  # one channel: one eigenvalue, p = 1
    assert values["az_expressivity"] == pytest.approx(2 * single, rel=1e-9)


def test_trainability_folds_a_strided_sequence_into_channels() -> None:
    # a hand-written probe_fn (any model can provide one through Ctx): a 1-D kernel-2 stride-2 map of a length-7
    # sequence, zero-padded at the end, to one ReLU channel; A[a] = w[a] · mean_rows relu'(pre) · [a is inside]
    w = jnp.array([0.8, -1.3])

    def probe_fn(params: jax.Array, x: jax.Array, taps: Taps | None = None) -> Probe:
        taps = taps or Taps()
        ctx = Ctx(features=[], blocks=[], feature_taps=taps.features, block_taps=taps.blocks)
        h = ctx.block(x)  # (N, 7, 1)
        pairs = jnp.pad(h, ((0, 0), (0, 1), (0, 0))).reshape(x.shape[0], 4, 2)
        h = ctx.block(ctx.act("relu", (pairs @ params)[..., None] - 0.1))  # (N, 4, 1)
        return Probe(h.mean(axis=(1, 2))[:, None] * jnp.ones(3), ctx.features, ctx.blocks)

    x = jax.random.normal(jax.random.PRNGKey(0), (6, 7, 1))
    inputs = ProxyInputs(lambda p, xb: probe_fn(p, xb).logits, w, x, jax.nn.one_hot(jnp.arange(6) % 3, 3),
                         jax.random.PRNGKey(0), probe_fn=probe_fn)
    value = compute_proxies(["az_trainability"], inputs).values["az_trainability"].value
    padded = np.concatenate([np.asarray(x)[..., 0], np.zeros((6, 1))], axis=1).reshape(6, 4, 2)
    active = (padded @ np.asarray(w) - 0.1 > 0).astype(float)  # (n, i)
    inside = np.ones((4, 2))
    inside[3, 1] = 0.0  # the padded position
    a = np.asarray(w) * np.einsum("ni,ia->a", active, inside) / active.size
    assert value == pytest.approx(_trainability(np.linalg.norm(a)), rel=1e-5)


def test_expressivity_of_a_cnn_uses_batch_and_positions_as_rows() -> None:
    with jax.enable_x64(True):
        t = tiny("cnn", {"stages": 1, "channels": 3, "kernel": 2, "stride": 2, "activation": "relu"}, (8, 8, 1), n=5)
        values = _values(t)
    entropies = [_entropy(t.x), _entropy(conv2x2_pass(t)["h"])]
    assert values["az_expressivity"] == pytest.approx(sum(entropies), rel=1e-9)
    assert values["az_progressivity"] == pytest.approx(entropies[1] - entropies[0], rel=1e-9)


def test_an_identity_cell_makes_trainability_minus_infinity() -> None:
    arch = "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"  # node 3 = node 0
    built = build_model("nb201", {"C": 2, "N": 1, "arch": arch}, input_shape=(8, 8, 1), n_classes=3,
                        key=jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (4, 8, 8, 1))
    inputs = ProxyInputs.from_model(built, x, jax.nn.one_hot(jnp.arange(4) % 3, 3), key=jax.random.PRNGKey(0))
    values = compute_proxies(TERMS, inputs).values
    assert values["az_trainability"].value == -math.inf
    assert math.isfinite(values["az_expressivity"].value)


def test_rank_aggregate_is_the_sum_of_log_rank_fractions() -> None:
    table = {
        "az_expressivity": [1.0, 3.0, 2.0, 2.0],
        "az_progressivity": [0.5, -1.0, np.nan, 0.0],  # nan ranks last, as −∞
        "az_trainability": [-2.0, -1.0, -3.0, -math.inf],
        "az_complexity": [10.0, 40.0, 30.0, 20.0],
    }
    ranks = np.array([[1, 4, 2.5, 2.5], [4, 2, 1, 3], [3, 4, 2, 1], [1, 4, 3, 2]])  # per term, 1 = smallest
    expected = np.log(ranks / 4).sum(axis=0)
    np.testing.assert_allclose(az_nas_rank_score(table), expected, rtol=1e-12)
    assert az_nas_rank_score(table)[1] == pytest.approx(np.log(4 / 4) * 3 + np.log(2 / 4))
    assert tuple(AZ_NAS_TERMS) == tuple(table)
