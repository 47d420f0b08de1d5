"""Shape buckets: score many candidates with one compiled program by padding them to a few shapes, exactly.

Every sampled architecture has new shapes, so every candidate used to compile its own programs (seconds on a
CPU) for a few hundred milliseconds of NTK work. A *padded program* is a family's forward pass at shapes taken
from a small grid (:class:`BucketGrid`: widths and hidden sizes rounded up; optionally depth rounded up with
identity-bypassed layers) with the real units and layers, and optionally menu choices (activation,
normalisation), as **runtime data**: ``apply_fn`` objects of candidates in the same bucket compare equal, so
every ``jax.jit`` keyed on them (the NTK core's) compiles once per bucket.

Exactness. The runtime data (0/1 unit masks, layer switches, integer codes stored as floats) live in the
parameter pytree under ``"runtime"`` and enter the model only through ``jax.lax.stop_gradient``; every
padded unit's output is multiplied by its 0 mask; bypassed layers are dropped with ``jnp.where`` (a select,
so the bypassed branch's gradient is 0, never 0·inf) and menu branches chosen with ``jax.lax.switch``; the
real parameters are the stand-alone build's own values (same key,
same values: the candidate is built on its own, host-side, which compiles nothing) embedded into zeros.
Hence for every input

* the logits equal the stand-alone model's (up to the summation order of padded zeros), and
* every padded parameter and every runtime leaf has an identically zero Jacobian column, so
  K = J Jᵀ = Σ_θ ∂f/∂θ ∂f/∂θᵀ is the stand-alone NTK: the added columns contribute exactly 0.

What is *not* preserved is anything that looks at the parameter vector itself: its length p (parameter
counts, and the NTK estimators' choice of side and method, which compare p with the state size n), per-weight
statistics over padded entries (ZiCo's 0/0), and the intermediate tensors' shapes (NASWOT/SWAP/MeCo codes of
padded units, AZ-NAS/Fisher taps). A caller computes those on the stand-alone build
(:mod:`ntksearch.search.bucketed` says which proxies run where). :func:`ntksearch.models.padded.bucket_candidate`
puts a built candidate into its bucket.

The grid (:data:`DEFAULT_GRID`) trades padding FLOPs against compilations; ``benchmarks/RESULTS.md`` records
the measurement it was chosen from.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ntksearch.models.layers import ACTIVATIONS

__all__ = [
    "DEFAULT_GRID",
    "BucketGrid",
    "Bucketed",
    "PaddedProgram",
    "activation",
    "choose",
    "embed",
    "masked_layer_norm",
    "runtime",
    "unit_mask",
]

Array = jax.Array
Params = Any


@dataclass(frozen=True)
class BucketGrid:
    """The sizes candidates are padded to.

    Attributes:
      widths: increasing sizes a width, channel count or hidden size is rounded up to; a size above the last
        is its own bucket (no padding).
      depths: increasing layer counts a depth is rounded up to (extra layers are identity-bypassed) in
        ``uniform`` buckets; a depth above the last is its own bucket.
      uniform: every layer slot at the rounded-up widest layer's width, depth rounded up (few buckets, much
        padding when widths vary); otherwise each layer's width rounded up on its own, depth exact.
      menus: ``((hyperparameter, choices), ...)``: the values of a discrete choice (activation, norm) that one
        program selects among at run time (a search passes its space's choices); a value outside its menu,
        or of a hyperparameter without one, is a static part of the bucket. Longer menus mean fewer buckets
        but larger programs to compile.
    """

    widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    depths: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
    uniform: bool = False
    menus: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def menu(self, name: str, value: Any) -> tuple[Any, ...]:
        """The choices one program offers for hyperparameter ``name`` when the candidate has ``value``."""
        choices = dict(self.menus).get(name, ())
        return tuple(choices) if value in choices else (value,)

    def width(self, size: int) -> int:
        """The smallest grid width ≥ ``size`` (``size`` itself beyond the grid)."""
        return _round_up(self.widths, size)

    def depth(self, count: int) -> int:
        """The smallest grid depth ≥ ``count`` (``count`` itself beyond the grid)."""
        return _round_up(self.depths, count)


def _round_up(grid: tuple[int, ...], size: int) -> int:
    i = bisect.bisect_left(grid, size)
    return grid[i] if i < len(grid) else int(size)


DEFAULT_GRID = BucketGrid()


class PaddedProgram:
    """Base of a family's padded forward pass: a frozen dataclass of static shapes, hashable and equal by them.

    Subclasses are ``@dataclass(frozen=True)`` whose fields are the bucket (every shape and static choice of
    the program) and implement :meth:`evaluate`; calling the object runs it jit-compiled with the object as
    the static argument, so one compilation serves every candidate of the bucket.
    """

    def __call__(self, params: Params, x: Array) -> Array:
        return _jitted_call(self, params, x)

    def evaluate(self, params: Params, x: Array) -> Array:
        """The uncompiled forward pass: logits (N, n_classes) of a batch (N, *input_shape)."""
        raise NotImplementedError


@partial(jax.jit, static_argnums=0)
def _jitted_call(fn: PaddedProgram, params: Params, x: Array) -> Array:
    return fn.evaluate(params, x)


class Bucketed(NamedTuple):
    """A candidate inside its bucket's padded program.

    Attributes:
      apply_fn: ``(params, x) -> logits (N, n_classes)``, equal for every candidate of the bucket; also the
        NTK state (padding is offered for candidates whose state is the logits).
      params: the real parameters embedded into the padded shapes (zeros elsewhere) plus ``"runtime"`` data.
    """

    apply_fn: PaddedProgram
    params: Params


# -- helpers of the padded programs ------------------------------------------------------------------------


def embed(value: Array, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` written into the leading corner of zeros of ``shape`` (same rank, each axis ≥ value's)."""
    value = np.asarray(value)
    out = np.zeros(shape, value.dtype)
    out[tuple(slice(0, s) for s in value.shape)] = value
    return out


def unit_mask(size: int, padded: int, dtype: Any = np.float32) -> np.ndarray:
    """(padded,) 1 for the first ``size`` units, 0 for the padding."""
    return (np.arange(padded) < size).astype(dtype)


def runtime(params: Params) -> Mapping[str, Array]:
    """The runtime data of padded params, gradient-free (their Jacobian columns are exactly zero)."""
    return jax.tree.map(jax.lax.stop_gradient, params["runtime"])


def choose(code: Array, branches: list[Callable[[Array], Array]], x: Array) -> Array:
    """``branches[code](x)`` for a runtime code (``lax.switch``: only that branch runs; a single branch is
    called directly)."""
    if len(branches) == 1:
        return branches[0](x)
    return jax.lax.switch(code.astype(jnp.int32), branches, x)


def activation(menu: tuple[str, ...], code: Array, pre: Array) -> Array:
    """The activation ``menu[code]`` (registry names) applied to ``pre``."""
    return choose(code, [ACTIVATIONS[name] for name in menu], pre)


def masked_layer_norm(x: Array, mask: Array, scale: Array, bias: Array, *, axes: tuple[int, ...] = (-1,),
                      eps: float = 1e-6) -> Array:
    """Flax's LayerNorm statistics over the real entries only (``mask`` broadcast to x), padding → 0.

    μ = Σ m x / Σ m, σ² = max(0, Σ m x² / Σ m − μ²) over ``axes`` (Σ m at least 1, so an all-padding slot
    gives no 0/0), y = ((x − μ) / √(σ² + ε) · scale + bias) · m: the formula (fast variance, ε = 1e-6) of
    ``nnx.LayerNorm``, so the real entries equal its output.
    """
    mask = jnp.broadcast_to(mask, x.shape)
    count = jnp.maximum(jnp.sum(mask, axis=axes, keepdims=True), 1.0)  # ≥ 1: no 0/0 in unused branches
    mean = jnp.sum(x * mask, axis=axes, keepdims=True) / count
    mean2 = jnp.sum(x * x * mask, axis=axes, keepdims=True) / count
    var = jnp.maximum(0.0, mean2 - mean * mean)
    return ((x - mean) * (jax.lax.rsqrt(var + eps) * scale) + bias) * mask
