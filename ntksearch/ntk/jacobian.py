r"""The dense Jacobian J ∈ Rⁿˣᵖ from per-example reverse passes, for models whose AD passes cost far more than J.

A model with a leading batch axis, z = vec(f(θ, x₁), …, f(θ, x_B)) with per-example outputs of size O
(n = B·O), has a block-row Jacobian J = [J₁; …; J_B], Jᵢ = ∂f(θ, xᵢ)/∂θ ∈ Rᴼˣᵖ. Reverse mode on one example
gives a row of Jᵢ at the cost of one single-example pass, so all of J costs B·O single-example VJPs: about O
whole-batch passes (vmapped over examples and outputs), whereas a probe Jᵀu with a dense u ∈ Rⁿ costs one
whole-batch pass *per probe*. Once J is on the device every probe product is a matrix product: J w and Jᵀu
cost 2·n·p flops each.

That trade pays when a pass costs much more than 2·n·p flops: weight sharing (convolutions, recurrences)
makes a pass cost 2·B·(positions or steps)·p, against 2·B·O·p for a dense product. A dense layer's pass costs
about 2·B·p, so MLPs with O ≥ 1 outputs stay matrix-free. :func:`dense_jacobian_pays` applies the rule
2·n·p ≤ F, F the flops of the forward pass's matrix products and convolutions counted on its jaxpr
(:class:`~ntksearch.ntk.forward.ForwardPass`; a loop body counted once, so recurrent models are under-counted
and stay matrix-free unless they pay anyway), and n·p ≤ :data:`DENSE_MAX_ENTRIES` (J stays small in memory).

The per-example decomposition assumes examples do not interact (no batch statistics, no cross-example
attention). :func:`dense_jacobian` checks it at the point, in the same compiled program, at the cost of one
whole-batch forward pass: the batched output must match the per-example outputs to √ε relative (ε the dtype's
machine epsilon); a coupled model (batch statistics, centring on the batch) fails it and keeps the matrix-free
products. Written down as a limit: a coupling that leaves the outputs unchanged and only changes derivatives
would pass. A whole-batch JVP in a fixed Gaussian direction (J w against the per-example J·w) catches that too
and was the check before; it cost a second compiled program per architecture (0.8 s of a 3.3 s cold
linearised run on a 62 k-parameter digits CNN), as in :mod:`ntksearch.ntk.structured`, which made the same
choice.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ntksearch.ntk.compile import jitted
from ntksearch.ntk.conv_grads import with_patch_conv_grads
from ntksearch.ntk.forward import ForwardPass
from ntksearch.ntk.operator import ApplyFn, Array, Params

__all__ = ["DENSE_MAX_ENTRIES", "dense_jacobian", "dense_jacobian_pays", "independent", "per_example_jacobian",
           "relative_gap"]

DENSE_MAX_ENTRIES = 1 << 25  # n·p: 128 MiB of float32


def dense_jacobian_pays(forward: ForwardPass, params: Params, x: Array) -> bool:
    """Whether products through a dense per-example J are cheaper than AD passes (see the module docstring), for
    the model whose forward pass at ``(params, x)`` is ``forward`` (:func:`ntksearch.ntk.forward.trace_forward`):
    x and the output share a leading batch axis, n·p ≤ :data:`DENSE_MAX_ENTRIES` and 2·n·p ≤ its product flops."""
    out = forward.out
    if jnp.ndim(x) == 0 or out.ndim == 0:
        return False
    n, p = math.prod(out.shape), sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))
    return out.shape[0] == jnp.shape(x)[0] and n * p <= DENSE_MAX_ENTRIES and 2.0 * n * p <= forward.product_flops


def _per_example_jacobian(apply_fn: ApplyFn, params: Params, x: Array) -> tuple[Array, Array]:
    """(z, J): the flattened output (n,) and the Jacobian (n, p), row b·O + o = ∂f(θ, x_b)_o / ∂θ, by O VJPs per
    example on that example alone (vmapped over examples and outputs; convolution weight gradients as patch
    products, :mod:`ntksearch.ntk.conv_grads`). Valid only for models whose examples do not interact (checked
    by :func:`dense_jacobian`)."""
    theta, unravel = ravel_pytree(params)
    model = with_patch_conv_grads(apply_fn)

    def one_example(xi: Array) -> tuple[Array, Array]:
        z, vjp = jax.vjp(lambda flat: jnp.ravel(model(unravel(flat), xi[None])), theta)
        return z, jax.vmap(lambda c: vjp(c)[0])(jnp.eye(z.shape[0], dtype=z.dtype))

    z, jac = jax.vmap(one_example)(x)
    return z.reshape(-1), jac.reshape(-1, theta.shape[0])


def _checked_jacobian(apply_fn: ApplyFn, params: Params, x: Array) -> tuple[Array, Array, Array]:
    """(z, J, gap): :func:`_per_example_jacobian` and the :func:`relative_gap` between the whole-batch output
    and z."""
    z, jac = _per_example_jacobian(apply_fn, params, x)
    return z, jac, relative_gap(jnp.ravel(apply_fn(params, x)), z)


def relative_gap(ref: Array, other: Array) -> Array:
    """‖ref − other‖/‖ref‖ (0 when both are 0, inf when only ref is): how far a per-example computation is from
    the whole-batch one it should equal."""
    scale, diff = jnp.linalg.norm(ref), jnp.linalg.norm(ref - other)
    return jnp.where(scale > 0, diff / jnp.where(scale > 0, scale, 1.0), jnp.where(diff > 0, jnp.inf, 0.0))


def independent(gaps: Array, dtype: np.dtype) -> bool:
    """Whether every :func:`relative_gap` in ``gaps`` is at most √ε of ``dtype`` (NaN gaps fail): the examples
    did not interact at the point."""
    return bool(np.all(np.asarray(gaps) <= float(np.sqrt(np.finfo(dtype).eps))))


per_example_jacobian = jitted(_per_example_jacobian, fast=False, static_argnames=("apply_fn",))


def dense_jacobian(apply_fn: ApplyFn, params: Params, x: Array, *, fast_compile: bool = False
                   ) -> tuple[Array, Array] | None:
    """(z, J) from :func:`per_example_jacobian` when the model evaluates one example at a time and its examples
    do not interact at this point (the whole-batch output agrees with the per-example ones to √ε: module
    docstring); else None.

    A model that cannot run on a batch of one (a hard-coded batch size) also gives None. ``fast_compile``:
    compile at XLA's level 0 (:mod:`ntksearch.ntk.compile`).
    """
    try:
        z, jac, gap = jitted(_checked_jacobian, fast=fast_compile, static_argnames=("apply_fn",))(apply_fn, params, x)
    except (TypeError, ValueError):  # shape errors from tracing the model on a batch of one
        return None
    return (z, jac) if independent(gap, jac.dtype) else None
