"""How the NTK core's programs are compiled: XLA's default optimisation, or its fast-compiling level 0.

Scoring a candidate runs its product kernel a few dozen times on a small batch, so a cold search spends most
of its time compiling (XLA:CPU's LLVM back end), not running. :func:`jitted` gives the same function compiled
either way; the values agree up to float rounding. Measured with the default score on the shipped spaces
(2-core CPU, digits batch of 32, 10 random candidates each, ``benchmarks/search_throughput.py``): level 0
halves the compile time of every family; its programs run 2–10× longer (elementwise code, loops and the
products of convolutions lose vectorisation). Net: MLP searches 1.56× faster, recurrent ones unchanged
(0.98×), convolutional ones 0.60× (the slower convolutions cost more than the compile saves). Hence the
``compile_mode`` of the metric functions and of :class:`~ntksearch.ntk.options.NTKOptions` /
:class:`~ntksearch.ntk.options.LinearisedOptions`: ``"fast"`` (level 0), ``"optimised"`` (XLA's default) or
``"auto"`` (the default: fast unless the model's forward pass has a convolution, :func:`compiles_fast`). A long
estimate on a large batch (thousands of products of one model) runs faster ``"optimised"``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import jax

from ntksearch.ntk.forward import ForwardPass
from ntksearch.ntk.options import COMPILE_MODES

__all__ = ["FAST_COMPILE_OPTIONS", "compiles_fast", "jitted"]

FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0}
_SLOW_AT_LEVEL_0 = frozenset({"conv_general_dilated"})


@cache
def jitted(fn: Callable[..., Any], *, fast: bool, static_argnames: tuple[str, ...] = ()) -> Callable[..., Any]:
    """``jax.jit(fn, static_argnames=...)``, compiled with :data:`FAST_COMPILE_OPTIONS` when ``fast``.

    Cached per (fn, fast, static_argnames): every call site gets the same jitted object, hence one compiled
    program per argument signature.
    """
    return jax.jit(fn, static_argnames=static_argnames, compiler_options=FAST_COMPILE_OPTIONS if fast else None)


def compiles_fast(mode: str, forward: ForwardPass) -> bool:
    """Whether ``compile_mode`` ``mode`` compiles a model's programs at level 0: ``"fast"`` yes, ``"optimised"``
    no, ``"auto"`` unless its forward pass ``forward`` (:func:`ntksearch.ntk.forward.trace_forward`; nested calls
    and loop bodies included) has a convolution."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile_mode {mode!r}; allowed: {', '.join(COMPILE_MODES)}")
    return mode == "fast" or (mode == "auto" and _SLOW_AT_LEVEL_0.isdisjoint(forward.primitives))
