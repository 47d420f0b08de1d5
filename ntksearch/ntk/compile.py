"""How the NTK core's programs are compiled: XLA's default optimisation, or its fast-compiling level 0.

Scoring a candidate runs its product kernel a few dozen times on a small batch, so a cold search spends most
of its time compiling (XLA:CPU's LLVM back end), not running. :func:`jitted` gives the same function compiled
either way; the values agree up to float rounding. With :data:`CPU_COMPILE_OPTIONS`, level 0 compiles 2.1–3.9×
faster and its programs run 1.7–3.9× longer for MLPs, 2.6–5.9× for recurrent networks (loops lose
vectorisation), and far longer for convolutions. Which pays depends on how often a candidate's kernel runs (the
default score's Lanczos run: ≈50 calls) and how long a call takes, which grows with the forward pass's
matrix-product flops F (``benchmarks/compile_levels.py``, two runs, 2-core CPU, digits batch of 32, 2-row
kernel): the default level breaks even after 9–49 calls for every measured MLP with F ≥ 2²⁵ ≈ 34 M (up to 69
between 2²⁴ and 2²⁵), after 15–52 for every recurrent network with F ≥ 2²³ ≈ 8.4 M (a loop body's flops counted
once; 48–63 just below it, at 8.0–8.2 M), and after hundreds for small models.
Hence the ``compile_mode`` of the metric functions and of :class:`~ntksearch.ntk.options.NTKOptions` /
:class:`~ntksearch.ntk.options.LinearisedOptions`: ``"fast"`` (level 0), ``"optimised"`` (XLA's default) or
``"auto"`` (the default, :func:`compiles_fast`): fast unless the model's forward pass has a convolution or
does at least :data:`OPTIMISED_FROM_FLOPS` = 2²⁵ matrix-product flops, or 2²³
(:data:`OPTIMISED_LOOPS_FROM_FLOPS`) when it has a loop: for each kind, the smallest power of two above which
every measured model broke even within 60 calls in both runs. (The rule is older than these numbers: with XLA's
default emitters it gave 2²⁶ and 2²⁴, tested then on TPE searches; ``benchmarks/RESULTS.md``.) A long estimate
on a large batch (thousands of products of one model) runs faster ``"optimised"``.

At either level the programs compile with :data:`CPU_COMPILE_OPTIONS` (XLA:CPU's LLVM-IR loop-fusion emitters,
when the installed XLA still has them: :func:`compiler_options`): cold cnn searches compile 21–28% less and
score 1.11–1.21× more candidates per minute, the same scores up to float rounding (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache
from typing import Any

import jax
import jax.numpy as jnp

from ntksearch.ntk.forward import ForwardPass
from ntksearch.ntk.options import COMPILE_MODES

__all__ = [
    "CPU_COMPILE_OPTIONS",
    "FAST_COMPILE_OPTIONS",
    "OPTIMISED_FROM_FLOPS",
    "OPTIMISED_LOOPS_FROM_FLOPS",
    "compiler_options",
    "compiles_fast",
    "jitted",
]

FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0}
CPU_COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
"""Options every NTK program compiles with, at either level, when the installed XLA knows them: XLA:CPU's
LLVM-IR loop-fusion emitters instead of its newer MLIR ones. Compilation is mostly LLVM work per fused kernel (a
product kernel of a 10-convolution CNN has ≈ 170), and the older emitters hand LLVM less of it: that kernel
compiles in 1.4 s instead of 1.7 s, the same values up to float rounding (``benchmarks/RESULTS.md``). An
``xla_cpu_`` option; other backends ignore it."""
_SLOW_AT_LEVEL_0 = frozenset({"conv_general_dilated"})
_LOOPS = frozenset({"scan", "while"})
OPTIMISED_FROM_FLOPS = 2.0**25  # forward-pass matrix-product flops from which ``auto`` compiles at XLA's default
OPTIMISED_LOOPS_FROM_FLOPS = 2.0**23  # the same for a forward pass with a loop (recurrent networks)


@cache
def _accepts_cpu_options() -> bool:
    """Whether the installed XLA compiles with :data:`CPU_COMPILE_OPTIONS` (one tiny compile, once per process;
    an XLA that no longer has an option rejects it by name)."""
    try:
        jax.jit(jnp.negative, compiler_options=CPU_COMPILE_OPTIONS).lower(jnp.zeros(())).compile()
    except jax.errors.JaxRuntimeError:
        return False
    return True


@cache
def compiler_options(fast: bool) -> dict[str, Any]:
    """The XLA options of an NTK program: :data:`FAST_COMPILE_OPTIONS` when ``fast``, and
    :data:`CPU_COMPILE_OPTIONS` when the installed XLA accepts them (checked on first use, which initialises
    JAX's backend)."""
    return {**(FAST_COMPILE_OPTIONS if fast else {}), **(CPU_COMPILE_OPTIONS if _accepts_cpu_options() else {})}


class _Jitted:
    """``jax.jit(fn, static_argnames=..., compiler_options=compiler_options(fast))``, created on first use (so
    importing ntksearch compiles nothing and leaves JAX's backend uninitialised); calls and attributes
    (``lower``, ``_cache_size``, …) go to that jitted function."""

    def __init__(self, fn: Callable[..., Any], fast: bool, static_argnames: tuple[str, ...]):
        self._spec = (fn, fast, static_argnames)
        self._jit: Callable[..., Any] | None = None
        self._lock = threading.Lock()

    @property
    def jit(self) -> Callable[..., Any]:
        if self._jit is None:
            with self._lock:
                if self._jit is None:
                    fn, fast, static_argnames = self._spec
                    self._jit = jax.jit(fn, static_argnames=static_argnames, compiler_options=compiler_options(fast))
        return self._jit

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.jit(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_spec", "_jit", "_lock"):
            raise AttributeError(name)
        return getattr(self.jit, name)


@cache
def jitted(fn: Callable[..., Any], *, fast: bool, static_argnames: tuple[str, ...] = ()) -> Callable[..., Any]:
    """``jax.jit(fn, static_argnames=...)`` compiled with :func:`compiler_options` (:data:`FAST_COMPILE_OPTIONS`
    when ``fast``), created on first call.

    Cached per (fn, fast, static_argnames): every call site gets the same jitted object, hence one compiled
    program per argument signature.
    """
    return _Jitted(fn, fast, static_argnames)


def compiles_fast(mode: str, forward: ForwardPass, *, runs_once: bool = False) -> bool:
    """Whether ``compile_mode`` ``mode`` compiles a model's programs at level 0: ``"fast"`` yes, ``"optimised"``
    no, ``"auto"`` unless its forward pass ``forward`` (:func:`ntksearch.ntk.forward.trace_forward`; nested calls
    and loop bodies included) has a convolution or does at least :data:`OPTIMISED_FROM_FLOPS` matrix-product
    flops (:data:`OPTIMISED_LOOPS_FROM_FLOPS` when it has a loop; ``forward.product_flops``, on the batch it was
    traced with, a loop body counted once). ``runs_once``: for a program called once per model (the factored
    kernel of :mod:`ntksearch.ntk.structured`), which never wins back a slower compile: ``"auto"`` then
    compiles fast unless the model has a convolution."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile_mode {mode!r}; allowed: {', '.join(COMPILE_MODES)}")
    if mode != "auto":
        return mode == "fast"
    limit = OPTIMISED_FROM_FLOPS if _LOOPS.isdisjoint(forward.primitives) else OPTIMISED_LOOPS_FROM_FLOPS
    return _SLOW_AT_LEVEL_0.isdisjoint(forward.primitives) and (runs_once or forward.product_flops < limit)
