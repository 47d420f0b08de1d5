r"""The empirical NTK of a model's dense layers from per-layer factors: exact, without J or probes.

For a parameter W ∈ R^{d_in×d_out} that the model uses as the right operand of dense products y_s = a_s W at
P positions s (P = 1 for an MLP layer; the time steps of a recurrence whose loop holds W as a constant; the
tokens of a sequence), the rows of J belonging to W are sums of outer products: for example i and output o,

    ∂f(x_i)_o/∂W = Σ_s a_is ⊗ g_ios,    g_ios = ∂f(x_i)_o/∂y_is ∈ R^{d_out},

so W's part of the NTK needs no Jacobian at all:

    K_W[(i,o), (j,o')] = Σ_{s,t} (a_is · a_jt) (g_ios · g_jo't),

Hadamard products of the Gram matrices of the layer inputs (nP × nP) and of the output gradients
(nCP × nCP), summed over pairs of positions; or, when that costs fewer flops ((CP)²·d_out + P²·d_in against
C²·d_in·d_out per pair of examples), the Gram matrix of the rows Σ_s a_is ⊗ g_ios. Uses whose output
gradients are equal (an RNN cell's input and recurrent products add into one pre-activation) are one use of
the concatenated inputs. Every other parameter (biases, normalisation scales, anything used more than once
or not through a dense product) keeps its per-example Jacobian rows J_rest,io and adds J_rest J_restᵀ.
Summing the parts gives K exactly (up to float rounding): K = J_rest J_restᵀ + Σ_W K_W.

**Cost.** Per example: one forward pass and C reverse passes (one per output, vmapped over examples and
outputs, as :func:`ntksearch.ntk.jacobian.per_example_jacobian`), which give every a_is, g_ios and J_rest,io;
all in one compiled program that runs once; then, on the host in float64, the Gram matrices above over the
columns not exactly zero (a padded model's padding costs nothing there) and 2·(nC)²·p_rest for the rest. The
dense per-example Jacobian would instead cost 2·(nC)²·p for K; Lanczos on the products costs two passes over
the batch per step. For an MLP on a batch of 32 with 10 classes that is ≈ 20 passes for all of K against
≈ 100–200 for a default-score Lanczos run, and one program to compile instead of a product kernel; for a
2-layer bidirectional LSTM of 45 units padded to 128 (8 steps), 0.34 s warm against 0.99 s for the Lanczos
run on products (mostly the host Gram matrices of 2560 rows).

**Which models.** The dense uses are found on the jaxpr of the forward pass on one example (nested ``jit``
calls inlined, ``scan`` bodies evaluated the same way): a parameter leaf whose only use, through dtype
conversions and reshapes, is the right operand of a ``dot_general`` contracting the last axis of a
(…, d_in) input with the first of a (d_in, d_out) matrix, or that is a constant of a ``scan`` whose body uses
it so (a weight applied at every step). Convolution kernels keep their Jacobian rows, so
:func:`structured_pays` accepts a model only when something is factored, the rest is small
(n·p_rest ≤ :data:`REST_MAX_ENTRIES`) and so are the host arrays (≤ :data:`KERNEL_MAX_ENTRIES` each). The
per-example decomposition assumes examples do not interact (no batch statistics); :func:`structured_kernel`
checks it at the point: the whole-batch outputs must agree with the per-example outputs to √ε relative (ε the
dtype's machine epsilon), else it returns None. Batch statistics fail it (a batch of one normalises to a
constant). A model whose examples interact without changing its outputs (only its derivatives) would pass: no
family here does; a whole-batch JVP check would catch it and was measured at +0.2–0.45 s of compilation per
candidate (25–30% of the program), so it is not made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


Taps = dict[int, Any]  # id of a dense-product equation → its left operand (stacked over enclosing loops)


def _bind(eqn: Any, inputs: list[Any]) -> list[Any]:
    bound = eqn.primitive.bind(*inputs, **eqn.primitive.get_bind_params(eqn.params))
    return bound if eqn.primitive.multiple_results else [bound]


def _evaluate(jaxpr: Jaxpr, consts: Sequence[Any], args: Sequence[Any], shifts: dict[int, Any] | None = None
              ) -> tuple[list[Any], Taps]:
    """Evaluate ``jaxpr`` like :func:`jax.core.eval_jaxpr`, inlining nested ``jit`` calls and running each
    ``scan`` as a new :func:`jax.lax.scan` whose body is evaluated the same way (so a traced result is flat
    at every level). ``shifts`` maps dense-product equations (by ``id``) to a value added to their output;
    their left operands come back as taps. An equation inside a ``scan`` takes its shift stacked over the
    loop's steps (extra ``xs``) and its tap comes back stacked the same way (extra ``ys``)."""
    shifts = shifts or {}
    env: dict[Var, Any] = dict(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    read = lambda v: v.val if isinstance(v, Literal) else env[v]
    taps: Taps = {}
    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        if id(eqn) in shifts:
            taps[id(eqn)] = inputs[0]
            outputs = [_bind(eqn, inputs)[0] + shifts[id(eqn)]]
        elif eqn.primitive.name in _CALLS:
            inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            inner = inner if isinstance(inner, ClosedJaxpr) else ClosedJaxpr(inner, ())
            outputs, inner_taps = _evaluate(inner.jaxpr, inner.consts, inputs, shifts)
            taps.update(inner_taps)
        elif eqn.primitive.name == "scan":
            outputs, inner_taps = _scan(eqn, inputs, shifts)
            taps.update(inner_taps)
        else:
            outputs = _bind(eqn, inputs)
        env.update(zip(eqn.outvars, outputs, strict=True))
    return [read(v) for v in jaxpr.outvars], taps


def _scan(eqn: Any, inputs: list[Any], shifts: dict[int, Any]) -> tuple[list[Any], Taps]:
    """A ``scan`` equation through :func:`_evaluate`: its body's shifts ride along as ``xs``, taps as ``ys``."""
    body, n_consts, n_carry = eqn.params["jaxpr"], eqn.params["num_consts"], eqn.params["num_carry"]
    consts, init, xs = inputs[:n_consts], inputs[n_consts:n_consts + n_carry], inputs[n_consts + n_carry:]
    inner = {k: v for k, v in shifts.items() if k in loop_steps(body.jaxpr)}

    def step(carry: list[Any], x: tuple[list[Any], dict[int, Any]]) -> tuple[list[Any], tuple[list[Any], Taps]]:
        outputs, taps = _evaluate(body.jaxpr, body.consts, [*consts, *carry, *x[0]], x[1])
        return outputs[:n_carry], (outputs[n_carry:], taps)

    carry, (ys, taps) = jax.lax.scan(step, list(init), (list(xs), inner), length=eqn.params["length"],
                                     reverse=eqn.params["reverse"], unroll=eqn.params["unroll"])
    return [*carry, *ys], taps


def loop_steps(jaxpr: Jaxpr) -> dict[int, tuple[int, ...]]:
    """{id of every equation of ``jaxpr``, nested ``scan`` bodies included: the lengths of the loops around
    it, outermost first} (an equation of ``jaxpr`` itself: ())."""
    steps: dict[int, tuple[int, ...]] = {}
    for eqn in jaxpr.eqns:
        steps[id(eqn)] = ()
        if eqn.primitive.name == "scan":
            length = eqn.params["length"]
            steps.update({k: (length, *v) for k, v in loop_steps(eqn.params["jaxpr"].jaxpr).items()})
    return steps


def _is_dense(eqn: Any, var: Var) -> bool:
    """Whether ``eqn`` is a dense product a W with ``var`` as W (d_in, d_out) and a (…, d_in), contracting a's
    last axis (its other axes are positions: time steps, tokens, the batch of one)."""
    if eqn.primitive.name != "dot_general" or len(eqn.invars) != 2 or eqn.invars[1] is not var:
        return False
    lhs, rhs = eqn.invars[0].aval, var.aval
    return (eqn.invars[0] is not var and rhs.ndim == 2 and lhs.ndim >= 1
            and eqn.params["dimension_numbers"] == (((lhs.ndim - 1,), (0,)), ((), ())))


def _dense_use(jaxpr: Jaxpr, var: Var) -> Any | None:
    """The dense-product equation that is the only use of ``var`` in ``jaxpr`` (through :data:`_TRANSPARENT`
    operations, and into a ``scan`` body when ``var`` is one of the loop's constants), or None."""
    uses: dict[Var, list[Any]] = {}
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if isinstance(v, Var):
                uses.setdefault(v, []).append(eqn)
    returned = {v for v in jaxpr.outvars if isinstance(v, Var)}
    while var not in returned and len(users := uses.get(var, [])) == 1:
        eqn = users[0]
        if eqn.primitive.name in _TRANSPARENT and len(eqn.invars) == 1:
            var = eqn.outvars[0]
            continue
        if _is_dense(eqn, var):
            return eqn
        if eqn.primitive.name == "scan" and eqn.invars.index(var) < eqn.params["num_consts"]:
            body = eqn.params["jaxpr"].jaxpr
            return _dense_use(body, body.invars[eqn.invars.index(var)])
        return None
    return None


def dense_uses(jaxpr: Jaxpr, n_leaves: int) -> dict[int, Any]:
    """{leaf index: its dense-product equation} for the first ``n_leaves`` inputs of a flat per-example
    ``jaxpr`` whose only use is as W in a dense product (through :data:`_TRANSPARENT` operations; inside a
    ``scan``, as a constant of the loop: a weight used at every step, as recurrent weights are)."""
    found = {index: _dense_use(jaxpr, var) for index, var in enumerate(jaxpr.invars[:n_leaves])}
    return {index: eqn for index, eqn in found.items() if eqn is not None}


class _Analysis(NamedTuple):
    flat: ClosedJaxpr  # the per-example forward pass (inputs: the params' leaves, then x of batch 1)
    dense: dict[int, Any]  # leaf index → dense-product equation
    loops: dict[int, tuple[int, ...]]  # id of each dense-product equation → the lengths of the loops around it
    rest_size: int  # parameters outside the dense products


@lru_cache(maxsize=32)
def _analyse(apply_fn: ApplyFn, treedef: Any, leaves: tuple[jax.ShapeDtypeStruct, ...],
             example: jax.ShapeDtypeStruct) -> _Analysis:
    """Trace the model on one example, inline nested calls, find the dense uses (cached per model and shapes)."""
    closed = jax.make_jaxpr(lambda lv, xi: apply_fn(jax.tree_util.tree_unflatten(treedef, lv), xi))(
        list(leaves), example)
    flat = jax.make_jaxpr(lambda lv, xi: _evaluate(closed.jaxpr, closed.consts, [*lv, xi])[0])(list(leaves), example)
    dense = dense_uses(flat.jaxpr, len(leaves))
    steps = loop_steps(flat.jaxpr)
    rest = sum(math.prod(leaf.shape) for i, leaf in enumerate(leaves) if i not in dense)
    return _Analysis(flat, dense, {id(eqn): steps[id(eqn)] for eqn in dense.values()}, rest)


def _analysis(apply_fn: ApplyFn, params: Params, x: Array) -> _Analysis:
    leaves, treedef = jax.tree_util.tree_flatten(params)
    spec = lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))
    return _analyse(apply_fn, treedef, tuple(map(spec, leaves)), jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))


def _positions(analysis: _Analysis, eqn: Any) -> int:
    """How many times a dense use applies W per example: loop steps × the left operand's leading size."""
    return math.prod(analysis.loops[id(eqn)]) * math.prod(eqn.invars[0].aval.shape[:-1])


def _factored_entries(n: int, m: int, n_outputs: int, positions: int, shape: tuple[int, ...]) -> int:
    """Entries of the largest host arrays :func:`_dense_part` forms for one dense use on batches of n and m
    examples (P = ``positions``, W of ``shape``): the output-gradient Gram matrices over (example, output,
    position) rows, n·C·P × (n + m)·C·P in all, or the Jacobian rows, (n + m)·C × d_in·d_out, when cheaper."""
    d_in, d_out = shape
    by_positions = n * n_outputs * positions * (n + m) * n_outputs * positions
    return by_positions if _by_positions(n_outputs, positions, d_in, d_out) else (n + m) * n_outputs * d_in * d_out


def _by_positions(n_outputs: int, positions: int, d_in: int, d_out: int) -> bool:
    """Whether Gram matrices over (example, output, position) rows cost fewer flops than Jacobian rows (per
    pair of examples: (CP)²·d_out + P²·d_in against C²·d_in·d_out)."""
    return (n_outputs * positions) ** 2 * d_out + positions ** 2 * d_in <= n_outputs ** 2 * d_in * d_out


def structured_pays(apply_fn: ApplyFn, params: Params, x_a: Array, x_b: Array | None, n_outputs: int) -> bool:
    """Whether the factored kernel applies: at least one dense use, n·p_rest ≤ :data:`REST_MAX_ENTRIES` and the
    kernels small, n·(n + m) ≤ :data:`KERNEL_MAX_ENTRIES` (n, m = rows of A and B: examples × ``n_outputs``),
    as is each dense use's largest host array (:func:`_factored_entries`); False for a model that cannot run on
    one example."""
    try:
        analysis = _analysis(apply_fn, params, x_a)
    except (TypeError, ValueError):  # shape errors from tracing the model on a batch of one
        return False
    n = x_a.shape[0] * n_outputs
    m = 0 if x_b is None else x_b.shape[0] * n_outputs
    factored = [_factored_entries(x_a.shape[0], 0 if x_b is None else x_b.shape[0], n_outputs,
                                  _positions(analysis, eqn), eqn.invars[1].aval.shape)
                for eqn in analysis.dense.values()]
    return (bool(analysis.dense) and n * analysis.rest_size <= REST_MAX_ENTRIES and n * (n + m) <= KERNEL_MAX_ENTRIES
            and max(factored, default=0) <= KERNEL_MAX_ENTRIES)


class _Factors(NamedTuple):
    out: Array  # (n, C) per-example outputs
    inputs: list[Array]  # per dense use: (n, P, d_in) layer inputs a_is at its P positions
    grads: list[Array]  # per dense use: (n, C, P, d_out) output gradients g_ios
    rest: Array  # (n, C, p_rest) Jacobian rows of the other parameters


def _factors(apply_fn: ApplyFn, params: Params, x: Array) -> _Factors:
    """Every example's layer inputs, output gradients and remaining Jacobian rows (module docstring)."""
    analysis = _analysis(apply_fn, params, x)
    leaves = jax.tree_util.tree_leaves(params)
    dense = list(analysis.dense.items())
    rest_index = [i for i in range(len(leaves)) if i not in analysis.dense]

    def example(rest: list[Array], shifts: list[Array], xi: Array) -> tuple[Array, list[Array]]:
        values = list(leaves)
        for i, _ in dense:
            values[i] = jax.lax.stop_gradient(leaves[i])
        for i, leaf in zip(rest_index, rest, strict=True):
            values[i] = leaf
        by_eqn = {id(eqn): shift for (_, eqn), shift in zip(dense, shifts, strict=True)}
        (out,), taps = _evaluate(analysis.flat.jaxpr, analysis.flat.consts, [*values, xi[None]], by_eqn)
        inputs = [taps[id(eqn)].reshape(-1, eqn.invars[0].aval.shape[-1]) for _, eqn in dense]
        return out.reshape(-1), inputs

    def per_example(xi: Array) -> tuple[Array, list[Array], list[Array], Array]:
        rest = [leaves[i] for i in rest_index]
        shifts = [jnp.zeros((*analysis.loops[id(eqn)], *eqn.outvars[0].aval.shape), eqn.outvars[0].aval.dtype)
                  for _, eqn in dense]
        out, vjp, inputs = jax.vjp(lambda r, s: example(r, s, xi), rest, shifts, has_aux=True)
        d_rest, d_shift = jax.vmap(vjp)(jnp.eye(out.shape[0], dtype=out.dtype))
        c = out.shape[0]
        rows = jnp.concatenate([d.reshape(c, -1) for d in d_rest] or [jnp.zeros((c, 0), out.dtype)], axis=1)
        grads = [d.reshape(c, -1, eqn.outvars[0].aval.shape[-1]) for d, (_, eqn) in zip(d_shift, dense, strict=True)]
        return out, inputs, grads, rows

    return _Factors(*jax.vmap(per_example)(x))


def _kept(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Indices of the last-axis columns nonzero somewhere in both arrays (a padded model's padding gives
    exactly-zero columns: they cost nothing)."""
    nonzero = lambda m: m.any(axis=tuple(range(m.ndim - 1)))
    return np.flatnonzero(nonzero(left) & nonzero(right))


def _gram(left: Array, right: Array) -> np.ndarray | None:
    """left @ rightᵀ of two row matrices in float64, over the columns nonzero in both; None when no column is."""
    left, right = np.asarray(left), np.asarray(right)
    keep = _kept(left, right)
    if keep.size == 0:
        return None
    return np.asarray(left[:, keep], np.float64) @ np.asarray(right[:, keep], np.float64).T


def _dense_part(a1: Array, a2: Array, g1: Array, g2: Array) -> np.ndarray | None:
    r"""One dense use's part of J₁ J₂ᵀ, (n₁C, n₂C) in float64, from layer inputs a (n, P, d_in) and output
    gradients g (n, C, P, d_out) at P positions:

        K_W[(i,o), (j,o')] = Σ_{s,t} (a_is · a_jt) (g_ios · g_jo't),

    through Gram matrices over (example, position) and (example, output, position) rows, or, when cheaper
    (:func:`_by_positions`), through the Jacobian rows Σ_s a_is ⊗ g_ios. None when W's columns are all zero."""
    a1, a2, g1, g2 = map(np.asarray, (a1, a2, g1, g2))
    keep_in, keep_out = _kept(a1, a2), _kept(g1, g2)
    if keep_in.size == 0 or keep_out.size == 0:
        return None
    (n1, c, p, _), n2 = g1.shape, g2.shape[0]
    a1, a2 = (np.asarray(a[..., keep_in], np.float64) for a in (a1, a2))
    g1, g2 = (np.asarray(g[..., keep_out], np.float64) for g in (g1, g2))
    if _by_positions(c, p, keep_in.size, keep_out.size):
        inputs = (a1.reshape(n1 * p, -1) @ a2.reshape(n2 * p, -1).T).reshape(n1, p, n2, p)
        grads = (g1.reshape(n1 * c * p, -1) @ g2.reshape(n2 * c * p, -1).T).reshape(n1, c, p, n2, c, p)
        return np.einsum("isjt,iosjqt->iojq", inputs, grads).reshape(n1 * c, n2 * c)
    rows = lambda a, g: np.matmul(a.transpose(0, 2, 1)[:, None], g).reshape(a.shape[0] * c, -1)  # a_iᵀ g_io
    return rows(a1, g1) @ rows(a2, g2).T


def _shared_gradients(left: _Factors, right: _Factors) -> list[list[int]]:
    """The dense uses grouped by equal output gradients in both batches (as a recurrent cell's input and
    recurrent products, which add into one pre-activation): for such a group, a_1 ⊗ g, a_2 ⊗ g, … are the
    rows of the concatenated input [a_1, a_2, …] ⊗ g, one dense use of a wider W."""
    batches = (left,) if right is left else (left, right)  # K_AA: one batch to compare, not the same one twice
    grads = [[np.asarray(g) for g in factors.grads] for factors in batches]
    groups: list[list[int]] = []
    same = lambda j, k: all(g[j].shape == g[k].shape and np.array_equal(g[j], g[k]) for g in grads)
    for k in range(len(left.grads)):
        group = next((group for group in groups if same(group[0], k)), None)
        if group is None:
            groups.append([k])
        else:
            group.append(k)
    return groups


def _cross(left: _Factors, right: _Factors) -> np.ndarray:
    """(n₁C, n₂C) J₁ J₂ᵀ from the factors of two batches, in float64 on the host: per group of dense uses
    sharing their output gradients (:func:`_shared_gradients`) :func:`_dense_part`, plus J_rest,₁ J_rest,₂ᵀ."""
    rows = lambda m: np.asarray(m).reshape(m.shape[0] * m.shape[1], -1)
    kernel = np.zeros((left.out.size, right.out.size))
    rest = _gram(rows(left.rest), rows(right.rest))
    if rest is not None:
        kernel += rest
    inputs = lambda factors, group: np.concatenate([np.asarray(factors.inputs[k]) for k in group], axis=-1)
    for group in _shared_gradients(left, right):
        part = _dense_part(inputs(left, group), inputs(right, group), left.grads[group[0]], right.grads[group[0]])
        if part is not None:
            kernel += part
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
