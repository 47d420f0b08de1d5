"""Tiny built models with fixed float64 parameters, and their forward and backward passes by hand in numpy.

The hand computations follow the families' docstrings (``mlp``: x ↦ tanh(xW₁ + b₁)W₂ + b₂; ``cnn`` with one
2 × 2, stride-2 convolution (non-overlapping patches), ReLU, global average pooling, linear head) and share
no code with ntksearch. Call everything inside ``jax.enable_x64(True)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ntksearch.models import build_model
from ntksearch.proxies import ProxyInputs


@dataclass
class Tiny:
    """A built model with random float64 parameters (biases included), a batch and its one-hot labels."""

    inputs: ProxyInputs
    weights: dict[str, np.ndarray]  # path → array, e.g. "layers.0.kernel"
    x: np.ndarray
    y: np.ndarray


def tiny(family: str, point: dict, input_shape: tuple[int, ...], n: int, n_classes: int = 3, seed: int = 0) -> Tiny:
    built = build_model(family, point, input_shape=input_shape, n_classes=n_classes, key=jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(scale=0.7, size=a.shape)), built.params)
    weights = {".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path[:-1]): np.asarray(leaf)
               for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
    x = rng.uniform(-1.0, 1.0, size=(n, *input_shape))
    y = np.eye(n_classes)[np.arange(n) % n_classes]
    inputs = ProxyInputs(built.apply_fn, params, jnp.asarray(x), jnp.asarray(y), jax.random.PRNGKey(1),
                         features_fn=built.features_fn, probe_fn=built.probe_fn, flops=built.flops)
    return Tiny(inputs, weights, x, y)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def mlp_pass(t: Tiny, rows: slice = slice(None)) -> dict[str, np.ndarray]:
    """Forward and backward of the mean cross-entropy over ``rows`` for a one-hidden-layer tanh MLP."""
    w1, b1 = t.weights["layers.0.kernel"], t.weights["layers.0.bias"]
    w2, b2 = t.weights["head.kernel"], t.weights["head.bias"]
    x, y = t.x[rows].reshape(len(t.x[rows]), -1), t.y[rows]
    pre = x @ w1 + b1
    h = np.tanh(pre)
    z = h @ w2 + b2
    dz = (softmax(z) - y) / len(x)
    dpre = (dz @ w2.T) * (1 - h**2)
    return {"x": x, "pre": pre, "h": h, "z": z, "dz": dz, "dpre": dpre, "dw1": x.T @ dpre, "dw2": h.T @ dz,
            "input_jacobian": ((w2.sum(axis=1) * (1 - h**2)) @ w1.T)}


def conv2x2_pass(t: Tiny) -> dict[str, np.ndarray]:
    """One 2 × 2 stride-2 SAME convolution (zero padding at the end for odd sizes), ReLU, mean pool, head."""
    kernel, bias = t.weights["stages.0.0.conv1.kernel"], t.weights["stages.0.0.conv1.bias"]
    w, b = t.weights["head.kernel"], t.weights["head.bias"]
    n, height, width, c_in = t.x.shape
    out_h, out_w = -(-height // 2), -(-width // 2)
    padded = np.zeros((n, 2 * out_h, 2 * out_w, c_in))
    padded[:, :height, :width] = t.x
    valid = np.zeros((2 * out_h, 2 * out_w))
    valid[:height, :width] = 1.0
    patches = padded.reshape(n, out_h, 2, out_w, 2, c_in).transpose(0, 1, 3, 2, 4, 5)  # (n, i, j, a, b, c)
    pre = np.einsum("nijabc,abco->nijo", patches, kernel) + bias
    h = np.maximum(pre, 0.0)
    z = h.mean(axis=(1, 2)) @ w + b
    dz = (softmax(z) - t.y) / n
    dpre = np.broadcast_to((dz @ w.T)[:, None, None, :] / (out_h * out_w), pre.shape) * (pre > 0)
    valid_patches = valid.reshape(out_h, 2, out_w, 2).transpose(0, 2, 1, 3)  # (i, j, a, b)
    return {"pre": pre, "h": h, "z": z, "dz": dz, "dpre": dpre, "valid": valid_patches}
