"""MeCo and SWAP against hand computations (numpy, float64) on tiny models, and their invariances."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from ntksearch.models import build_model
from ntksearch.proxies import ProxyInputs, compute_proxies
from ntksearch.proxies.patterns import SWAP_REG_MU, SWAP_REG_SIGMA, meco_score, swap_regulariser, swap_score
from tests.proxies.tiny_models import conv2x2_pass, mlp_pass, tiny

NAMES = ["meco", "swap", "swap_reg"]


def _values(t) -> dict[str, float]:
    return {name: v.value for name, v in compute_proxies(NAMES, t.inputs).values.items()}


def _min_eig_of_correlation(maps: np.ndarray) -> float:
    """λ_min of the correlation between the columns of ``maps``, nan entries set to 0 (the authors' rule)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(maps, rowvar=False)
    corr[np.isnan(corr)] = 0.0
    return float(np.min(np.linalg.eig(corr)[0].real))


def _distinct_columns(codes: np.ndarray) -> int:
    return len({tuple(column) for column in codes.T})


def test_meco_and_swap_of_an_mlp() -> None:
    with jax.enable_x64(True):
        t = tiny("mlp", {"depth": 1, "width": 5, "activation": "tanh"}, (3, 4, 1), n=8)
        values = _values(t)
    pre = mlp_pass(t)["pre"]  # (8, 5): a vector feature, so the 8 examples are the positions
    assert values["meco"] == pytest.approx(_min_eig_of_correlation(pre), rel=1e-9, abs=1e-12)
    assert values["meco"] > 0
    swap = _distinct_columns(pre > 0)
    assert values["swap"] == swap
    n_params = 12 * 5 + 5 + 5 * 3 + 3
    assert values["swap_reg"] == pytest.approx(swap * math.exp(-((n_params / 1e3 - 1000.0) ** 2) / 1e6), rel=1e-12)


def test_meco_and_swap_of_a_cnn_read_the_first_example_per_position() -> None:
    with jax.enable_x64(True):
        t = tiny("cnn", {"stages": 1, "channels": 3, "kernel": 2, "stride": 2, "activation": "relu"}, (8, 8, 1), n=6)
        values = _values(t)
    pre = conv2x2_pass(t)["pre"]  # (6, 4, 4, 3)
    assert values["meco"] == pytest.approx(_min_eig_of_correlation(pre[0].reshape(16, 3)), rel=1e-9)
    assert values["swap"] == _distinct_columns(pre.reshape(6, -1) > 0)


def test_meco_is_zero_when_channels_outnumber_positions() -> None:
    rng = np.random.default_rng(0)
    wide = rng.normal(size=(6, 4, 4, 17))  # 16 positions, 17 channels: rank ≤ 15
    assert meco_score([wide]) == 0.0
    assert _min_eig_of_correlation(wide[0].reshape(16, 17)) == pytest.approx(0.0, abs=1e-12)
    constant = rng.normal(size=(6, 4, 4, 3))
    constant[0, ..., 1] = 2.0  # a constant channel: its correlations are undefined, set to 0
    assert meco_score([constant]) == pytest.approx(_min_eig_of_correlation(constant[0].reshape(16, 3)), abs=1e-12)


def test_swap_counts_patterns_across_features_and_batches_longer_than_a_byte() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(11, 3, 2))
    b = np.concatenate([a[:, 0], -a[:, 1, :1]], axis=1)  # two copies of a's units and one new one
    expected = _distinct_columns(np.concatenate([a.reshape(11, -1), b], axis=1) > 0)
    assert swap_score([a, b]) == expected == _distinct_columns(a.reshape(11, -1) > 0) + 1


def test_swap_regulariser_peaks_at_mu() -> None:
    assert swap_regulariser(SWAP_REG_MU * 1e3) == 1.0
    assert swap_regulariser(0.0) == pytest.approx(math.exp(-(SWAP_REG_MU**2) / SWAP_REG_SIGMA))
    assert swap_regulariser(5e4, mu=50.0, sigma=4.0) == 1.0


def test_relu_patterns_and_correlations_ignore_the_weight_scale() -> None:
    # a bias-free ReLU net scaled by s per layer: pre-activations scale by s^l, signs and correlations do not move
    x = jax.random.uniform(jax.random.PRNGKey(1), (16, 8, 8, 1))
    values = []
    for scale in (0.5, 3.0):
        built = build_model("mlp", {"depth": 3, "width": [8, 6, 5], "init_scale": scale}, input_shape=(8, 8, 1),
                            n_classes=3, key=jax.random.PRNGKey(0))
        inputs = ProxyInputs.from_model(built, x, jax.nn.one_hot(np.arange(16) % 3, 3), key=jax.random.PRNGKey(0))
        values.append({k: v.value for k, v in compute_proxies(["meco", "swap"], inputs).values.items()})
    assert values[0]["swap"] == values[1]["swap"]
    assert values[0]["meco"] == pytest.approx(values[1]["meco"], rel=1e-4)
