"""ZiCo, jacob_cov and Fisher against hand computations (numpy, float64) on tiny models; every family scores."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntksearch.models import build_model
from ntksearch.proxies import PROXIES, ProxyInputs, compute_proxies
from ntksearch.proxies.published import JACOB_COV_K
from tests.proxies.tiny_models import conv2x2_pass, mlp_pass, tiny

PUBLISHED = ["zico", "jacob_cov", "fisher", "meco", "swap", "swap_reg", "az_expressivity", "az_progressivity",
             "az_trainability", "az_complexity"]
MLP = {"depth": 1, "width": 5, "activation": "tanh"}
CONV = {"stages": 1, "channels": 3, "kernel": 2, "stride": 2, "activation": "relu"}
# one small architecture per family that still has every kind of layer the proxies read
LIGHT = {
    "mlp": {"depth": 2, "width": [6, 5], "norm": "layer", "residual": True},
    "cnn": {"stages": 2, "channels": [3, 4], "stride": [1, 2], "residual": True, "norm": "batch"},
    "rnn": {"cell": "lstm", "hidden": 4, "bidirectional": True},
    "nb201": {"C": 2, "N": 1, "arch": "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|"},
    "transformer": {"depth": 1, "heads": 1, "head_dim": 4, "readout": "cls"},
}


def _values(t, names: list[str]) -> dict[str, float]:
    return {name: v.value for name, v in compute_proxies(names, t.inputs).values.items()}


def test_zico_is_the_log_inverse_coefficient_of_variation_of_two_half_batch_gradients() -> None:
    with jax.enable_x64(True):
        t = tiny("mlp", MLP, (3, 4, 1), n=9)  # odd: the last example is left out, halves of 4
        value = _values(t, ["zico"])["zico"]
    halves = [mlp_pass(t, slice(0, 4)), mlp_pass(t, slice(4, 8))]
    expected = 0.0
    for name in ("dw1", "dw2"):  # the weight tensors; biases are left out
        g = np.stack([h[name] for h in halves])
        std, mean_abs = g.std(axis=0), np.abs(g).mean(axis=0)
        expected += math.log(np.sum(mean_abs[std > 0] / std[std > 0]))
    assert value == pytest.approx(expected, rel=1e-9)


def test_jacob_cov_of_the_input_jacobian() -> None:
    with jax.enable_x64(True):
        t = tiny("mlp", MLP, (3, 4, 1), n=6)
        value = _values(t, ["jacob_cov"])["jacob_cov"]
    v = np.linalg.eig(np.corrcoef(mlp_pass(t)["input_jacobian"]))[0].real
    assert value == pytest.approx(-np.sum(np.log(v + JACOB_COV_K) + 1 / (v + JACOB_COV_K)), rel=1e-8)
    assert value < -6  # each term −log(u) − 1/u (u = v + k) is at most −1, reached at u = 1


def test_jacob_cov_ignores_the_weight_scale_of_a_relu_net() -> None:
    # bias-free ReLU layers scaled by s: the input Jacobian scales by s³, its row correlations do not move
    x = jax.random.uniform(jax.random.PRNGKey(1), (16, 8, 8, 1))
    values = []
    for scale in (0.5, 3.0):
        built = build_model("mlp", {"depth": 2, "width": [8, 6], "init_scale": scale}, input_shape=(8, 8, 1),
                            n_classes=3, key=jax.random.PRNGKey(0))
        inputs = ProxyInputs.from_model(built, x, jax.nn.one_hot(jnp.arange(16) % 3, 3), key=jax.random.PRNGKey(0))
        values.append(compute_proxies(["jacob_cov"], inputs).values["jacob_cov"].value)
    assert values[0] == pytest.approx(values[1], rel=1e-4)


def test_jacob_cov_of_a_constant_jacobian_is_undefined() -> None:
    inputs = ProxyInputs(lambda p, x: x.sum(axis=1, keepdims=True) * p, jnp.ones(()), jnp.ones((4, 3)),
                         jnp.ones((4, 1)), jax.random.PRNGKey(0))
    assert math.isnan(compute_proxies(["jacob_cov"], inputs).values["jacob_cov"].value)


def test_fisher_of_an_mlp_sums_activation_times_gradient_per_unit() -> None:
    with jax.enable_x64(True):
        t = tiny("mlp", MLP, (3, 4, 1), n=6)
        value = _values(t, ["fisher"])["fisher"]
    p = mlp_pass(t)
    expected = sum(0.5 * np.sum(np.mean((a * g) ** 2, axis=0)) for a, g in ((p["pre"], p["dpre"]), (p["z"], p["dz"])))
    assert value == pytest.approx(expected, rel=1e-9)


def test_fisher_of_a_cnn_sums_over_positions_per_channel() -> None:
    with jax.enable_x64(True):
        t = tiny("cnn", CONV, (7, 7, 1), n=5)
        value = _values(t, ["fisher"])["fisher"]
    p = conv2x2_pass(t)
    per_channel = np.einsum("nijc,nijc->nc", p["pre"], p["dpre"])
    expected = 0.5 * np.sum(np.mean(per_channel**2, axis=0)) + 0.5 * np.sum(np.mean((p["z"] * p["dz"]) ** 2, 0))
    assert value == pytest.approx(expected, rel=1e-9)


def test_a_plain_apply_fn_gets_the_proxies_that_need_nothing_else() -> None:
    plain = [name for name in PUBLISHED if not PROXIES[name].requires]
    assert set(plain) == {"zico", "jacob_cov", "az_complexity"}
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 5))
    w, v = jax.random.normal(jax.random.PRNGKey(1), (5, 4)), jax.random.normal(jax.random.PRNGKey(2), (4, 3))
    inputs = ProxyInputs(lambda p, xb: jnp.tanh(xb @ p["w"]) @ p["v"], {"w": w, "v": v}, x,
                         jax.nn.one_hot(jnp.arange(6) % 3, 3), jax.random.PRNGKey(0))
    values = compute_proxies(plain, inputs).values
    assert all(math.isfinite(v.value) for v in values.values())
    with pytest.raises(ValueError, match="needs probe_fn"):
        compute_proxies(["fisher"], inputs)


@pytest.mark.parametrize("family", sorted(LIGHT))
def test_every_family_gets_every_published_proxy_finite(family: str) -> None:
    x = jax.random.uniform(jax.random.PRNGKey(1), (6, 8, 8, 1))
    built = build_model(family, LIGHT[family], input_shape=(8, 8, 1), n_classes=3, key=jax.random.PRNGKey(0))
    inputs = ProxyInputs.from_model(built, x, jax.nn.one_hot(jnp.arange(6) % 3, 3), key=jax.random.PRNGKey(2))
    values = compute_proxies(PUBLISHED, inputs).values
    assert {name: v.value for name, v in values.items() if not math.isfinite(v.value)} == {}
    assert values["az_complexity"].value == built.flops
