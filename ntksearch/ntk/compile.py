"""How the NTK core's programs are compiled: XLA's default optimisation, or its fast-compiling level 0.

Scoring a candidate runs its product kernel a few dozen times on a small batch, so a cold search spends most
of its time compiling (XLA:CPU's LLVM back end), not running. :func:`jitted` gives the same function compiled
either way. Measured on the shipped spaces (2-core CPU, digits batch of 32, one product kernel per
candidate): level 0 compiles in 0.3–0.7× the time, and its programs run 2–10× longer (elementwise code
and loops lose vectorisation; matrix products and convolutions call the same library kernels); the values
agree up to float rounding. Level 0 pays when a program runs for less than the compile time it saves: the
estimates of a search (the metric functions' ``fast_compile=True``, their default); a long estimate on a
large batch (thousands of products) runs faster optimised.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import jax

__all__ = ["FAST_COMPILE_OPTIONS", "jitted"]

FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0}


@cache
def jitted(fn: Callable[..., Any], *, fast: bool, static_argnames: tuple[str, ...] = ()) -> Callable[..., Any]:
    """``jax.jit(fn, static_argnames=...)``, compiled with :data:`FAST_COMPILE_OPTIONS` when ``fast``.

    Cached per (fn, fast, static_argnames): every call site gets the same jitted object, hence one compiled
    program per argument signature.
    """
    return jax.jit(fn, static_argnames=static_argnames, compiler_options=FAST_COMPILE_OPTIONS if fast else None)
