"""One abstract trace of a model's forward pass, read by the choices made before compiling its NTK programs.

:func:`~ntksearch.ntk.estimators.ntk_metrics`, :func:`~ntksearch.ntk.spectra.lambda_max` and
:func:`~ntksearch.ntk.linearised.linearise_kernel` decide two things per model before they compile anything:
whether products go through a dense per-example Jacobian (:func:`ntksearch.ntk.jacobian.dense_jacobian_pays`,
from the pass's matrix-product flops and output shape) and at which XLA optimisation level to compile
(:func:`ntksearch.ntk.compile.compiles_fast`, from its primitives). Both read one :class:`ForwardPass`, traced
once with :func:`jax.make_jaxpr` (shapes only: nothing runs).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jax
from jax.extend.core import jaxprs_in_params

from ntksearch.ntk.operator import ApplyFn, Array, Params

__all__ = ["ForwardPass", "trace_forward"]


@dataclass(frozen=True)
class ForwardPass:
    """What one trace of ``apply_fn(params, x)`` tells.

    Attributes:
      product_flops: multiply-add flops (2 per product) of its matrix products (``dot_general``) and
        convolutions (``conv_general_dilated``), nested calls included and a loop body counted once;
        elementwise operations not counted.
      out: the abstract output (shape and dtype).
      primitives: the names of every primitive it binds, in nested calls and loop bodies too.
      batch_statistics: whether it always reduces over the leading axis of a value whose leading size is the
        batch size N > 1 (a sum, mean, max or min over examples: batch normalisation, centring on the batch):
        its examples then look coupled, and the per-example computations (the dense Jacobian, the factored
        kernel), whose own checks would compile and then refuse them, are not tried. Shapes only: a reduction
        over the first axis of a weight with N rows flags it too (such a model keeps its AD products); one inside
        a branch of a ``cond`` (a run-time menu that may not take it) does not (the checks catch it if taken).
    """

    product_flops: float
    out: jax.ShapeDtypeStruct
    primitives: frozenset[str]
    batch_statistics: bool


_REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin"})


def trace_forward(apply_fn: ApplyFn, params: Params, x: Array) -> ForwardPass:
    """Trace ``apply_fn(params, x)`` once (abstractly) and summarise it as a :class:`ForwardPass`."""
    closed, out = jax.make_jaxpr(apply_fn, return_shape=True)(params, x)
    equations = list(_equations(closed.jaxpr))
    n = jax.numpy.shape(x)[0] if jax.numpy.ndim(x) else 1
    return ForwardPass(sum(_product_flops(e) for e, _ in equations), out,
                       frozenset(e.primitive.name for e, _ in equations),
                       n > 1 and any(not branch and _over_examples(e, n) for e, branch in equations))


def _over_examples(eqn: Any, n: int) -> bool:
    """Whether ``eqn`` reduces over a leading axis of size n."""
    if eqn.primitive.name not in _REDUCTIONS:
        return False
    shape = eqn.invars[0].aval.shape
    return 0 in eqn.params["axes"] and len(shape) > 0 and shape[0] == n


def _equations(jaxpr: Any, in_branch: bool = False) -> Iterator[tuple[Any, bool]]:
    """(equation, whether it lies inside a branch of a ``cond``) for every equation of ``jaxpr`` and of the
    jaxprs nested in its equations' parameters, depth first."""
    for eqn in jaxpr.eqns:
        yield eqn, in_branch
        for sub in jaxprs_in_params(eqn.params):
            yield from _equations(sub, in_branch or eqn.primitive.name == "cond")


def _product_flops(eqn: Any) -> float:
    out = eqn.outvars[0].aval.shape if eqn.outvars else ()
    if eqn.primitive.name == "dot_general":
        (contract, _), _ = eqn.params["dimension_numbers"]
        return 2.0 * math.prod(out) * math.prod(eqn.invars[0].aval.shape[i] for i in contract)
    if eqn.primitive.name == "conv_general_dilated":  # each output sums over in-features × window
        rhs, spec = eqn.invars[1].aval.shape, eqn.params["dimension_numbers"].rhs_spec
        return 2.0 * math.prod(out) * math.prod(rhs[i] for i in spec[1:])
    return 0.0
