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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ntksearch.ntk.operator import (
    ApplyFn,
    Array,
    NTKOperator,
    Params,
    adjoint_images,
    images,
    smaller_side,
    vjp_batch,
)

__all__ = [
    "METHODS",
    "QUANTITIES",
    "Estimate",
    "NonFiniteModelError",
    "ntk_metrics",
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


@dataclass(frozen=True)
class _Plan:
    method: str
    side: str  # "state" (VJP images) or "param" (JVP images)
    sketch: str  # "none" | "random" | "range" | "identity"
    sketch_size: int
    block_size: int
    square: bool  # tr A² residual by Hutchinson on A² (needs the other AD mode)


def _chunked(fn: Callable[[Array], Array], rows: Array, chunk: int) -> Array:
    """Apply a row-batched fn in fixed-size chunks (zero-padded, so one compiled shape serves all)."""
    k = rows.shape[0]
    pad = (-k) % chunk
    padded = jnp.concatenate([rows, jnp.zeros((pad, *rows.shape[1:]), rows.dtype)]) if pad else rows
    out = [fn(padded[i : i + chunk]) for i in range(0, k + pad, chunk)]
    return jnp.concatenate(out)[:k]


@partial(jax.jit, static_argnames=("apply_fn", "side", "dim", "chunk", "square"))
def _exact_chunk(
    apply_fn: ApplyFn, params: Params, x: Array, start: int, *, side: str, dim: int, chunk: int, square: bool
) -> Array:
    """(Σ‖M eᵢ‖², Σ‖A eᵢ‖²) over the basis vectors eᵢ, i ∈ [start, start + chunk) ∩ [0, d)."""
    basis = jax.nn.one_hot(start + jnp.arange(chunk), dim, dtype=jax.tree_util.tree_leaves(params)[0].dtype)
    img = images(side, apply_fn, params, x, basis)
    f2 = jnp.sum(adjoint_images(side, apply_fn, params, x, img) ** 2) if square else jnp.zeros((), img.dtype)
    return jnp.stack([jnp.sum(img**2), f2])


@partial(jax.jit, static_argnames=("apply_fn", "side", "dim", "block_size", "square"))
def _block_replicate(
    apply_fn: ApplyFn,
    params: Params,
    x: Array,
    key: Array,
    basis: Array,
    basis_images: Array,
    *,
    side: str,
    dim: int,
    block_size: int,
    square: bool,
) -> Array:
    """One block's unbiased replicate of (tr(ΠAΠ), residual of tr A²), see the module docstring.

    basis: (d, q) orthonormal Q (q may be 0); basis_images: (q, D) = M Q.
    """
    dtype = basis.dtype
    z = jax.random.rademacher(key, (block_size, dim), dtype=dtype)
    if basis.shape[1]:
        z = z - (z @ basis) @ basis.T
    img = images(side, apply_fn, params, x, z)  # (b, D)
    tr_rep = jnp.mean(jnp.sum(img**2, axis=1))
    if square:
        f2_rep = jnp.mean(jnp.sum(adjoint_images(side, apply_fn, params, x, img) ** 2, axis=1))
    else:
        gram = img @ img.T
        off = jnp.sum(gram**2) - jnp.sum(jnp.diag(gram) ** 2)
        f2_rep = off / (block_size * (block_size - 1))
        if basis.shape[1]:
            f2_rep = f2_rep + 2.0 * jnp.mean(jnp.sum((img @ basis_images.T) ** 2, axis=1))
    return jnp.stack([tr_rep, f2_rep])


# ----------------------------------------------------------------------------------------------------------
# Planning


def _plan(
    method: str,
    n: int,
    p: int,
    max_matvecs: int,
    rtol: float,
    sketch_size: int | None,
    block_size: int | None,
    need_f2: bool,
) -> _Plan:
    if method not in METHODS:
        raise ValueError(f"unknown NTK estimation method {method!r}; allowed: {', '.join(METHODS)}")
    if max_matvecs < 1:
        raise ValueError(f"max_matvecs must be a positive number of AD passes, got {max_matvecs}")
    small_side = smaller_side(n, p)
    d_small = min(n, p)
    if method == "auto":
        method = _auto_method(n, p, max_matvecs, rtol, need_f2)
    if method == "exact":
        cost = d_small * (2 if need_f2 else 1)
        if cost > max_matvecs:
            raise ValueError(
                f"exact NTK needs {cost} AD passes (min(n, p) = {d_small}, twice when tr K² is wanted) but "
                f"max_matvecs = {max_matvecs}; raise the budget or use a randomised method"
            )
        return _Plan("exact", small_side, "identity", d_small, min(d_small, 64), need_f2)
    side = {"hutchinson": "state", "reverse": "state", "forward": "param"}.get(method, small_side)
    dim = n if side == "state" else p
    if block_size is None:
        block_size = int(min(16, max(2, max_matvecs // 32)))
    if block_size < 2:
        raise ValueError(f"block_size must be ≥ 2 (pairs of probes estimate tr K²), got {block_size}")
    if method == "hutchinson":
        return _Plan(method, side, "none", 0, block_size, False)
    if method in ("forward", "reverse"):
        q = max_matvecs // 6 if sketch_size is None else sketch_size
        return _Plan(method, side, "random", min(q, dim), block_size, False)
    q = max_matvecs // 8 if sketch_size is None else sketch_size  # hutch++: the sketch costs 4q passes
    return _Plan(method, side, "range", min(max(q, 1), dim), block_size, need_f2)


def _auto_method(n: int, p: int, max_matvecs: int, rtol: float, need_f2: bool) -> str:
    """Exact when its passes fit in half the budget, else Hutch++."""
    del rtol
    if min(n, p) * (2 if need_f2 else 1) <= max_matvecs // 2:
        return "exact"
    return "hutch++"


# ----------------------------------------------------------------------------------------------------------
# The estimator


@dataclass(frozen=True)
class _Fixed:
    """Exactly computed deflation part: its contributions and what it cost."""

    basis: Array  # (d, q) orthonormal Q for the residual probes' projection; (d, 0) when none
    basis_images: Array  # (q, D) = M Q (unused when basis is empty)
    n_directions: int  # directions computed exactly (q, or d for the exact method)
    trace: float
    f2: float
    n_main: int
    n_other: int


def _fixed_part(plan: _Plan, op: NTKOperator, key: Array) -> _Fixed:
    side, q, chunk = plan.side, plan.sketch_size, plan.block_size
    dim = op.n if side == "state" else op.p
    image_of = lambda w: images(side, op.apply_fn, op.params, op.x, w)
    adjoint_of = lambda w: adjoint_images(side, op.apply_fn, op.params, op.x, w)
    empty = jnp.zeros((dim, 0), op.dtype), jnp.zeros((0, 1), op.dtype)
    if plan.sketch == "none":
        return _Fixed(*empty, 0, 0.0, 0.0, 0, 0)
    if plan.sketch == "identity":  # stream the basis: tr A = Σ‖M eᵢ‖², tr A² = Σ‖A eᵢ‖²
        sums = sum(
            _exact_chunk(
                op.apply_fn, op.params, op.x, start, side=side, dim=dim, chunk=chunk, square=plan.square
            )
            for start in range(0, dim, chunk)
        )
        return _Fixed(*empty, dim, float(sums[0]), float(sums[1]), dim, dim if plan.square else 0)
    n_other = 0
    if plan.sketch == "random":
        basis = jnp.linalg.qr(jax.random.normal(key, (dim, q), op.dtype))[0]
    else:  # range finder: Q = orth(A S)
        sketch = jax.random.rademacher(key, (q, dim), dtype=op.dtype)
        basis = jnp.linalg.qr(_chunked(lambda s: adjoint_of(image_of(s)), sketch, chunk).T)[0]
        n_other = q
    basis_images = _chunked(image_of, basis.T, chunk)
    n_main = q + (q if plan.sketch == "range" else 0)
    if plan.square:
        f2 = float(jnp.sum(_chunked(adjoint_of, basis_images, chunk) ** 2))
        n_other += q
    else:
        f2 = float(_gram_sq_norm(basis_images))
    return _Fixed(basis, basis_images, q, float(jnp.sum(basis_images**2)), f2, n_main, n_other)


def _gram_sq_norm(rows: Array) -> Array:
    """‖R Rᵀ‖²_F = ‖Rᵀ R‖²_F, through the smaller Gram matrix."""
    gram = rows @ rows.T if rows.shape[0] <= rows.shape[1] else rows.T @ rows
    return jnp.sum(gram**2)


def _check_inputs(op: NTKOperator, y: Array | None) -> None:
    out = op.apply_fn(op.params, op.x)
    bad = int(jnp.size(out) - jnp.sum(jnp.isfinite(out)))
    if bad:
        raise NonFiniteModelError(
            f"apply_fn(params, x) returned {bad} non-finite values out of {jnp.size(out)}; "
            "the NTK is undefined there"
        )
    if y is not None and tuple(jnp.shape(y)) != op.out_shape:
        raise ValueError(
            f"y has shape {tuple(jnp.shape(y))} but apply_fn(params, x) has shape {op.out_shape}; "
            "targets must match the model output (e.g. one-hot labels for a classifier)"
        )


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

    Returns:
      ``{"trace", "frobenius", "effective_rank"}`` and, when y is given, ``"label_alignment"`` and
      ``"label_alignment_centred"`` (y minus its mean over axis 0), each an :class:`Estimate` (only the
      requested ``quantities`` when given).

    Raises:
      ValueError: bad method, budget or y shape, or a budget too small for ``min_blocks`` blocks.
      NonFiniteModelError: the model output is not finite.
    """
    if min_blocks < 2:
        raise ValueError(f"min_blocks must be ≥ 2 to estimate a standard error, got {min_blocks}")
    op = NTKOperator.create(apply_fn, params, x)
    _check_inputs(op, y)
    wanted = _requested(quantities, y is not None)
    plan = _plan(method, op.n, op.p, max_matvecs, rtol, sketch_size, block_size, need_f2=wanted != ("trace",))
    key_sketch, key_probes = jax.random.split(key)

    n_label_vjp = 0
    labels: dict[str, tuple[float, float]] = {}
    if y is not None:
        y = jnp.asarray(y, op.dtype)
        centred = y - jnp.mean(y, axis=0, keepdims=True)
        rows = jnp.stack([y.ravel(), centred.ravel()])
        jty = vjp_batch(op.apply_fn, op.params, op.x, rows)
        yky = np.asarray(jnp.sum(jty**2, axis=1), dtype=np.float64)
        ynorm = np.asarray(jnp.sum(rows**2, axis=1), dtype=np.float64)
        labels = {"label_alignment": (yky[0], ynorm[0]), "label_alignment_centred": (yky[1], ynorm[1])}
        n_label_vjp = 2

    fixed = _fixed_part(plan, op, key_sketch)
    n_main, n_other = fixed.n_main, fixed.n_other
    main_budget = max_matvecs - n_main - n_other - n_label_vjp
    reps: list[np.ndarray] = []
    converged = plan.sketch == "identity"
    if not converged:
        block_cost = plan.block_size * (2 if plan.square else 1)
        if main_budget < min_blocks * block_cost:
            raise ValueError(
                f"max_matvecs = {max_matvecs} leaves {main_budget} passes after the fixed part "
                f"({n_main + n_other + n_label_vjp}), fewer than min_blocks × block cost = "
                f"{min_blocks} × {block_cost}; raise max_matvecs or lower sketch_size/block_size"
            )
        dim = op.n if plan.side == "state" else op.p
        while main_budget >= block_cost:
            rep = _block_replicate(
                op.apply_fn,
                op.params,
                op.x,
                jax.random.fold_in(key_probes, len(reps)),
                fixed.basis,
                fixed.basis_images,
                side=plan.side,
                dim=dim,
                block_size=plan.block_size,
                square=plan.square,
            )
            reps.append(np.asarray(rep, dtype=np.float64))
            main_budget -= block_cost
            n_main += plan.block_size
            n_other += plan.block_size if plan.square else 0
            if len(reps) >= min_blocks and rtol > 0:
                ests = _summarise(fixed, np.stack(reps), labels)
                if all(ests[q][1] <= rtol * abs(ests[q][0]) for q in wanted):
                    converged = True
                    break
    values = _summarise(fixed, np.stack(reps) if reps else np.zeros((0, 2)), labels)
    n_jvp, n_vjp = (n_other, n_main) if plan.side == "state" else (n_main, n_other)
    n_vjp += n_label_vjp
    n_probes = fixed.n_directions + len(reps) * plan.block_size
    if not np.isfinite(values["trace"][0]):
        raise NonFiniteModelError("the NTK trace estimate is not finite (overflow in J?)")
    return {
        name: Estimate(v, se, bias, plan.method, n_jvp, n_vjp, n_probes, converged)
        for name, (v, se, bias) in values.items()
        if name in wanted
    }


def _requested(quantities: Sequence[str] | None, has_y: bool) -> tuple[str, ...]:
    available = QUANTITIES if has_y else QUANTITIES[:3]
    if quantities is None:
        return available
    for q in quantities:
        if q not in available:
            raise ValueError(f"unknown or unavailable quantity {q!r}; allowed here: {', '.join(available)}")
    return tuple(quantities)


def _functions(fixed: _Fixed, labels: Mapping[str, tuple[float, float]]) -> dict[str, Callable]:
    """Each quantity as a function of the replicate means (m_tr, m_f2)."""

    def f2(m: np.ndarray) -> float:
        return fixed.f2 + m[1]

    def frob(m: np.ndarray) -> float:
        return math.sqrt(f2(m)) if f2(m) > 0 else 0.0

    def trace(m: np.ndarray) -> float:
        return fixed.trace + m[0]

    def eff_rank(m: np.ndarray) -> float:
        return trace(m) ** 2 / f2(m) if f2(m) > 0 else math.nan

    out: dict[str, Callable] = {"trace": trace, "frobenius": frob, "effective_rank": eff_rank}
    for name, (yky, ynorm) in labels.items():
        out[name] = lambda m, yky=yky, ynorm=ynorm: (
            yky / (frob(m) * ynorm) if frob(m) > 0 and ynorm > 0 else math.nan
        )
    return out


def _summarise(
    fixed: _Fixed, reps: np.ndarray, labels: Mapping[str, tuple[float, float]]
) -> dict[str, tuple[float, float, float]]:
    """(value, jackknife stderr, jackknife bias) of every quantity from the (B, 2) block replicates."""
    funcs = _functions(fixed, labels)
    n_blocks = reps.shape[0]
    mean = reps.mean(axis=0) if n_blocks else np.zeros(2)
    out = {}
    for name, g in funcs.items():
        value = g(mean)
        if n_blocks < 2:
            out[name] = (value, 0.0, 0.0)
            continue
        loo = (n_blocks * mean - reps) / (n_blocks - 1)
        thetas = np.array([g(m) for m in loo])
        if np.all(np.isfinite(thetas)):
            se = math.sqrt((n_blocks - 1) / n_blocks * np.sum((thetas - thetas.mean()) ** 2))
            bias = (n_blocks - 1) * (thetas.mean() - value)
        else:
            se = bias = math.nan
        out[name] = (value, se, bias)
    return out
