"""The ``mlp`` family's padded program (see :mod:`ntksearch.models.buckets`).

Bucket: input size D, classes C, the slot widths W_0…W_{L−1} and the skip kind of each slot (static), from the
grid (:class:`~ntksearch.models.buckets.BucketGrid`): each hidden width rounded up on its own, or (``uniform``)
every slot at the rounded-up widest layer and L the grid depth of ``depth``. Slot i of a candidate with widths
w_0…w_{d−1} runs, for i < d,

    pre = h W_l + b_l  →  norm (runtime code in the grid's menu: none | layer over the w_l real units | batch)  →  act
    h ← (act(pre) + skip(h)) ⊙ m_l,    m_l = [1]·w_l ++ [0]·(W_l − w_l),

skip being none, the identity (input zero-padded to W_l: the real widths match) or the projection h P_l, fixed
per slot, or (``residual`` in the grid's menus) chosen at run time: every slot then has a projection kernel
and adds s_l·pad(h) + t_l·(h P_l) with runtime 0/1 codes, so P_l's Jacobian columns are exactly zero unless the
candidate projects there; slots i ≥ d exist only in uniform buckets and are bypassed (h unchanged, selected by
``jnp.where``). The head
reads W_{L−1} units (rows ≥ w_{d−1} zero). Eval mode: dropout is the identity, as in the stand-alone
``apply_fn``. ``group`` normalisation has no padded form (such candidates are scored on their own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntksearch.models.base import BuiltModel
from ntksearch.models.buckets import (
    Bucketed,
    BucketGrid,
    PaddedProgram,
    activation,
    choose,
    embed,
    masked_layer_norm,
    runtime,
    unit_mask,
)

__all__ = ["PaddedMLP", "pad_mlp"]

Array = jax.Array

_PADDABLE_NORMS = ("none", "layer", "batch")
_SKIP_CODES = {"none": 0, "identity": 1, "projection": 2}


@dataclass(frozen=True)
class PaddedMLP(PaddedProgram):
    """(N, *input_shape) → logits (N, C) of every mlp candidate of one bucket; see the module docstring."""

    n_inputs: int
    n_classes: int
    widths: tuple[int, ...]  # W_l of every slot
    skips: tuple[str, ...]  # none | identity | projection | runtime (runtime code: 0 none, 1 identity, 2 proj.)
    optional_from: int  # slots from this one on may be bypassed (uniform buckets: 1; else none may)
    activations: tuple[str, ...]  # the activation menu (runtime code: index)
    norms: tuple[str, ...]  # the normalisation menu (runtime code: index)

    def evaluate(self, params: dict[str, Any], x: Array) -> Array:
        data = runtime(params)
        h = x.reshape(x.shape[0], -1)
        for i in range(len(self.widths)):
            out = self._layer(params, data, i, h)
            h = out if i < self.optional_from else jnp.where(data["on"][i] > 0.5, out, h)
        head = params["head"]
        return h @ head["kernel"] + head["bias"]

    def _layer(self, params: dict[str, Any], data: dict[str, Array], i: int, h: Array) -> Array:
        layer, norm, mask = params["layers"][i], params["norms"][i], data["mask"][i]
        pre = h @ layer["kernel"] + layer["bias"]
        branches = {
            "none": lambda v: v,
            "layer": lambda v: masked_layer_norm(v, mask, norm["scale"], norm["bias"]),
            "batch": lambda v: masked_layer_norm(v, 1.0, norm["scale"], norm["bias"], axes=(0,)),
        }
        pre = choose(data["norm"], [branches[name] for name in self.norms], pre)
        out = activation(self.activations, data["activation"], pre)
        if self.skips[i] == "identity":
            out = out + jnp.pad(h, ((0, 0), (0, self.widths[i] - h.shape[1])))
        elif self.skips[i] == "projection":
            out = out + h @ params["skips"][i]["kernel"]
        elif self.skips[i] == "runtime":
            code = data["skip"][i]
            out = out + (h @ params["skips"][i]["kernel"]) * (code == 2)
            if h.shape[1] <= self.widths[i]:  # a wider input cannot be a real identity skip
                out = out + jnp.pad(h, ((0, 0), (0, self.widths[i] - h.shape[1]))) * (code == 1)
        return out * mask


def pad_mlp(built: BuiltModel, grid: BucketGrid) -> Bucketed | None:
    """The mlp candidate ``built`` inside its bucket (None for ``group`` normalisation)."""
    arch = built.point
    if arch["norm"] not in _PADDABLE_NORMS:
        return None
    widths, depth, n_in = list(arch["width"]), int(arch["depth"]), math.prod(built.input_shape)
    slots = ([grid.width(max(widths))] * grid.depth(depth) if grid.uniform
             else [grid.width(w) for w in widths])
    ins = [n_in, *slots[:-1]]
    real_ins = [n_in, *widths[:-1]]
    kinds = ["none" if not arch["residual"] or i >= depth
             else "identity" if real_ins[i] == widths[i] else "projection" for i in range(len(slots))]
    runtime_skips = len(grid.menu("residual", arch["residual"])) > 1
    skips = ("runtime",) * len(slots) if runtime_skips else tuple(kinds)
    activations = grid.menu("activation", arch["activation"])
    norms = tuple(n for n in grid.menu("norm", arch["norm"]) if n in _PADDABLE_NORMS)
    program = PaddedMLP(n_in, built.n_classes, tuple(slots), skips, 1 if grid.uniform else len(slots),
                        activations, norms)
    real = built.params
    dtype = np.asarray(real["head"]["kernel"][...]).dtype
    part = lambda group, i: real[group][i] if group in real and i in real[group] else None
    get = lambda module, name, shape: (embed(module[name][...], shape) if module is not None and name in module
                                       else np.zeros(shape, dtype))
    params = {
        "layers": [{"kernel": get(part("layers", i), "kernel", (ins[i], w)),
                    "bias": get(part("layers", i), "bias", (w,))} for i, w in enumerate(slots)],
        "norms": [{"scale": get(part("norms", i), "scale", (w,)), "bias": get(part("norms", i), "bias", (w,))}
                  for i, w in enumerate(slots)],
        "skips": {i: {"kernel": get(part("skips", i), "kernel", (ins[i], slots[i]))}
                  for i, kind in enumerate(skips) if kind in ("projection", "runtime")},
        "head": {"kernel": get(real["head"], "kernel", (slots[-1], built.n_classes)),
                 "bias": get(real["head"], "bias", (built.n_classes,))},
        "runtime": {
            "mask": [unit_mask(widths[i] if i < depth else 0, w, dtype) for i, w in enumerate(slots)],
            "on": (np.arange(len(slots)) < depth).astype(dtype),
            "norm": np.asarray(norms.index(arch["norm"]), dtype),
            "activation": np.asarray(activations.index(arch["activation"]), dtype),
            **({"skip": np.asarray([_SKIP_CODES[k] for k in kinds], dtype)} if runtime_skips else {}),
        },
    }
    return Bucketed(program, jax.tree.map(jnp.asarray, params))
