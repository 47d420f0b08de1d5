"""The estimator benchmark's three models as pure functions of jax and numpy only, shared by
``ntk_estimators.py`` (current jax) and ``neural_tangents_child.py`` (jax 0.4.25 with neural-tangents), so that
both time the same architecture with the same weights: ``PARAM_TEMPLATES`` gives each model's parameter
pytree structure, so leaves saved in ``jax.tree_util`` order rebuild the same pytree on either side."""

from __future__ import annotations

import jax
import jax.numpy as jnp

MLP_LAYERS = 15
PARAM_TEMPLATES = {
    "mlp": [{"b": 0, "w": 0}] * MLP_LAYERS,
    "gru": {"bh": 0, "bi": 0, "wh": 0, "wi": 0},
    "cnn": {"convs": [0, 0, 0], "head": {"b": 0, "w": 0}},
}


def mlp_apply(params: list[dict], x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[0], -1) @ params[0]["w"] + params[0]["b"]
    for layer in params[1:]:
        h = jax.nn.relu(h) @ layer["w"] + layer["b"]
    return h


def gru_apply(params: dict, x: jax.Array) -> jax.Array:
    """GRU over x (B, T, F) (PyTorch gate layout); returns the hidden trajectory (B, T, H)."""
    hid = params["wh"].shape[0]
    xi = jnp.einsum("btf,fg->tbg", x, params["wi"]) + params["bi"]

    def step(h: jax.Array, xt: jax.Array) -> tuple[jax.Array, jax.Array]:
        hh = h @ params["wh"] + params["bh"]
        r = jax.nn.sigmoid(xt[:, :hid] + hh[:, :hid])
        z = jax.nn.sigmoid(xt[:, hid : 2 * hid] + hh[:, hid : 2 * hid])
        cand = jnp.tanh(xt[:, 2 * hid :] + r * hh[:, 2 * hid :])
        h = (1.0 - z) * cand + z * h
        return h, h

    _, hs = jax.lax.scan(step, jnp.zeros((x.shape[0], hid), x.dtype), xi)
    return jnp.swapaxes(hs, 0, 1)


def cnn_apply(params: dict, x: jax.Array) -> jax.Array:
    dn = ("NHWC", "HWIO", "NHWC")
    h = x
    for w, stride in zip(params["convs"], (1, 2, 2), strict=True):
        h = jax.nn.relu(jax.lax.conv_general_dilated(h, w, (stride, stride), "SAME", dimension_numbers=dn))
    return h.mean(axis=(1, 2)) @ params["head"]["w"] + params["head"]["b"]


APPLY_FNS = {"mlp": mlp_apply, "gru": gru_apply, "cnn": cnn_apply}


def params_from_leaves(name: str, leaves: list) -> object:
    """The model's parameter pytree from its leaves in ``jax.tree_util`` order."""
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(PARAM_TEMPLATES[name]), leaves)
