r"""The empirical NTK of a model's dense layers from per-layer factors: exact, without J or probes.

For a parameter W ∈ R^{d_in×d_out} that the model uses once, as the right operand of a dense product
y = a W (a the layer's input), the rows of J belonging to W are outer products: for example i and output o,

    ∂f(x_i)_o/∂W = a_i ⊗ g_io,    g_io = ∂f(x_i)_o/∂y_i ∈ R^{d_out},

so W's part of the NTK needs no Jacobian at all:

    K_W[(i,o), (j,o')] = (a_i · a_j) (g_io · g_jo'),

a Hadamard product of the Gram matrices of the layer inputs (n × n) and of the output gradients (nC × nC).
Every other parameter (biases, normalisation scales, anything used more than once or not through a dense
product) keeps its per-example Jacobian rows J_rest,io and adds J_rest J_restᵀ. Summing the parts gives K
exactly (up to float rounding): K = J_rest J_restᵀ + Σ_W K_W.

**Cost.** Per example: one forward pass and C reverse passes (one per output, vmapped over examples and
outputs, as :func:`ntksearch.ntk.jacobian.per_example_jacobian`), which give every a_i, g_io and J_rest,io;
all in one compiled program that runs once; then, on the host in float64, per layer an n × n and an nC × nC
Gram matrix (2·(nC)²·d_out flops) and 2·(nC)²·p_rest for the rest. The dense per-example Jacobian would
instead cost 2·(nC)²·p for K; Lanczos on the products costs two passes over the batch per step. For an MLP on
a batch of 32 with 10 classes that is ≈ 20 passes for all of K against ≈ 100–200 for a default-score Lanczos
run, and one program to compile instead of a product kernel.

**Which models.** The dense uses are found on the jaxpr of the forward pass on one example (nested ``jit``
calls inlined): a parameter leaf whose only use, through dtype conversions and reshapes, is the right
operand of a ``dot_general`` contracting the last axis of a (1, d_in) input with the first of a (d_in, d_out)
matrix. Products inside loops (``scan``: recurrent weights), convolutions and attention keep their Jacobian
rows, so :func:`structured_pays` accepts a model only when something is factored and the rest is small
(n·p_rest ≤ :data:`REST_MAX_ENTRIES`). The per-example decomposition assumes examples do not interact (no
batch statistics); :func:`structured_kernel` checks it at the point: the whole-batch outputs must agree with
the per-example outputs to √ε relative (ε the dtype's machine epsilon), else it returns None. Batch statistics
fail it (a batch of one normalises to a constant). A model whose examples interact without changing its
outputs (only its derivatives) would pass: no family here does; a whole-batch JVP check would catch it and was
measured at +0.2–0.45 s of compilation per candidate (25–30% of the program), so it is not made.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal, Var

from ntksearch.ntk.compile import jitted
from ntksearch.ntk.jacobian import independent, relative_gap
from ntksearch.ntk.operator import ApplyFn, Array, Params

__all__ = ["KERNEL_MAX_ENTRIES", "REST_MAX_ENTRIES", "StructuredKernel", "dense_uses", "structured_kernel",
           "structured_pays"]

REST_MAX_ENTRIES = 1 << 22  # n·p_rest: the unfactored per-example Jacobian rows kept (16 MiB of float32)
KERNEL_MAX_ENTRIES = 1 << 24  # n·(n + m): K_AA and K_BA (128 MiB in float64 on the host)
_CALLS = frozenset({"pjit", "jit", "closed_call", "core_call"})
_TRANSPARENT = frozenset({"convert_element_type", "reshape", "copy", "copy_p"})
_DENSE_NUMBERS = (((1,), (0,)), ((), ()))

Hook = Callable[[Any, list[Any]], list[Any] | None]


class StructuredKernel(NamedTuple):
    """K on a batch A (and the cross kernel to a batch B), with the outputs at the point.

    Attributes:
      k_aa: (nC, nC) K_AA, rows ordered (example, output). out_a: (nC,) vec f(θ, A).
      k_ba: (mC, nC) K_BA = J_B J_Aᵀ, or None without B. out_b: (mC,) vec f(θ, B), or None.
    """

    k_aa: np.ndarray
    out_a: np.ndarray
    k_ba: np.ndarray | None
    out_b: np.ndarray | None


def _evaluate(jaxpr: Jaxpr, consts: Sequence[Any], args: Sequence[Any], hook: Hook | None = None) -> list[Any]:
    """Evaluate ``jaxpr`` like :func:`jax.core.eval_jaxpr`, inlining nested ``jit`` calls; ``hook(eqn, inputs)``
    may replace an equation's outputs (None: bind the primitive as usual)."""
    env: dict[Var, Any] = dict(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    read = lambda v: v.val if isinstance(v, Literal) else env[v]
    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        outputs = hook(eqn, inputs) if hook is not None else None
        if outputs is None and eqn.primitive.name in _CALLS:
            inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            inner = inner if isinstance(inner, ClosedJaxpr) else ClosedJaxpr(inner, ())
            outputs = _evaluate(inner.jaxpr, inner.consts, inputs, hook)
        elif outputs is None:
            bound = eqn.primitive.bind(*inputs, **eqn.primitive.get_bind_params(eqn.params))
            outputs = bound if eqn.primitive.multiple_results else [bound]
        env.update(zip(eqn.outvars, outputs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def _is_dense(eqn: Any, var: Var) -> bool:
    """Whether ``eqn`` is a dense product a W with ``var`` as W (d_in, d_out) and a (1, d_in)."""
    if eqn.primitive.name != "dot_general" or len(eqn.invars) != 2 or eqn.invars[1] is not var:
        return False
    lhs, rhs = eqn.invars[0].aval, var.aval
    return (eqn.invars[0] is not var and rhs.ndim == 2 and lhs.ndim == 2 and lhs.shape[0] == 1
            and eqn.params["dimension_numbers"] == _DENSE_NUMBERS)


def dense_uses(jaxpr: Jaxpr, n_leaves: int) -> dict[int, Any]:
    """{leaf index: its dense-product equation} for the first ``n_leaves`` inputs of a flat per-example
    ``jaxpr`` whose only use is as W in a dense product (through :data:`_TRANSPARENT` operations)."""
    uses: dict[Var, list[Any]] = {}
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if isinstance(v, Var):
                uses.setdefault(v, []).append(eqn)
    returned = {v for v in jaxpr.outvars if isinstance(v, Var)}
    found = {}
    for index, var in enumerate(jaxpr.invars[:n_leaves]):
        while var not in returned and len(users := uses.get(var, [])) == 1:
            eqn = users[0]
            if eqn.primitive.name in _TRANSPARENT and len(eqn.invars) == 1:
                var = eqn.outvars[0]
                continue
            if _is_dense(eqn, var):
                found[index] = eqn
            break
    return found


class _Analysis(NamedTuple):
    flat: ClosedJaxpr  # the per-example forward pass (inputs: the params' leaves, then x of batch 1)
    dense: dict[int, Any]  # leaf index → dense-product equation
    rest_size: int  # parameters outside the dense products


@lru_cache(maxsize=32)
def _analyse(apply_fn: ApplyFn, treedef: Any, leaves: tuple[jax.ShapeDtypeStruct, ...],
             example: jax.ShapeDtypeStruct) -> _Analysis:
    """Trace the model on one example, inline nested calls, find the dense uses (cached per model and shapes)."""
    closed = jax.make_jaxpr(lambda lv, xi: apply_fn(jax.tree_util.tree_unflatten(treedef, lv), xi))(
        list(leaves), example)
    flat = jax.make_jaxpr(lambda lv, xi: _evaluate(closed.jaxpr, closed.consts, [*lv, xi]))(list(leaves), example)
    dense = dense_uses(flat.jaxpr, len(leaves))
    rest = sum(math.prod(leaf.shape) for i, leaf in enumerate(leaves) if i not in dense)
    return _Analysis(flat, dense, rest)


def _analysis(apply_fn: ApplyFn, params: Params, x: Array) -> _Analysis:
    leaves, treedef = jax.tree_util.tree_flatten(params)
    spec = lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))
    return _analyse(apply_fn, treedef, tuple(map(spec, leaves)), jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))


def structured_pays(apply_fn: ApplyFn, params: Params, x_a: Array, x_b: Array | None, n_outputs: int) -> bool:
    """Whether the factored kernel applies: at least one dense use, n·p_rest ≤ :data:`REST_MAX_ENTRIES` and the
    kernels small, n·(n + m) ≤ :data:`KERNEL_MAX_ENTRIES` (n, m = rows of A and B: examples × ``n_outputs``);
    False for a model that cannot run on one example."""
    try:
        analysis = _analysis(apply_fn, params, x_a)
    except (TypeError, ValueError):  # shape errors from tracing the model on a batch of one
        return False
    n = x_a.shape[0] * n_outputs
    m = 0 if x_b is None else x_b.shape[0] * n_outputs
    return bool(analysis.dense) and n * analysis.rest_size <= REST_MAX_ENTRIES and n * (n + m) <= KERNEL_MAX_ENTRIES


class _Factors(NamedTuple):
    out: Array  # (n, C) per-example outputs
    inputs: list[Array]  # per dense use: (n, d_in) layer inputs a_i
    grads: list[Array]  # per dense use: (n, C, d_out) output gradients g_io
    rest: Array  # (n, C, p_rest) Jacobian rows of the other parameters


def _factors(apply_fn: ApplyFn, params: Params, x: Array) -> _Factors:
    """Every example's layer inputs, output gradients and remaining Jacobian rows (module docstring)."""
    analysis = _analysis(apply_fn, params, x)
    leaves = jax.tree_util.tree_leaves(params)
    dense = list(analysis.dense.items())
    slot = {id(eqn): k for k, (_, eqn) in enumerate(dense)}
    rest_index = [i for i in range(len(leaves)) if i not in analysis.dense]

    def example(rest: list[Array], shifts: list[Array], xi: Array) -> tuple[Array, list[Array]]:
        values = list(leaves)
        for i, _ in dense:
            values[i] = jax.lax.stop_gradient(leaves[i])
        for i, leaf in zip(rest_index, rest, strict=True):
            values[i] = leaf
        inputs: list[Array] = [jnp.zeros(())] * len(dense)

        def hook(eqn: Any, args: list[Any]) -> list[Any] | None:
            k = slot.get(id(eqn))
            if k is None:
                return None
            inputs[k] = args[0][0]
            return [eqn.primitive.bind(*args, **eqn.primitive.get_bind_params(eqn.params)) + shifts[k]]

        (out,) = _evaluate(analysis.flat.jaxpr, analysis.flat.consts, [*values, xi[None]], hook)
        return out.reshape(-1), inputs

    def per_example(xi: Array) -> tuple[Array, list[Array], list[Array], Array]:
        rest = [leaves[i] for i in rest_index]
        shifts = [jnp.zeros(eqn.outvars[0].aval.shape, eqn.outvars[0].aval.dtype) for _, eqn in dense]
        out, vjp, inputs = jax.vjp(lambda r, s: example(r, s, xi), rest, shifts, has_aux=True)
        d_rest, d_shift = jax.vmap(vjp)(jnp.eye(out.shape[0], dtype=out.dtype))
        c = out.shape[0]
        rows = jnp.concatenate([d.reshape(c, -1) for d in d_rest] or [jnp.zeros((c, 0), out.dtype)], axis=1)
        return out, inputs, [d.reshape(c, -1) for d in d_shift], rows

    return _Factors(*jax.vmap(per_example)(x))


def _gram(left: Array, right: Array) -> np.ndarray | None:
    """left @ rightᵀ of two row matrices in float64, over the columns nonzero in both (a padded model's
    padding gives exactly-zero columns: they cost nothing); None when no column is."""
    left, right = np.asarray(left), np.asarray(right)
    keep = np.flatnonzero(left.any(axis=0) & right.any(axis=0))
    if keep.size == 0:
        return None
    return np.asarray(left[:, keep], np.float64) @ np.asarray(right[:, keep], np.float64).T


def _cross(left: _Factors, right: _Factors) -> np.ndarray:
    """(n₁C, n₂C) J₁ J₂ᵀ from the factors of two batches, in float64 on the host: per dense use the Gram
    matrices of the layer inputs (n₁ × n₂, repeated over outputs) and of the output gradients (n₁C × n₂C),
    multiplied entrywise, plus J_rest,₁ J_rest,₂ᵀ."""
    rows = lambda m: np.asarray(m).reshape(m.shape[0] * m.shape[1], -1)
    c = left.out.shape[1]
    kernel = np.zeros((left.out.size, right.out.size))
    rest = _gram(rows(left.rest), rows(right.rest))
    if rest is not None:
        kernel += rest
    for a1, a2, g1, g2 in zip(left.inputs, right.inputs, left.grads, right.grads, strict=True):
        grads = _gram(rows(g1), rows(g2))
        inputs = None if grads is None else _gram(a1, a2)
        if inputs is not None:
            kernel += np.repeat(np.repeat(inputs, c, axis=0), c, axis=1) * grads
    return kernel


def _structured(apply_fn: ApplyFn, params: Params, x_a: Array, x_b: Array | None
                ) -> tuple[_Factors, _Factors | None, Array]:
    """(factors of A, factors of B or None, the gap between the whole-batch and the per-example outputs on A);
    pure, jit-compiled."""
    a = _factors(apply_fn, params, x_a)
    gap = relative_gap(apply_fn(params, x_a).reshape(a.out.shape), a.out)
    return a, None if x_b is None else _factors(apply_fn, params, x_b), gap


def structured_kernel(apply_fn: ApplyFn, params: Params, x_a: Array, x_b: Array | None = None, *,
                      fast_compile: bool = False) -> StructuredKernel | None:
    """K_AA (and K_BA) from per-layer factors (module docstring), or None when the model's examples interact
    at this point (the check: module docstring). Call :func:`structured_pays` first: this assumes it holds.
    ``apply_fn(params, x)`` must return (N, C) outputs for N examples. ``fast_compile``: XLA level 0."""
    run = jitted(_structured, fast=fast_compile, static_argnames=("apply_fn",))
    a, b, gap = run(apply_fn, params, x_a, x_b)
    if not independent(gap, np.dtype(a.out.dtype)):
        return None
    out = lambda f: np.asarray(f.out, np.float64).reshape(-1)
    return StructuredKernel(_cross(a, a), out(a), None if b is None else _cross(b, a), None if b is None else out(b))
