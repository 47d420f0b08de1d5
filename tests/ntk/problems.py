"""Small float64 test models (pure JAX) for the NTK tests: an MLP, a CNN and a vanilla RNN whose output is
its whole hidden trajectory, plus an RNN classifier (a linear head on the last hidden state). Each ``make_*``
returns a :class:`Problem` ``(apply_fn, params, x, y)``; the classifiers (:data:`CLASSIFIERS`) have logits
(N, C) and one-hot y."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Problem(NamedTuple):
    apply_fn: object
    params: object
    x: jax.Array
    y: jax.Array


def _dense(key: jax.Array, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
    return {"w": jax.random.normal(key, (fan_in, fan_out)) / np.sqrt(fan_in), "b": 0.1 * jnp.ones(fan_out)}


def mlp_apply(params: list[dict], x: jax.Array) -> jax.Array:
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def make_mlp(seed: int = 0, batch: int = 16, sizes: tuple[int, ...] = (6, 24, 24, 4)) -> Problem:
    keys = jax.random.split(jax.random.PRNGKey(seed), len(sizes) + 1)
    params = [_dense(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=False)]
    x = jax.random.normal(keys[-1], (batch, sizes[0]))
    y = jax.nn.one_hot(jnp.arange(batch) % sizes[-1], sizes[-1])
    return Problem(mlp_apply, params, x, y)


def cnn_apply(params: dict, x: jax.Array) -> jax.Array:
    dn = ("NHWC", "HWIO", "NHWC")
    h = jax.lax.conv_general_dilated(x, params["c1"], (1, 1), "SAME", dimension_numbers=dn)
    h = jnp.tanh(h)
    h = jax.lax.conv_general_dilated(h, params["c2"], (2, 2), "SAME", dimension_numbers=dn)
    h = jax.nn.relu(h).mean(axis=(1, 2))
    return h @ params["head"]["w"] + params["head"]["b"]


def make_cnn(seed: int = 0, batch: int = 12, classes: int = 3) -> Problem:
    k1, k2, k3, kx = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = {
        "c1": jax.random.normal(k1, (3, 3, 1, 4)) / 3.0,
        "c2": jax.random.normal(k2, (3, 3, 4, 6)) / 6.0,
        "head": _dense(k3, 6, classes),
    }
    x = jax.random.uniform(kx, (batch, 6, 6, 1))
    y = jax.nn.one_hot(jnp.arange(batch) % classes, classes)
    return Problem(cnn_apply, params, x, y)


def rnn_apply(params: dict, x: jax.Array) -> jax.Array:
    """Vanilla tanh RNN over x (B, T, F); the output is the whole hidden trajectory (B, T, H)."""

    def step(h: jax.Array, xt: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = jnp.tanh(xt @ params["wx"] + h @ params["wh"] + params["b"])
        return h, h

    h0 = jnp.zeros((x.shape[0], params["wh"].shape[0]), x.dtype)
    _, hs = jax.lax.scan(step, h0, jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(hs, 0, 1)


def make_rnn(seed: int = 0, batch: int = 4, steps: int = 6, features: int = 3, hidden: int = 5) -> Problem:
    k1, k2, kx, ky = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = {
        "wx": jax.random.normal(k1, (features, hidden)) / np.sqrt(features),
        "wh": 0.9 * jax.random.normal(k2, (hidden, hidden)) / np.sqrt(hidden),
        "b": jnp.zeros(hidden),
    }
    x = jax.random.normal(kx, (batch, steps, features))
    y = jax.random.normal(ky, (batch, steps, hidden))
    return Problem(rnn_apply, params, x, y)


def rnn_classifier_apply(params: dict, x: jax.Array) -> jax.Array:
    """The tanh RNN of :func:`rnn_apply` read out by a linear head on its last hidden state: logits (B, C)."""
    return rnn_apply(params["rnn"], x)[:, -1] @ params["head"]["w"] + params["head"]["b"]


def make_rnn_classifier(seed: int = 0, batch: int = 8, classes: int = 3) -> Problem:
    rnn = make_rnn(seed, batch=batch)
    head = _dense(jax.random.PRNGKey(seed + 1), rnn.params["wh"].shape[0], classes)
    y = jax.nn.one_hot(jnp.arange(batch) % classes, classes)
    return Problem(rnn_classifier_apply, {"rnn": rnn.params, "head": head}, rnn.x, y)


PROBLEMS = {"mlp": make_mlp, "cnn": make_cnn, "rnn": make_rnn}
CLASSIFIERS = {"mlp": make_mlp, "cnn": make_cnn, "rnn": make_rnn_classifier}
