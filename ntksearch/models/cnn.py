"""``cnn``: stages of convolution blocks with a global-average-pooling head, on images or sequences.

Inputs are (H, W, C) images (2-D convolutions, ``kernel``×``kernel``) or (T, F) sequences (1-D convolutions
over time with F input channels, kernels of ``kernel`` steps; strides and pooling act on time alone).

Stage s has ``blocks[s]`` blocks of ``channels[s]`` channels and ``kernel[s]``×``kernel[s]`` kernels; its first
block has stride ``stride[s]``; the stage ends with ``pool[s]`` (max/avg pooling by 2, or none). A plain block
is ``act(norm(conv(x)))``; with ``residual`` it is the ResNet basic block
``act(norm(conv(act(norm(conv(x))))) + shortcut(x))``, the shortcut being the identity or a 1×1 strided
projection when the shape changes. Then global average pooling → dropout (training) → linear head.

Convolutions use SAME padding, so spatial sizes are ⌈H/stride⌉ and never collapse to 0: an 8×8 input
under many down-sampling steps bottoms out at 1×1 (further strides and pools are then no-ops).
Convolutions carry a bias only without normalisation (a norm's shift makes it redundant).
``features_fn`` gives the input of every activation, (N, H', W', channels) each; the blocks
(:class:`~ntksearch.models.layers.Ctx`) are the input and each conv block's output (before pooling).
"""

from __future__ import annotations

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
    POOLS,
    RESIDUAL,
    BuildError,
    Ctx,
    Identity,
    VarianceScaling,
    conv,
    dense,
    make_init,
    make_norm,
)

__all__ = ["CNN", "HYPERPARAMETERS", "ConvBlock", "build"]

HYPERPARAMETERS: dict[str, Hyper] = {
    "stages": Hyper("int", 2, "number of stages", low=1, high=8),
    "channels": Hyper("int", 16, "output channels of each stage", low=1, high=2048, per="stages"),
    "blocks": Hyper("int", 1, "conv blocks in each stage", low=1, high=16, per="stages"),
    "kernel": Hyper("int", 3, "kernel size of each stage", low=1, high=11, per="stages"),
    "stride": Hyper("int", 1, "stride of each stage's first block", low=1, high=4, per="stages"),
    "pool": Hyper("name", "none", "2×2 pooling at the end of each stage", names=tuple(POOLS), per="stages"),
    "residual": RESIDUAL,
    "norm": NORM,
    "groups": GROUPS,
    "activation": ACTIVATION,
    "dropout": DROPOUT,
    "init": INIT,
    "init_scale": INIT_SCALE,
}


class ConvBlock(nnx.Module):
    """(N, H, W, c_in) → (N, ⌈H/stride⌉, ⌈W/stride⌉, c_out) (``spatial=2``) or (N, T, c_in) →
    (N, ⌈T/stride⌉, c_out) (``spatial=1``): a plain or residual conv block."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, arch: Mapping[str, Any],
                 init: VarianceScaling, rngs: nnx.Rngs, *, spatial: int = 2):
        bias = arch["norm"] == "none"
        self.conv1 = conv(c_in, c_out, kernel, stride, init, rngs, use_bias=bias, spatial=spatial)
        self.norm1 = make_norm(arch["norm"], c_out, spatial + 2, rngs, groups=arch["groups"])
        self.residual = bool(arch["residual"])
        if self.residual:
            self.conv2 = conv(c_out, c_out, kernel, 1, init, rngs, use_bias=bias, spatial=spatial)
            self.norm2 = make_norm(arch["norm"], c_out, spatial + 2, rngs, groups=arch["groups"])
            same = c_in == c_out and stride == 1
            self.shortcut = (Identity() if same
                             else conv(c_in, c_out, 1, stride, init, rngs, use_bias=False, spatial=spatial))
        self.activation = arch["activation"]

    def __call__(self, x: jax.Array, ctx: Ctx) -> jax.Array:
        h = ctx.act(self.activation, self.norm1(self.conv1(x)))
        if not self.residual:
            return h
        return ctx.act(self.activation, self.norm2(self.conv2(h)) + self.shortcut(x))


class CNN(FamilyModel):
    """(N, H, W, C) or (N, T, F) → logits (N, n_classes); see the module docstring."""

    def __init__(self, arch: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int, *,
                 rngs: nnx.Rngs):
        if len(input_shape) not in (2, 3):
            raise BuildError(f"cnn needs (H, W, C) images or (T, F) sequences; got input shape {input_shape}")
        spatial = len(input_shape) - 1
        init = make_init(arch["init"], arch["init_scale"])
        c_in = input_shape[-1]
        stages = []
        for s, c_out in enumerate(arch["channels"]):
            blocks = []
            for b in range(arch["blocks"][s]):
                stride = arch["stride"][s] if b == 0 else 1
                blocks.append(ConvBlock(c_in, c_out, arch["kernel"][s], stride, arch, init, rngs, spatial=spatial))
                c_in = c_out
            stages.append(nnx.List(blocks))
        self.stages = nnx.List(stages)
        self.pools = tuple(arch["pool"])
        self.head = dense(c_in, n_classes, init, rngs)
        self.dropout = float(arch["dropout"])

    def __call__(self, x: jax.Array, ctx: Ctx | None = None) -> jax.Array:
        ctx = ctx or Ctx()
        h = ctx.block(x)
        for stage, pool in zip(self.stages, self.pools, strict=True):
            for block in stage:
                h = ctx.block(block(h, ctx))
            h = POOLS[pool](h)
        return self.head(ctx.dropout(h.mean(axis=tuple(range(1, h.ndim - 1))), self.dropout))


build = family_builder("cnn", CNN, HYPERPARAMETERS)
