"""``transformer``: a small encoder on sequences (images read row by row).

Inputs become (N, T, F) (images (H, W, C) → T = H rows of W·C features). A linear row embedding to
``width = heads · head_dim`` plus a learned positional embedding (and a learned class token first with
``readout: cls``), then ``depth`` encoder blocks of multi-head self-attention and an MLP of
``round(mlp_ratio · width)`` hidden units, each sub-layer residual, with layer norm before (``pre_norm``, plus
a final norm) or after it. Readout: the mean over tokens or the class token, then a linear head.
Dropout (training mode) on each sub-layer's output. ``features_fn`` gives the input of each MLP activation
(N, T, hidden); the attention softmax is a normalisation across tokens, not a unit nonlinearity, and is left out.
The blocks (:class:`~ntksearch.models.layers.Ctx`) are the residual stream after each sub-layer (attention, MLP).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ntksearch.models.base import FamilyModel, family_builder
from ntksearch.models.hyper import Hyper
from ntksearch.models.layers import (
    ACTIVATION,
    DROPOUT,
    EMBEDDING_INIT,
    INIT,
    INIT_SCALE,
    Ctx,
    Identity,
    VarianceScaling,
    as_sequence,
    dense,
    make_init,
    make_norm,
    sequence_shape,
)

__all__ = ["HYPERPARAMETERS", "READOUTS", "EncoderBlock", "SelfAttention", "Transformer", "build"]

Array = jax.Array
READOUTS = ("mean", "cls")

HYPERPARAMETERS: dict[str, Hyper] = {
    "depth": Hyper("int", 2, "encoder blocks", low=1, high=24),
    "heads": Hyper("int", 2, "attention heads", low=1, high=32),
    "head_dim": Hyper("int", 16, "width of each head (model width = heads · head_dim)", low=1, high=512),
    "mlp_ratio": Hyper("float", 2.0, "MLP hidden units / model width", low=0.0, low_open=True, high=16.0),
    "pre_norm": Hyper("bool", True, "layer norm before each sub-layer (else after the residual sum)"),
    "readout": Hyper("name", "mean", "mean over tokens or a class token", names=READOUTS),
    "activation": dataclasses.replace(ACTIVATION, default="gelu"),
    "dropout": DROPOUT,
    "init": INIT,
    "init_scale": INIT_SCALE,
}


class SelfAttention(nnx.Module):
    """Multi-head self-attention (N, T, width) → (N, T, width), softmax(q kᵀ/√d) v per head."""

    def __init__(self, width: int, heads: int, init: VarianceScaling, rngs: nnx.Rngs):
        self.qkv = dense(width, 3 * width, init, rngs)
        self.out = dense(width, width, init, rngs)
        self.heads = heads

    def __call__(self, x: Array) -> Array:
        n, t, width = x.shape
        q, k, v = jnp.split(self.qkv(x).reshape(n, t, 3, self.heads, width // self.heads), 3, axis=2)
        q, k, v = (a[:, :, 0] for a in (q, k, v))  # (N, T, heads, head_dim)
        logits = jnp.einsum("nthd,nshd->nhts", q, k) / math.sqrt(width // self.heads)
        mixed = jnp.einsum("nhts,nshd->nthd", jax.nn.softmax(logits, axis=-1), v)
        return self.out(mixed.reshape(n, t, width))


class EncoderBlock(nnx.Module):
    """(N, T, width) → (N, T, width): attention and MLP sub-layers, residual, pre- or post-norm."""

    def __init__(self, width: int, hidden: int, arch: Mapping[str, Any], init: VarianceScaling,
                 rngs: nnx.Rngs):
        self.attn = SelfAttention(width, arch["heads"], init, rngs)
        self.fc1 = dense(width, hidden, init, rngs)
        self.fc2 = dense(hidden, width, init, rngs)
        self.norm1 = make_norm("layer", width, 3, rngs)
        self.norm2 = make_norm("layer", width, 3, rngs)
        self.pre_norm = bool(arch["pre_norm"])
        self.activation = arch["activation"]
        self.dropout = float(arch["dropout"])

    def mlp(self, h: Array, ctx: Ctx) -> Array:
        return self.fc2(ctx.act(self.activation, self.fc1(h)))

    def __call__(self, h: Array, ctx: Ctx) -> Array:
        if self.pre_norm:
            h = ctx.block(h + ctx.dropout(self.attn(self.norm1(h)), self.dropout))
            return ctx.block(h + ctx.dropout(self.mlp(self.norm2(h), ctx), self.dropout))
        h = ctx.block(self.norm1(h + ctx.dropout(self.attn(h), self.dropout)))
        return ctx.block(self.norm2(h + ctx.dropout(self.mlp(h, ctx), self.dropout)))


class Transformer(FamilyModel):
    """(N, H, W, C) or (N, T, F) → logits (N, n_classes); see the module docstring."""

    def __init__(self, arch: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int, *,
                 rngs: nnx.Rngs):
        n_tokens, n_in = sequence_shape("transformer", input_shape)
        init = make_init(arch["init"], arch["init_scale"])
        width = arch["heads"] * arch["head_dim"]
        hidden = max(1, round(arch["mlp_ratio"] * width))
        self.cls_token = arch["readout"] == "cls"
        if self.cls_token:
            self.cls = nnx.Param(EMBEDDING_INIT(rngs.params(), (1, width)))
        self.embed = dense(n_in, width, init, rngs)
        self.pos = nnx.Param(EMBEDDING_INIT(rngs.params(), (n_tokens + self.cls_token, width)))
        self.blocks = nnx.List([EncoderBlock(width, hidden, arch, init, rngs) for _ in range(arch["depth"])])
        self.final_norm = make_norm("layer", width, 3, rngs) if arch["pre_norm"] else Identity()
        self.head = dense(width, n_classes, init, rngs)

    def __call__(self, x: Array, ctx: Ctx | None = None) -> Array:
        ctx = ctx or Ctx()
        h = self.embed(as_sequence(x))
        if self.cls_token:
            h = jnp.concatenate([jnp.broadcast_to(self.cls[...], (h.shape[0], 1, h.shape[2])), h], axis=1)
        h = h + self.pos[...]
        for block in self.blocks:
            h = block(h, ctx)
        h = self.final_norm(h)
        return self.head(h[:, 0] if self.cls_token else h.mean(axis=1))


build = family_builder("transformer", Transformer, HYPERPARAMETERS)
