r"""Randomised, matrix-free estimators of tr K, tr K², and the NTK metrics built from them.

One framework covers every method. Pick a *side* to probe:

* ``"state"``: probes u ∈ Rⁿ, images M u = Jᵀu ∈ Rᵖ (one VJP each); A = MᵀM = J Jᵀ = K.
* ``"param"``: probes w ∈ Rᵖ, images M w = J w ∈ Rⁿ (one JVP each); A = MᵀM = JᵀJ.

Either way tr A = tr K = ‖J‖²_F and tr A² = tr K² = ‖K‖²_F, so the side is a cost/variance choice only.
Let d be the probed dimension (n or p) and D the other one.

Pick an orthonormal *deflation block* Q ∈ Rᵈˣᑫ (possibly empty) and let Π = I − QQᵀ. Then exactly

    tr A  = ‖MQ‖²_F + tr(ΠAΠ)
    tr A² = ‖QᵀAQ‖²_F + 2‖QᵀAΠ‖²_F + ‖ΠAΠ‖²_F          (= ‖AQ‖²_F + tr(ΠA²Π))

The Q-terms are computed exactly from the q images MQ; the Π-terms are estimated from projected Rademacher
probes zᵢ (E[zzᵀ] = I, so E[Πz zᵀΠ] = Π), images Zᵢ = MΠzᵢ:

    tr(ΠAΠ)      ≈ mean_i ‖Zᵢ‖²                          (Hutchinson)
    ‖QᵀAΠ‖²_F    ≈ mean_i ‖(MQ) Zᵢ‖²
    ‖ΠAΠ‖²_F     ≈ mean_{i≠j} (Zᵢ·Zⱼ)²                  (two-probe cross moment, independent zᵢ, zⱼ)
    tr(ΠA²Π)     ≈ mean_i ‖A Π zᵢ‖²                      (Hutchinson on A², costs one pass of the other mode)

Each is unbiased. The methods differ only in Q and in the tr A² residual:

=============  ======  =============================================  ========================  ==========
method         side    Q                                              tr A² residual            AD modes
=============  ======  =============================================  ========================  ==========
``exact``      smaller all d basis vectors (no residual)             Σᵢ ‖A eᵢ‖² (other mode)   both
``hutchinson`` state   none                                           cross moment              VJP only
``reverse``    state   q random orthonormal directions (the paper's)  cross moment              VJP only
``forward``    param   q random orthonormal directions (the paper's)  cross moment              JVP only
``hutch++``    smaller orth(A S), S a q-column Rademacher sketch      Hutchinson on A² (K·K)    both
=============  ======  =============================================  ========================  ==========

``hutch++`` is Meyer, Musco, Musco & Woodruff (2021) applied to tr A and to tr A² with the same sketch; it is
exact once q ≥ rank K. ``forward``/``reverse`` are the one-sided estimators of arXiv:2511.10796 (Hazelden,
2025): an exact trace on a random orthonormal block of q directions plus projected probes.

**Variance and standard errors.** Probes come in independent blocks of b probes; each block yields an
unbiased replicate of (tr(ΠAΠ), tr-A²-residual), the cross moment using the b(b−1)/2 pairs inside the block.
Given Q, the estimate equals the true value plus the centred mean of the replicates (the exact Q-part and the
residual add up to the truth for every Q), so the variance over everything is E_Q[Var(mean | Q)] and the
sample variance of the B block replicates / B estimates it without bias. With no deflation and Rademacher
probes the trace replicate of one probe has variance 2(‖K‖²_F − Σᵢ Kᵢᵢ²): relative standard error
≈ √(2/(r·m)) for effective rank r and m probes, hence small-budget one-sided probing works best on the side
whose Gram matrix is most diagonal. Deflation by the dominant subspace (Hutch++) removes the large
eigenvalues from the residual, giving O(1/m) instead of O(1/√m) error for PSD matrices with decaying spectra.

Smooth functions of the two means — ‖K‖_F = √tr K², the effective rank r = (tr K)²/tr K² and the label
alignment yᵀKy / (‖K‖_F‖y‖²) — get their standard error from the delete-one-block jackknife. Ratios of
unbiased estimates are biased by O(1/m); the jackknife estimate of that bias is reported in ``Estimate.bias``
(the reported ``value`` is the plain plug-in estimate; ``value - bias`` is the bias-corrected one).
yᵀKy = ‖Jᵀy‖² is computed exactly with one VJP.

**Adaptive mode.** After a fixed part (sketch and exact block) blocks are drawn until the relative standard
error of every requested quantity is ≤ ``rtol`` (checked from ``min_blocks`` blocks on) or the next block
would exceed ``max_matvecs``. A *matvec* here is one AD pass: one JVP or one VJP (a K-product costs two).
Every block's probes come from ``fold_in(key, block index)``, so results are reproducible for a key.

**Compilation.** The whole estimate — fixed part, the adaptive loop (a ``lax.while_loop`` whose stopping
rule evaluates the jackknife on device) and the final summaries — is one jit-compiled function,
:func:`estimate_arrays`, keyed on ``apply_fn`` and the static plan. A search therefore compiles it once per
architecture and input shape; :func:`ntk_metrics` is its host-side wrapper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from ntksearch.ntk.operator import ApplyFn, Array, Linearization, NTKOperator, Params, linearize, smaller_side

__all__ = [
    "METHODS",
    "QUANTITIES",
    "Estimate",
    "EstimatePlan",
    "NonFiniteModelError",
    "RawEstimate",
    "estimate_arrays",
    "ntk_metrics",
    "plan_estimate",
    "probe_mesh",
]

METHODS = ("auto", "exact", "hutchinson", "hutch++", "forward", "reverse")
QUANTITIES = ("trace", "frobenius", "effective_rank", "label_alignment", "label_alignment_centred")


class NonFiniteModelError(ValueError):
    """The model's output (or its kernel) at the given point is not finite."""


@dataclass(frozen=True)
class Estimate:
    """An estimated scalar with its standard error and what it cost.

    Attributes:
      value: the plug-in estimate.
      stderr: its standard error (0 for exact values).
      bias: jackknife estimate of the bias of ``value`` (0 for unbiased estimators and exact values).
      method: the method that produced it (``auto`` resolved to a concrete name).
      n_jvp, n_vjp: AD passes spent (shared by all quantities of one call).
      n_probes: probe vectors used (deflation block + random probes).
      converged: whether the requested ``rtol`` was reached within the budget.
    """

    value: float
    stderr: float
    bias: float
    method: str
    n_jvp: int
    n_vjp: int
    n_probes: int
    converged: bool

    @property
    def rel_stderr(self) -> float:
        """stderr / |value| (inf when value is 0)."""
        return self.stderr / abs(self.value) if self.value != 0 else math.inf

    @property
    def matvecs(self) -> int:
        """Total AD passes (JVPs + VJPs)."""
        return self.n_jvp + self.n_vjp


# ----------------------------------------------------------------------------------------------------------
# Planning (host side, static)


@dataclass(frozen=True)
class EstimatePlan:
    """Everything static about one estimate; hashable, so it keys the compiled :func:`estimate_arrays`.

    Attributes:
      method: concrete method name.
      side: ``"state"`` (probes in Rⁿ, VJP images) or ``"param"`` (probes in Rᵖ, JVP images).
      dim: the probed dimension d (n or p).
      sketch: ``"none" | "random" | "range" | "identity"`` (the deflation block Q).
      sketch_size: q (d for ``identity``).
      square: the tr A² residual is Hutchinson on A² (one pass of the other mode per probe), else the cross
        moment.
      block_size: probes per block; ``chunk``: rows per vmapped batch in the fixed part.
      min_blocks, max_blocks: the adaptive loop's bounds (max from the budget).
      wanted: indices into ``QUANTITIES`` that are returned and must reach ``rtol``.
      n_labels: 0 without targets, 2 with (raw and centred).
      mesh: a 1-d device mesh (axis ``"probes"``) over which every block of probes is split, or None for one
        device. Blocks are zero-padded to a multiple of its size, so the probes — and the results — do not
        depend on the number of devices.
    """

    method: str
    side: str
    dim: int
    sketch: str
    sketch_size: int
    square: bool
    block_size: int
    chunk: int
    min_blocks: int
    max_blocks: int
    wanted: tuple[int, ...]
    n_labels: int
    mesh: Mesh | None = None

    @property
    def fixed_passes(self) -> tuple[int, int]:
        """(main-mode, other-mode) passes of the fixed part."""
        q = self.sketch_size
        if self.sketch == "none":
            return 0, 0
        if self.sketch == "identity":
            return q, q if self.square else 0
        main = q * (2 if self.sketch == "range" else 1)  # range: A·S then M·Q
        other = (q if self.sketch == "range" else 0) + (q if self.square else 0)
        return main, other

    def passes(self, n_blocks: int) -> tuple[int, int]:
        """(n_jvp, n_vjp) after ``n_blocks`` blocks, including the label VJPs."""
        main, other = self.fixed_passes
        main += n_blocks * self.block_size
        other += n_blocks * self.block_size if self.square else 0
        n_jvp, n_vjp = (other, main) if self.side == "state" else (main, other)
        return n_jvp, n_vjp + self.n_labels


def plan_estimate(
    method: str,
    n: int,
    p: int,
    *,
    max_matvecs: int,
    wanted: Sequence[str],
    n_labels: int,
    min_blocks: int = 4,
    sketch_size: int | None = None,
    block_size: int | None = None,
    mesh: Mesh | None = None,
) -> EstimatePlan:
    """Resolve a method, its side, sketch and block sizes and the budget into an :class:`EstimatePlan`.

    Raises ValueError for unknown methods, bad sizes and budgets too small for ``min_blocks`` blocks.
    """
    if method not in METHODS:
        raise ValueError(f"unknown NTK estimation method {method!r}; allowed: {', '.join(METHODS)}")
    if max_matvecs < 1:
        raise ValueError(f"max_matvecs must be a positive number of AD passes, got {max_matvecs}")
    if min_blocks < 2:
        raise ValueError(f"min_blocks must be ≥ 2 to estimate a standard error, got {min_blocks}")
    idx = tuple(QUANTITIES.index(q) for q in wanted)
    need_f2 = tuple(wanted) != ("trace",)
    small_side, d_small = smaller_side(n, p), min(n, p)
    if method == "auto":
        method = _auto_method(n, p, max_matvecs, need_f2)
    if method == "exact":
        plan = EstimatePlan("exact", small_side, d_small, "identity", d_small, need_f2, 2, min(d_small, 64), 0, 0,
                            idx, n_labels, mesh)
        cost = sum(plan.passes(0))
        if cost > max_matvecs:
            raise ValueError(
                f"exact NTK needs {cost} AD passes (min(n, p) = {d_small}, twice when tr K² is wanted, plus "
                f"{n_labels} label VJPs) but max_matvecs = {max_matvecs}; raise the budget or use a randomised method"
            )
        return plan
    side = {"hutchinson": "state", "reverse": "state", "forward": "param"}.get(method, small_side)
    dim = n if side == "state" else p
    if block_size is None:
        block_size = int(min(16, max(2, max_matvecs // 32)))
    if block_size < 2:
        raise ValueError(f"block_size must be ≥ 2 (pairs of probes estimate tr K²), got {block_size}")
    if method == "hutchinson":
        sketch, q, square = "none", 0, False
    elif method in ("forward", "reverse"):
        sketch, q, square = "random", max_matvecs // 6 if sketch_size is None else sketch_size, False
    else:  # hutch++: the sketch costs 3q passes (4q with tr A²)
        sketch, q, square = "range", max(1, max_matvecs // 8 if sketch_size is None else sketch_size), need_f2
    q = min(q, dim)
    plan = EstimatePlan(method, side, dim, sketch, q, square, block_size, block_size, min_blocks, 0, idx, n_labels,
                        mesh)
    left = max_matvecs - sum(plan.passes(0))
    block_cost = block_size * (2 if square else 1)
    if left < min_blocks * block_cost:
        raise ValueError(
            f"max_matvecs = {max_matvecs} leaves {left} passes after the fixed part ({sum(plan.passes(0))}), fewer "
            f"than min_blocks × block cost = {min_blocks} × {block_cost}; raise max_matvecs or lower "
            "sketch_size/block_size"
        )
    return EstimatePlan(method, side, dim, sketch, q, square, block_size, block_size, min_blocks,
                        left // block_cost, idx, n_labels, mesh)


def _auto_method(n: int, p: int, max_matvecs: int, need_f2: bool) -> str:
    """Exact when its passes fit in half the budget, else Hutch++."""
    if min(n, p) * (2 if need_f2 else 1) <= max_matvecs // 2:
        return "exact"
    return "hutch++"


# ----------------------------------------------------------------------------------------------------------
# The compiled estimate


class RawEstimate(NamedTuple):
    """Device-side result of :func:`estimate_arrays` (all arrays; quantities in ``QUANTITIES`` order).

    ``value``, ``stderr``, ``bias``: (3 + n_labels,); ``n_blocks``: blocks drawn; ``converged``: rtol met;
    ``n_nonfinite``: non-finite entries of the model output (the estimate is meaningless when > 0).
    """

    value: Array
    stderr: Array
    bias: Array
    n_blocks: Array
    converged: Array
    n_nonfinite: Array


def _quantities(fixed: Array, means: Array, labels: Array) -> Array:
    """All quantities from the replicate means: (..., 2) → (..., 3 + L). labels: (L, 2) rows (yᵀKy, ‖y‖²)."""
    tr = fixed[0] + means[..., 0]
    f2 = fixed[1] + means[..., 1]
    fro = jnp.sqrt(jnp.maximum(f2, 0.0))
    eff = jnp.where(f2 > 0, tr**2 / jnp.where(f2 > 0, f2, 1.0), jnp.nan)
    denom = fro[..., None] * labels[:, 1]
    align = jnp.where(denom > 0, labels[:, 0] / jnp.where(denom > 0, denom, 1.0), jnp.nan)
    return jnp.concatenate([tr[..., None], fro[..., None], eff[..., None], align], axis=-1)


def _jackknife(fixed: Array, reps: Array, count: Array, labels: Array) -> tuple[Array, Array, Array]:
    """(value, stderr, bias) of every quantity from the first ``count`` rows of the (B, 2) replicates."""
    mask = (jnp.arange(reps.shape[0]) < count)[:, None]
    c = jnp.maximum(count, 1).astype(reps.dtype)
    mean = jnp.sum(jnp.where(mask, reps, 0.0), axis=0) / c
    value = _quantities(fixed, mean, labels)
    loo = (c * mean - reps) / jnp.maximum(c - 1, 1)
    thetas = _quantities(fixed, loo, labels)
    tbar = jnp.sum(jnp.where(mask, thetas, 0.0), axis=0) / c
    var = (c - 1) / c * jnp.sum(jnp.where(mask, (thetas - tbar) ** 2, 0.0), axis=0)
    enough = count >= 2
    return value, jnp.where(enough, jnp.sqrt(var), 0.0), jnp.where(enough, (c - 1) * (tbar - value), 0.0)


def _pad_rows(rows: Array, multiple: int) -> Array:
    """Zero rows appended so the row count is a multiple of ``multiple``."""
    pad = -rows.shape[0] % multiple
    return jnp.concatenate([rows, jnp.zeros((pad, *rows.shape[1:]), rows.dtype)]) if pad else rows


def _on_devices(fn, rows: Array, mesh: Mesh | None) -> Array:
    """fn on a (b, ...) block of probe rows split over the mesh's devices (padded with zero rows, which every
    product maps to zero, then dropped), or simply fn(rows) without a mesh."""
    if mesh is None:
        return fn(rows)
    padded = jax.lax.with_sharding_constraint(_pad_rows(rows, mesh.size), NamedSharding(mesh, PartitionSpec("probes")))
    return fn(padded)[: rows.shape[0]]


def _map_rows(fn, rows: Array, plan: EstimatePlan) -> Array:
    """fn over the rows of ``rows`` in vmapped chunks of ``plan.chunk`` rows (zero-padded: one compiled body),
    each chunk split over the plan's devices."""
    chunks = _pad_rows(rows, plan.chunk).reshape(-1, plan.chunk, *rows.shape[1:])
    out = jax.lax.map(lambda r: _on_devices(fn, r, plan.mesh), chunks)
    return out.reshape(-1, *out.shape[2:])[: rows.shape[0]]


def _fixed_part(lin: Linearization, key: Array, plan: EstimatePlan, dtype: jnp.dtype) -> tuple[Array, Array, Array]:
    """(basis Q (d, q'), basis images MQ (q', D), exact sums [tr, tr²-part]); q' = 0 when nothing to deflate."""
    d, q, side = plan.dim, plan.sketch_size, plan.side
    image_of = lambda w: lin.images(side, w)
    adjoint_of = lambda w: lin.adjoint_images(side, w)
    rows = lambda fn, r: _map_rows(fn, r, plan)
    if plan.sketch in ("none", "identity"):
        empty = jnp.zeros((d, 0), dtype), jnp.zeros((0, 1), dtype)
        if plan.sketch == "none":
            return *empty, jnp.zeros(2, dtype)

        def basis_sums(idx: Array) -> Array:  # rows (‖M eᵢ‖², ‖A eᵢ‖²) for a chunk of indices (≥ d → eᵢ = 0)
            img = image_of(jax.nn.one_hot(idx, d, dtype=dtype))
            f2 = jnp.sum(adjoint_of(img) ** 2, axis=1) if plan.square else jnp.zeros(idx.shape, dtype)
            return jnp.stack([jnp.sum(img**2, axis=1), f2], axis=1)

        return *empty, jnp.sum(rows(basis_sums, jnp.arange(d)), axis=0)
    if plan.sketch == "random":
        basis = jnp.linalg.qr(jax.random.normal(key, (d, q), dtype))[0]
    else:  # range finder: Q = orth(A S)
        sketch = jax.random.rademacher(key, (q, d), dtype=dtype)
        basis = jnp.linalg.qr(rows(lambda s: adjoint_of(image_of(s)), sketch).T)[0]
    basis_images = rows(image_of, basis.T)
    if plan.square:
        f2 = jnp.sum(rows(adjoint_of, basis_images) ** 2)
    else:
        small = basis_images @ basis_images.T  # ‖QᵀAQ‖²_F
        f2 = jnp.sum(small**2)
    return basis, basis_images, jnp.stack([jnp.sum(basis_images**2), f2])


def _block_replicate(lin: Linearization, key: Array, basis: Array, basis_images: Array, plan: EstimatePlan
                     ) -> Array:
    """One block's unbiased replicate of (tr(ΠAΠ), residual of tr A²); see the module docstring."""
    b = plan.block_size
    z = jax.random.rademacher(key, (b, plan.dim), dtype=basis.dtype)
    if basis.shape[1]:
        z = z - (z @ basis) @ basis.T
    img = _on_devices(lambda w: lin.images(plan.side, w), z, plan.mesh)  # (b, D)
    tr_rep = jnp.mean(jnp.sum(img**2, axis=1))
    if plan.square:
        a_img = _on_devices(lambda w: lin.adjoint_images(plan.side, w), img, plan.mesh)
        f2_rep = jnp.mean(jnp.sum(a_img**2, axis=1))
    else:
        gram = img @ img.T
        f2_rep = (jnp.sum(gram**2) - jnp.sum(jnp.diag(gram) ** 2)) / (b * (b - 1))
        if basis.shape[1]:
            f2_rep = f2_rep + 2.0 * jnp.mean(jnp.sum((img @ basis_images.T) ** 2, axis=1))
    return jnp.stack([tr_rep, f2_rep])


@partial(jax.jit, static_argnames=("apply_fn", "plan"))
def estimate_arrays(apply_fn: ApplyFn, params: Params, x: Array, label_rows: Array, key: Array, rtol: Array,
                    *, plan: EstimatePlan) -> RawEstimate:
    """The whole estimate as one compiled function (pure; jit-able; vmappable over keys).

    Args:
      apply_fn, params, x: the model and point (see :mod:`ntksearch.ntk.operator`).
      label_rows: (n_labels, n) flattened targets (raw, centred), or (0, n).
      key: PRNG key; ``fold_in``-derived per block.
      rtol: relative standard-error target (0 spends the whole budget).
      plan: from :func:`plan_estimate`.
    """
    lin = linearize(apply_fn, params, x)
    dtype = lin.z.dtype
    n_nonfinite = jnp.sum(~jnp.isfinite(lin.z))
    key_sketch, key_probes = jax.random.split(key)
    basis, basis_images, fixed = _fixed_part(lin, key_sketch, plan, dtype)
    if plan.n_labels:
        jty = jax.vmap(lin.vjp)(label_rows.astype(dtype))
        labels = jnp.stack([jnp.sum(jty**2, axis=1), jnp.sum(label_rows.astype(dtype) ** 2, axis=1)], axis=1)
    else:
        labels = jnp.zeros((0, 2), dtype)
    wanted = jnp.asarray(plan.wanted)
    reps0 = jnp.zeros((max(plan.max_blocks, 1), 2), dtype)

    def converged(reps: Array, count: Array) -> Array:
        value, se, _ = _jackknife(fixed, reps, count, labels)
        return (count >= plan.min_blocks) & jnp.all(se[wanted] <= rtol * jnp.abs(value[wanted]))

    def cond(state: tuple[Array, Array, Array]) -> Array:
        count, _, done = state
        return (count < plan.max_blocks) & ~done & (n_nonfinite == 0)

    def body(state: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
        count, reps, _ = state
        rep = _block_replicate(lin, jax.random.fold_in(key_probes, count), basis, basis_images, plan)
        reps = reps.at[count].set(rep)
        return count + 1, reps, (rtol > 0) & converged(reps, count + 1)

    state = (jnp.zeros((), jnp.int32), reps0, jnp.zeros((), bool))
    count, reps, done = jax.lax.while_loop(cond, body, state) if plan.max_blocks else state
    value, se, bias = _jackknife(fixed, reps, count, labels)
    return RawEstimate(value, se, bias, count, done | (plan.sketch == "identity"), n_nonfinite)


# ----------------------------------------------------------------------------------------------------------
# Host-side entry point


def ntk_metrics(
    apply_fn: ApplyFn,
    params: Params,
    x: Array,
    y: Array | None = None,
    *,
    key: Array,
    method: str = "auto",
    rtol: float = 0.02,
    max_matvecs: int = 1024,
    quantities: Sequence[str] | None = None,
    min_blocks: int = 4,
    sketch_size: int | None = None,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> dict[str, Estimate]:
    """Estimate NTK quantities of ``apply_fn`` at ``(params, x)`` without forming J or K.

    Args:
      apply_fn: ``apply_fn(params, x) -> array`` of any shape; its flattened size is n.
      params: pytree of parameters (p numbers in all).
      x: the input batch.
      y: optional targets with the output's shape (one-hot labels for classification) for the alignments.
      key: PRNG key; results are a deterministic function of it.
      method: one of ``auto, exact, hutchinson, hutch++, forward, reverse`` (see the module docstring).
      rtol: stop once every requested quantity's relative standard error is ≤ rtol (0: spend the budget).
      max_matvecs: budget in AD passes (JVPs + VJPs), including the sketch and yᵀKy.
      quantities: which of ``QUANTITIES`` to compute, return and drive to ``rtol`` (default: all available;
        asking for the trace alone lets ``exact`` and ``hutch++`` skip the passes tr K² needs).
      min_blocks: blocks drawn before the stopping rule is checked (≥ 2, for a standard error).
      sketch_size: q, the deflation block size (default: budget/6 for forward/reverse, budget/8 for hutch++).
      block_size: probes per block (default min(16, max(2, budget/32))).
      devices: devices to split every block of probes over (default: all local devices of the default
        backend; one device means no splitting). Results do not depend on the number of devices beyond
        floating-point summation order.

    Returns:
      ``{"trace", "frobenius", "effective_rank"}`` and, when y is given, ``"label_alignment"`` and
      ``"label_alignment_centred"`` (y minus its mean over axis 0), each an :class:`Estimate` (only the
      requested ``quantities`` when given).

    Raises:
      ValueError: bad method, budget or y shape, or a budget too small for ``min_blocks`` blocks.
      NonFiniteModelError: the model output is not finite.
    """
    op = NTKOperator.create(apply_fn, params, x)
    if y is not None and tuple(jnp.shape(y)) != op.out_shape:
        raise ValueError(
            f"y has shape {tuple(jnp.shape(y))} but apply_fn(params, x) has shape {op.out_shape}; "
            "targets must match the model output (e.g. one-hot labels for a classifier)"
        )
    wanted = _requested(quantities, y is not None)
    n_labels = 2 if any(q.startswith("label") for q in wanted) else 0
    plan = plan_estimate(method, op.n, op.p, max_matvecs=max_matvecs, wanted=wanted, n_labels=n_labels,
                         min_blocks=min_blocks, sketch_size=sketch_size, block_size=block_size,
                         mesh=probe_mesh(devices))
    if n_labels:
        y = jnp.asarray(y, op.dtype)
        label_rows = jnp.stack([y.ravel(), (y - jnp.mean(y, axis=0, keepdims=True)).ravel()])
    else:
        label_rows = jnp.zeros((0, op.n), op.dtype)
    raw = jax.device_get(estimate_arrays(apply_fn, params, x, label_rows, key, jnp.asarray(rtol, op.dtype),
                                         plan=plan))
    if raw.n_nonfinite:
        raise NonFiniteModelError(
            f"apply_fn(params, x) returned {int(raw.n_nonfinite)} non-finite values out of {op.n}; "
            "the NTK is undefined there"
        )
    if not np.isfinite(raw.value[0]):
        raise NonFiniteModelError("the NTK trace is not finite (overflow in the Jacobian?)")
    n_jvp, n_vjp = plan.passes(int(raw.n_blocks))
    n_probes = plan.sketch_size + int(raw.n_blocks) * plan.block_size
    return {
        QUANTITIES[i]: Estimate(float(raw.value[i]), float(raw.stderr[i]), float(raw.bias[i]), plan.method,
                                n_jvp, n_vjp, n_probes, bool(raw.converged))
        for i in plan.wanted
    }


def probe_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A 1-d ``"probes"`` mesh over ``devices`` (default: all local devices), or None for a single device."""
    devices = list(jax.local_devices() if devices is None else devices)
    if len(devices) <= 1:
        return None
    return Mesh(np.asarray(devices), ("probes",), axis_types=(AxisType.Auto,))


def _requested(quantities: Sequence[str] | None, has_y: bool) -> tuple[str, ...]:
    available = QUANTITIES if has_y else QUANTITIES[:3]
    if quantities is None:
        return available
    for q in quantities:
        if q not in available:
            raise ValueError(f"unknown or unavailable quantity {q!r}; allowed here: {', '.join(available)}")
    return tuple(quantities)
