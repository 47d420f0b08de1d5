"""Matrix-free access to the Jacobian of a model and to its empirical NTK.

Notation used throughout :mod:`ntksearch.ntk`:

* ``apply_fn(params, x)`` is the model, ``params`` any pytree of arrays, the output any shape.
* θ ∈ Rᵖ is ``params`` flattened (``jax.flatten_util.ravel_pytree``), z = vec(apply_fn(params, x)) ∈ Rⁿ
  the flattened output (the "state": batch × outputs, or batch × time × hidden for a recurrent trajectory).
* J = ∂z/∂θ ∈ Rⁿˣᵖ and the empirical NTK K = J Jᵀ ∈ Rⁿˣⁿ (symmetric PSD, rank ≤ min(n, p)).

Neither J nor K is ever formed here. Two products are available, each one automatic-differentiation pass:

* ``jvp``: v ∈ Rᵖ ↦ J v ∈ Rⁿ (forward mode, :func:`jax.jvp`),
* ``vjp``: u ∈ Rⁿ ↦ Jᵀ u ∈ Rᵖ (reverse mode, :func:`jax.vjp`),

and their composition ``matvec``: u ↦ K u = J (Jᵀ u) (one VJP then one JVP). The batched versions map over a
leading probe axis with :func:`jax.vmap`; inside one call the model is linearised once (one primal pass) and
the linearisation is shared by every probe of the block.

All functions are pure and jit-compiled with ``apply_fn`` as a static argument: calls with the same
``apply_fn`` object (or an equal, hashable one) and the same shapes reuse the compiled code. Computation
runs in the dtype of the parameters: float32 by default, float64 when ``jax_enable_x64`` is on and the
parameters are float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

Array = jax.Array
Params = Any
ApplyFn = Callable[[Params, Array], Array]
Side = Literal["state", "param"]  # probes in Rⁿ (images Jᵀu, VJPs) or in Rᵖ (images J w, JVPs)

__all__ = [
    "ApplyFn",
    "Linearization",
    "NTKOperator",
    "Side",
    "adjoint_images",
    "checked_output",
    "checked_params",
    "flat_model",
    "images",
    "jvp_batch",
    "kvp_batch",
    "linearize",
    "smaller_side",
    "vjp_batch",
]


def flat_model(apply_fn: ApplyFn, params: Params, x: Array) -> tuple[Callable[[Array], Array], Array]:
    """Return ``(f, θ)`` with f: Rᵖ → Rⁿ, f(θ) = vec(apply_fn(unravel(θ), x)), and θ the flat parameters."""
    theta, unravel = ravel_pytree(params)

    def f(flat: Array) -> Array:
        return jnp.ravel(apply_fn(unravel(flat), x))

    return f, theta


class Linearization(NamedTuple):
    """J at one point, from a single forward pass: ``jvp(v) = J v`` and its transpose ``vjp(u) = Jᵀ u``.

    Built inside a traced function with :func:`linearize`; every product reuses the stored residuals, so a
    compiled estimator evaluates the model once however many probes it pushes through.
    """

    z: Array  # (n,) the flattened output at the point
    jvp: Callable[[Array], Array]  # (p,) -> (n,)
    vjp: Callable[[Array], Array]  # (n,) -> (p,)

    def images(self, side: Side, w: Array) -> Array:
        """(b, d) probes → (b, D) images: Jᵀu on the ``"state"`` side, J w on the ``"param"`` side."""
        return jax.vmap(self.vjp if side == "state" else self.jvp)(w)

    def adjoint_images(self, side: Side, img: Array) -> Array:
        """(b, D) images M w → (b, d) products A w = Mᵀ(M w) (K u or JᵀJ w), one pass of the other mode."""
        return jax.vmap(self.jvp if side == "state" else self.vjp)(img)


def linearize(apply_fn: ApplyFn, params: Params, x: Array) -> Linearization:
    """Linearise ``apply_fn`` at ``(params, x)``: one forward pass, then J·v and Jᵀ·u as linear maps.

    Uses :func:`jax.linearize` and :func:`jax.linear_transpose` of the same linear map, so the VJP needs no
    second forward pass.
    """
    f, theta = flat_model(apply_fn, params, x)
    z, f_jvp = jax.linearize(f, theta)
    f_vjp_t = jax.linear_transpose(f_jvp, theta)
    return Linearization(z, f_jvp, lambda u: f_vjp_t(u.astype(z.dtype))[0])


@partial(jax.jit, static_argnums=0)
def jvp_batch(apply_fn: ApplyFn, params: Params, x: Array, v: Array) -> Array:
    """Forward products J vᵢ for a block of parameter-space probes.

    Args:
      v: (b, p) probes. Returns: (b, n), row i = J vᵢ. Cost: b JVPs sharing one linearisation.
    """
    f, theta = flat_model(apply_fn, params, x)
    _, f_jvp = jax.linearize(f, theta)
    return jax.vmap(f_jvp)(v.astype(theta.dtype))


@partial(jax.jit, static_argnums=0)
def vjp_batch(apply_fn: ApplyFn, params: Params, x: Array, u: Array) -> Array:
    """Reverse products Jᵀ uᵢ for a block of state-space probes.

    Args:
      u: (b, n) probes. Returns: (b, p), row i = Jᵀ uᵢ. Cost: b VJPs sharing one forward pass.
    """
    f, theta = flat_model(apply_fn, params, x)
    z, f_vjp = jax.vjp(f, theta)
    return jax.vmap(lambda ui: f_vjp(ui.astype(z.dtype))[0])(u)


@partial(jax.jit, static_argnums=0)
def kvp_batch(apply_fn: ApplyFn, params: Params, x: Array, u: Array) -> Array:
    """NTK products K uᵢ = J (Jᵀ uᵢ) for a block of state-space probes.

    Args:
      u: (b, n). Returns: (b, n). Cost: b VJPs and b JVPs (the "K-matvec" of the Direct method).
    """
    f, theta = flat_model(apply_fn, params, x)
    z, f_vjp = jax.vjp(f, theta)
    _, f_jvp = jax.linearize(f, theta)
    return jax.vmap(lambda ui: f_jvp(f_vjp(ui.astype(z.dtype))[0]))(u)


def smaller_side(n: int, p: int) -> Side:
    """``"state"`` when n ≤ p, else ``"param"``: the side whose Gram matrix (K or JᵀJ) is smaller."""
    return "state" if n <= p else "param"


def images(side: Side, apply_fn: ApplyFn, params: Params, x: Array, w: Array) -> Array:
    """Probe images on one side: (b, n) → (b, p) Jᵀu for ``"state"``; (b, p) → (b, n) J w for ``"param"``.

    With M the map w ↦ image, A = MᵀM is K (state side) or JᵀJ (param side); both have trace ‖J‖²_F.
    """
    fn = vjp_batch if side == "state" else jvp_batch
    return fn(apply_fn, params, x, w)


def adjoint_images(side: Side, apply_fn: ApplyFn, params: Params, x: Array, img: Array) -> Array:
    """Images M w → A w = Mᵀ(M w): K u = J(Jᵀu) on the state side, JᵀJ w on the param side.

    One pass of the *other* AD mode per row: (b, p) → (b, n) by JVP, or (b, n) → (b, p) by VJP.
    """
    fn = jvp_batch if side == "state" else vjp_batch
    return fn(apply_fn, params, x, img)


@dataclass(frozen=True)
class NTKOperator:
    """The empirical NTK of ``apply_fn`` at ``(params, x)`` as a linear operator.

    Holds the model, the point and the sizes; every product is a jit-compiled, vmapped pass (see the module
    docstring). ``n`` is the state dimension, ``p`` the number of parameters.

    Example::

        op = NTKOperator.create(apply_fn, params, x)
        ku = op.matvec(u)            # (n,)  = K u
        jv = op.jvp(v)               # (n,)  = J v
        ju = op.vjp(u_block)         # (b, p) = (Jᵀ uᵢ)ᵢ for a (b, n) block
    """

    apply_fn: ApplyFn
    params: Params
    x: Array
    n: int
    p: int
    out_shape: tuple[int, ...]
    dtype: jnp.dtype

    @classmethod
    def create(cls, apply_fn: ApplyFn, params: Params, x: Array) -> NTKOperator:
        """Build the operator; evaluates the output shape abstractly (nothing is compiled or run).

        Raises:
          ValueError: params has no leaves, or a leaf that is not a floating-point array (a Python number,
            an integer array: they have no derivative), or ``apply_fn`` does not return one floating array.
        """
        leaves = checked_params(params)
        out = checked_output(jax.eval_shape(apply_fn, params, x))
        n = math.prod(int(s) for s in out.shape)
        p = sum(math.prod(leaf.shape) for leaf in leaves)
        return cls(apply_fn, params, x, n, p, tuple(out.shape), jnp.result_type(*leaves))

    def jvp(self, v: Array) -> Array:
        """J v for v of shape (p,) or a block (b, p)."""
        return _single_or_batch(jvp_batch, self, v)

    def vjp(self, u: Array) -> Array:
        """Jᵀ u for u of shape (n,) or a block (b, n)."""
        return _single_or_batch(vjp_batch, self, u)

    def matvec(self, u: Array) -> Array:
        """K u = J (Jᵀ u) for u of shape (n,) or a block (b, n)."""
        return _single_or_batch(kvp_batch, self, u)


def checked_params(params: Params) -> list[Array]:
    """The leaves of ``params``, each a floating-point array; ValueError naming the first leaf that is not.

    The NTK differentiates with respect to every leaf, so a Python number (not traceable as a parameter) or an
    integer array (no derivative: it would silently drop out of J) is refused rather than guessed at.
    """
    with_paths = jax.tree_util.tree_leaves_with_path(params)
    if not with_paths:
        raise ValueError("params has no array leaves: the NTK K = J Jᵀ needs at least one parameter to "
                         "differentiate with respect to")
    for path, leaf in with_paths:
        where = f"params{jax.tree_util.keystr(path)}"
        if not hasattr(leaf, "dtype") or not hasattr(leaf, "shape"):
            raise ValueError(f"{where} is a Python {type(leaf).__name__} ({leaf!r}), not an array; the NTK "
                             "differentiates every leaf of params: pass parameters as float arrays "
                             "(jnp.asarray) and close over constants in apply_fn")
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(f"{where} has dtype {leaf.dtype} (shape {tuple(leaf.shape)}), which has no "
                             "derivative, so it would drop out of the NTK; keep integer state out of params "
                             "(close over it in apply_fn) or make it a float array")
    return [leaf for _, leaf in with_paths]


def checked_output(out: Any) -> jax.ShapeDtypeStruct:
    """``apply_fn``'s (abstract) output, which must be one floating-point array; ValueError otherwise."""
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        count = f" of {len(out)} items" if isinstance(out, tuple | list | dict) else ""
        raise ValueError(f"apply_fn(params, x) returned a {type(out).__name__}{count}; the NTK needs one array: "
                         "return the model output alone (e.g. lambda p, x: model(p, x)[0])")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"apply_fn(params, x) returned an integer array ({out.dtype}); the NTK needs "
                         "floating-point outputs")
    return out


def _single_or_batch(fn: Callable[..., Array], op: NTKOperator, w: Array) -> Array:
    w = jnp.asarray(w)
    if w.ndim == 1:
        return fn(op.apply_fn, op.params, op.x, w[None])[0]
    return fn(op.apply_fn, op.params, op.x, w)
