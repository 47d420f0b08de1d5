"""Forward FLOPs counted from the jaxpr of a function, not guessed from a formula.

:func:`count_flops` traces ``fn(*example_args)`` with :func:`jax.make_jaxpr` and sums, equation by equation:

* ``dot_general``: 2 · MACs, MACs = (output elements) · (product of the contracting dimensions);
* ``conv_general_dilated``: 2 · MACs, MACs = (output elements) · (kernel spatial size) · (kernel input
  features, i.e. C_in / feature_group_count);
* elementwise arithmetic and transcendental primitives (:data:`ELEMENTWISE`): one FLOP per output element;
* reductions (:data:`REDUCTIONS`): one FLOP per *input* element (n − 1 operations rounded up), and
  ``reduce_window*`` (pooling): one per output element per window position;
* data movement (reshape, broadcast, slice, gather, convert...) and comparisons: zero.

Sub-jaxprs are counted recursively: ``jit``/``pjit``, ``closed_call``, ``custom_jvp_call``,
``custom_vjp_call``, ``remat`` (once each), ``scan`` (body × ``length``), ``cond`` (the most expensive
branch). ``while`` loops have no static trip count and raise :class:`FlopCountError`, as does any other
primitive that carries a sub-jaxpr.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import jax
from jax.extend import core as jcore

__all__ = ["ELEMENTWISE", "REDUCTIONS", "FlopCountError", "count_flops", "jaxpr_flops"]

ELEMENTWISE = frozenset({
    "add", "add_any", "sub", "mul", "div", "rem", "neg", "max", "min", "abs", "sign", "pow", "integer_pow",
    "square", "sqrt", "rsqrt", "cbrt", "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sin", "cos",
    "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "asinh", "acosh", "atanh", "erf", "erfc", "erf_inv",
    "lgamma", "digamma", "reciprocal",
})
REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin",
                        "cumsum", "cumprod", "cummax", "cumlogsumexp"})
_WINDOW = frozenset({"reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window"})
_CALLS = {  # primitive → name of its ClosedJaxpr/Jaxpr parameter, counted once (pjit, checkpoint: older names)
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
}


class FlopCountError(ValueError):
    """The function contains something whose FLOPs cannot be counted statically (a while loop...)."""


def count_flops(fn: Callable[..., Any], *example_args: Any) -> int:
    """FLOPs of one evaluation of ``fn(*example_args)`` (arrays or ``jax.ShapeDtypeStruct``s).

    Example: a dense layer y = x W + b with x (1, 3), W (3, 4) costs 2·3·4 (dot) + 4 (add) = 28.
    """
    return jaxpr_flops(jax.make_jaxpr(fn)(*example_args).jaxpr)


def jaxpr_flops(jaxpr: jcore.Jaxpr) -> int:
    """FLOPs of a (open) jaxpr, see the module docstring for the rules."""
    return sum(_eqn_flops(eqn) for eqn in jaxpr.eqns)


def _size(aval: Any) -> int:
    return math.prod(getattr(aval, "shape", ()))


def _out_size(eqn: jcore.JaxprEqn) -> int:
    return sum(_size(v.aval) for v in eqn.outvars)


def _inner(jaxpr: Any) -> jcore.Jaxpr:
    return getattr(jaxpr, "jaxpr", jaxpr)  # ClosedJaxpr → Jaxpr


def _eqn_flops(eqn: jcore.JaxprEqn) -> int:
    name = eqn.primitive.name
    if name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs_shape = eqn.invars[0].aval.shape
        return 2 * _out_size(eqn) * math.prod(lhs_shape[d] for d in lhs_contract)
    if name == "conv_general_dilated":
        rhs_shape = eqn.invars[1].aval.shape
        rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, *spatial)
        per_output = rhs_shape[rhs_spec[1]] * math.prod(rhs_shape[d] for d in rhs_spec[2:])
        return 2 * _out_size(eqn) * per_output
    if name in ELEMENTWISE:
        return _out_size(eqn)
    if name in REDUCTIONS:
        return _size(eqn.invars[0].aval)
    if name in _WINDOW:
        return _out_size(eqn) * math.prod(eqn.params["window_dimensions"])
    if name in _CALLS:
        return jaxpr_flops(_inner(eqn.params[_CALLS[name]]))
    if name == "scan":
        return eqn.params["length"] * jaxpr_flops(_inner(eqn.params["jaxpr"]))
    if name == "cond":
        return max(jaxpr_flops(_inner(b)) for b in eqn.params["branches"])
    if name == "while":
        raise FlopCountError("a while loop has no static trip count; its FLOPs cannot be counted")
    if any(True for _ in _sub_jaxprs(eqn.params.values())):
        raise FlopCountError(f"cannot count FLOPs through the higher-order primitive {name!r}")
    return 0


def _sub_jaxprs(values: Iterable[Any]) -> Iterable[Any]:
    for v in values:
        if isinstance(v, jcore.Jaxpr | jcore.ClosedJaxpr):
            yield v
        elif isinstance(v, tuple | list):
            yield from _sub_jaxprs(v)
