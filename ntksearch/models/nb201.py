"""``nb201``: the NAS-Bench-201 cell search space (Dong & Yang, 2020) on (H, W, C) images.

Macro skeleton: stem (3×3 conv → norm) with ``C`` channels; three stages of ``N`` cells with C, 2C, 4C
channels, separated by residual reduction blocks (ReLU-Conv3×3/2-Norm → ReLU-Conv3×3-Norm, plus a 2×2
average-pool → 1×1 conv shortcut); then norm → ReLU → global average pooling → linear head.

The cell is a DAG of 4 nodes: node 0 is the cell input and node j = Σ_{i<j} op_{j,i}(node i); node 3 is the
output. Each of the 6 edges carries one of :data:`NB201_OPS`: ``none`` (the edge is absent),
``skip_connect``, ``nor_conv_1x1``/``nor_conv_3x3`` (ReLU → conv → norm) or ``avg_pool_3x3`` (stride 1).
The edges are the hyperparameters :data:`NB201_EDGES` (``edge_j_i``); :func:`nb201_arch_string` and
:func:`nb201_edges` convert to and from the benchmark's string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, and
the builder also accepts that string as the point's ``arch`` key.

``norm`` defaults to ``batch`` (batch statistics, as NB201's BatchNorm in training mode, without running
averages) and ``init`` to ``he_normal``; ``activation`` (ReLU in NB201) is the nonlinearity of every op;
``dropout`` (0 in NB201) acts on the pooled features in training mode. ``features_fn`` gives the input of
every activation (each ReLU-Conv-Norm op and the final one), (N, H', W', channels) each; the blocks
(:class:`~ntksearch.models.layers.Ctx`) are the stem's output and each cell's and reduction block's output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ntksearch.models.base import BuiltModel, FamilyModel, family_builder
from ntksearch.models.hyper import Hyper
from ntksearch.models.layers import (
    ACTIVATION,
    DROPOUT,
    GROUPS,
    INIT,
    INIT_SCALE,
    NORM,
    BuildError,
    Ctx,
    VarianceScaling,
    conv,
    dense,
    make_init,
    make_norm,
)

__all__ = [
    "HYPERPARAMETERS",
    "NB201",
    "NB201_EDGES",
    "NB201_OPS",
    "build",
    "nb201_arch_string",
    "nb201_edges",
]

Array = jax.Array
NB201_EDGES = ("edge_1_0", "edge_2_0", "edge_2_1", "edge_3_0", "edge_3_1", "edge_3_2")


class ReLUConvNorm(nnx.Module):
    """act → conv (no bias) → norm: (N, H, W, c_in) → (N, ⌈H/stride⌉, ⌈W/stride⌉, c_out)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, arch: Mapping[str, Any],
                 init: VarianceScaling, rngs: nnx.Rngs):
        self.conv = conv(c_in, c_out, kernel, stride, init, rngs, use_bias=False)
        self.norm = make_norm(arch["norm"], c_out, 4, rngs, groups=arch["groups"])
        self.activation = arch["activation"]

    def __call__(self, x: Array, ctx: Ctx) -> Array:
        return self.norm(self.conv(ctx.act(self.activation, x)))


class AvgPool3(nnx.Module):
    """3×3 average pooling, stride 1, SAME padding (padding excluded from the average)."""

    def __call__(self, x: Array, ctx: Ctx) -> Array:
        return nnx.avg_pool(x, (3, 3), (1, 1), padding="SAME", count_include_pad=False)


class Skip(nnx.Module):
    """The identity edge."""

    def __call__(self, x: Array, ctx: Ctx) -> Array:
        return x


OpFactory = Callable[[int, Mapping[str, Any], VarianceScaling, nnx.Rngs], nnx.Module | None]

NB201_OPS: dict[str, OpFactory] = {
    "none": lambda c, arch, init, rngs: None,
    "skip_connect": lambda c, arch, init, rngs: Skip(),
    "nor_conv_1x1": lambda c, arch, init, rngs: ReLUConvNorm(c, c, 1, 1, arch, init, rngs),
    "nor_conv_3x3": lambda c, arch, init, rngs: ReLUConvNorm(c, c, 3, 1, arch, init, rngs),
    "avg_pool_3x3": lambda c, arch, init, rngs: AvgPool3(),
}

_OP = Hyper("name", "nor_conv_3x3", "operation on a cell edge", names=tuple(NB201_OPS))
HYPERPARAMETERS: dict[str, Hyper] = {
    "C": Hyper("int", 16, "channels of the first stage (then 2C, 4C)", low=1, high=512),
    "N": Hyper("int", 5, "cells per stage", low=1, high=16),
    **{edge: dataclasses.replace(_OP, doc=f"operation on {edge}") for edge in NB201_EDGES},
    "norm": dataclasses.replace(NORM, default="batch"),
    "groups": GROUPS,
    "activation": ACTIVATION,
    "dropout": DROPOUT,
    "init": dataclasses.replace(INIT, default="he_normal"),
    "init_scale": INIT_SCALE,
}


def nb201_arch_string(point: Mapping[str, Any]) -> str:
    """The NAS-Bench-201 string of a point's cell: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
    nodes = ["|" + "|".join(f"{point[f'edge_{j}_{i}']}~{i}" for i in range(j)) + "|" for j in (1, 2, 3)]
    return "+".join(nodes)


def nb201_edges(arch: str) -> dict[str, str]:
    """Parse a NAS-Bench-201 string into the six ``edge_j_i`` hyperparameters.

    Raises:
      ValueError: the string is not three ``+``-separated nodes of ``|op~i|`` entries with known ops.
    """
    nodes = arch.split("+")
    edges: dict[str, str] = {}
    for j, node in enumerate(nodes, start=1):
        entries = node.strip("|").split("|") if node.startswith("|") and node.endswith("|") else []
        for i, entry in enumerate(entries):
            op, _, source = entry.rpartition("~")
            if source != str(i) or op not in NB201_OPS:
                raise BuildError(f"bad NB201 edge {entry!r} in {arch!r}; expected 'op~{i}' with op one of: "
                                 f"{', '.join(NB201_OPS)}")
            edges[f"edge_{j}_{i}"] = op
    if len(nodes) != 3 or set(edges) != set(NB201_EDGES):
        raise BuildError(f"bad NB201 arch string {arch!r}; expected |op~0|+|op~0|op~1|+|op~0|op~1|op~2|")
    return edges


class Cell(nnx.Module):
    """(N, H, W, c) → (N, H, W, c): the 4-node DAG of the module docstring."""

    def __init__(self, c: int, arch: Mapping[str, Any], init: VarianceScaling, rngs: nnx.Rngs):
        ops, wiring = [], []
        for edge in NB201_EDGES:
            op = NB201_OPS[arch[edge]](c, arch, init, rngs)
            if op is not None:
                _, j, i = edge.split("_")
                wiring.append((int(j), int(i)))
                ops.append(op)
        self.ops = nnx.List(ops)
        self.wiring = tuple(wiring)  # (target node, source node) of each op

    def __call__(self, x: Array, ctx: Ctx) -> Array:
        nodes = [x]
        for j in (1, 2, 3):
            terms = [op(nodes[i], ctx) for op, (t, i) in zip(self.ops, self.wiring, strict=True) if t == j]
            nodes.append(sum(terms[1:], terms[0]) if terms else jnp.zeros_like(x))
        return nodes[3]


class ReductionBlock(nnx.Module):
    """(N, H, W, c_in) → (N, ⌈H/2⌉, ⌈W/2⌉, c_out): NB201's residual basic block with stride 2."""

    def __init__(self, c_in: int, c_out: int, arch: Mapping[str, Any], init: VarianceScaling,
                 rngs: nnx.Rngs):
        self.conv_a = ReLUConvNorm(c_in, c_out, 3, 2, arch, init, rngs)
        self.conv_b = ReLUConvNorm(c_out, c_out, 3, 1, arch, init, rngs)
        self.shortcut = conv(c_in, c_out, 1, 1, init, rngs, use_bias=False)

    def __call__(self, x: Array, ctx: Ctx) -> Array:
        pooled = nnx.avg_pool(x, (2, 2), (2, 2), padding="SAME", count_include_pad=False)
        return self.shortcut(pooled) + self.conv_b(self.conv_a(x, ctx), ctx)


class NB201(FamilyModel):
    """(N, H, W, C_in) → logits (N, n_classes); see the module docstring."""

    def __init__(self, arch: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int, *,
                 rngs: nnx.Rngs):
        if len(input_shape) != 3:
            raise BuildError(f"nb201 needs (H, W, C) images; got input shape {input_shape}")
        init = make_init(arch["init"], arch["init_scale"])
        c = arch["C"]
        self.stem = conv(input_shape[-1], c, 3, 1, init, rngs, use_bias=False)
        self.stem_norm = make_norm(arch["norm"], c, 4, rngs, groups=arch["groups"])
        body: list[nnx.Module] = []
        for stage in range(3):
            if stage:
                body.append(ReductionBlock(c, 2 * c, arch, init, rngs))
                c *= 2
            body.extend(Cell(c, arch, init, rngs) for _ in range(arch["N"]))
        self.body = nnx.List(body)
        self.last_norm = make_norm(arch["norm"], c, 4, rngs, groups=arch["groups"])
        self.head = dense(c, n_classes, init, rngs)
        self.activation = arch["activation"]
        self.dropout = float(arch["dropout"])

    def __call__(self, x: Array, ctx: Ctx | None = None) -> Array:
        ctx = ctx or Ctx()
        h = ctx.block(self.stem_norm(self.stem(x)))
        for module in self.body:
            h = ctx.block(module(h, ctx))
        h = ctx.act(self.activation, self.last_norm(h))
        return self.head(ctx.dropout(h.mean(axis=(1, 2)), self.dropout))


_build = family_builder("nb201", NB201, HYPERPARAMETERS)


def build(point: Mapping[str, Any], *, input_shape: tuple[int, ...], n_classes: int, key: Array
          ) -> BuiltModel:
    """Build an initialised ``nb201`` model; the cell may be given as the NB201 string under ``arch``."""
    if "arch" in point:
        given = sorted(set(point) & set(NB201_EDGES))
        if given:
            raise BuildError(f"give the nb201 cell either as 'arch' or as edges, not both (got {given})")
        point = {**{k: v for k, v in point.items() if k != "arch"}, **nb201_edges(point["arch"])}
    return _build(point, input_shape=input_shape, n_classes=n_classes, key=key)
