"""``mlp``: a multilayer perceptron on flattened inputs.

Architecture (x flattened to (N, D)): ``depth`` hidden layers, layer l being
``h ← act(norm(W_l h + b_l))`` (plus ``skip(h_prev)`` when ``residual``: the identity when widths match, a
bias-free linear projection otherwise), dropout after each hidden layer in training mode, then a linear head
(N, width[-1]) → (N, n_classes). ``features_fn`` gives each hidden layer's pre-activation (N, width[l]); the
blocks (:class:`~ntksearch.models.layers.Ctx`) are the flattened input (N, D) and each hidden layer's output.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx

from ntksearch.models.base import FamilyModel, family_builder
from ntksearch.models.hyper import Hyper
from ntksearch.models.layers import (
    ACTIVATION,
    DROPOUT,
    GROUPS,
    INIT,
    INIT_SCALE,
    NORM,
    RESIDUAL,
    Ctx,
    Identity,
    dense,
    make_init,
    make_norm,
)

__all__ = ["HYPERPARAMETERS", "MLP", "build"]

HYPERPARAMETERS: dict[str, Hyper] = {
    "depth": Hyper("int", 2, "number of hidden layers", low=1, high=64),
    "width": Hyper("int", 128, "units of each hidden layer", low=1, high=16384, per="depth"),
    "activation": ACTIVATION,
    "norm": NORM,
    "groups": GROUPS,
    "residual": RESIDUAL,
    "dropout": DROPOUT,
    "init": INIT,
    "init_scale": INIT_SCALE,
}


class MLP(FamilyModel):
    """(N, *input_shape) → logits (N, n_classes); see the module docstring."""

    def __init__(self, arch: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int, *,
                 rngs: nnx.Rngs):
        init = make_init(arch["init"], arch["init_scale"])
        sizes = [math.prod(input_shape), *arch["width"]]
        pairs = list(itertools.pairwise(sizes))
        self.layers = nnx.List([dense(a, b, init, rngs) for a, b in pairs])
        self.norms = nnx.List([make_norm(arch["norm"], b, 2, rngs, groups=arch["groups"]) for b in sizes[1:]])
        self.skips = nnx.List([
            Identity() if a == b else dense(a, b, init, rngs, use_bias=False) for a, b in pairs
        ] if arch["residual"] else [])
        self.head = dense(sizes[-1], n_classes, init, rngs)
        self.activation = arch["activation"]
        self.dropout = float(arch["dropout"])

    def __call__(self, x: jax.Array, ctx: Ctx | None = None) -> jax.Array:
        ctx = ctx or Ctx()
        h = ctx.block(x.reshape(x.shape[0], -1))
        for i, (layer, norm) in enumerate(zip(self.layers, self.norms, strict=True)):
            out = ctx.act(self.activation, norm(layer(h)))
            h = ctx.block(ctx.dropout(out + self.skips[i](h) if self.skips else out, self.dropout))
        return self.head(h)


build = family_builder("mlp", MLP, HYPERPARAMETERS)
