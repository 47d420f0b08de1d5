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

Each is unbiased. The methods differ only in Q and in the tr A² residual (:func:`ntksearch.ntk.plan.plan_estimate`
resolves a method and a budget into these choices before any product is taken; this module executes the plan):

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

**Where the work runs.** Every Jacobian product goes through one jit-compiled kernel
(:mod:`ntksearch.ntk.kernel`: a block of probe rows → images, optional adjoint images, their row norms and
the block's cosines), compiled once per architecture, side and block shape. It runs AD passes
(:func:`probe_products`) or, for models whose passes cost more flops than a product with the dense Jacobian
(convolutions, recurrences with few outputs: :mod:`ntksearch.ntk.jacobian`), matrix products with J computed
once from per-example reverse passes. Both paths push the same probes through the same estimators, so the
estimates have the same distribution and differ by float rounding only; with J in hand the exact kernel is the
cheapest method, and ``auto`` takes it whenever its passes fit in the budget. The sketch, the adaptive loop and the
jackknife run on the host in float64 around it. Every square (‖Jᵀu‖², ‖K u‖², (uᵀK v)²) is formed there from
the scale-free pieces, so a float32 model whose kernel entries are representable but whose squares are not
(tr K² > 3.4e38) still gets exact ratios; only a kernel beyond float32's range raises
:class:`NonFiniteModelError`. The loop is deliberately
not an XLA ``while_loop``: XLA:CPU executes convolutions inside loop bodies about 70× slower than the same
convolutions outside (measured: 4.0 s vs 60 ms per VJP probe for a small CNN on 28×28 images).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh
from threadpoolctl import threadpool_limits

from ntksearch.ntk.kernel import NonFiniteModelError, ProbeKernel, ProbeProducts, prepare_kernel, probe_products
from ntksearch.ntk.operator import ApplyFn, Array, NTKOperator, Params, vjp_batch
from ntksearch.ntk.options import METHODS, CompileMode, Method, NTKOptions
from ntksearch.ntk.plan import QUANTITIES, EstimatePlan, plan_estimate, requested_quantities

__all__ = [
    "METHODS",
    "QUANTITIES",
    "Estimate",
    "EstimatePlan",
    "NonFiniteModelError",
    "ProbeKernel",
    "ProbeProducts",
    "host_rng",
    "ntk_metrics",
    "plan_estimate",
    "probe_mesh",
    "probe_products",
]

_DEFAULTS = NTKOptions()  # the keyword defaults of ntk_metrics


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


def _scaled_products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ bᵀ in float64 for float32 host arrays whose products may overflow float32: each operand is divided
    by its largest entry first and the scales multiplied back in float64."""
    scales = [float(np.max(np.abs(m))) if m.size else 0.0 for m in (a, b)]
    scales = [s if s > 0 else 1.0 for s in scales]
    return np.asarray((a / scales[0]) @ (b / scales[1]).T, np.float64) * (scales[0] * scales[1])


# ----------------------------------------------------------------------------------------------------------
# The host-side driver


def _quantities(fixed: np.ndarray, means: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """All quantities from the replicate means: (..., 2) → (..., 3 + L). labels: (L, 2) rows (yᵀKy, ‖y‖²)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tr = fixed[0] + means[..., 0]
        f2 = fixed[1] + means[..., 1]
        fro = np.sqrt(np.maximum(f2, 0.0))
        eff = np.where(f2 > 0, tr**2 / np.where(f2 > 0, f2, 1.0), np.nan)
        denom = fro[..., None] * labels[:, 1]
        align = np.where(denom > 0, labels[:, 0] / np.where(denom > 0, denom, 1.0), np.nan)
    return np.concatenate([tr[..., None], fro[..., None], eff[..., None], align], axis=-1)


def _jackknife(fixed: np.ndarray, reps: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """(value, stderr, bias) of every quantity from the (B, 2) block replicates (delete-one-block jackknife)."""
    count = reps.shape[0]
    mean = reps.mean(axis=0) if count else np.zeros(2)
    value = _quantities(fixed, mean, labels)
    if count < 2:
        return value, np.zeros_like(value), np.zeros_like(value)
    thetas = _quantities(fixed, (count * mean - reps) / (count - 1), labels)
    tbar = thetas.mean(axis=0)
    stderr = np.sqrt((count - 1) / count * np.sum((thetas - tbar) ** 2, axis=0))
    return value, stderr, (count - 1) * (tbar - value)



def _fixed_part(kernel: ProbeKernel, plan: EstimatePlan, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(basis Q (d, q) or an empty array, basis images MQ (q, D) or None, exact sums [tr, tr²-part])."""
    d, q = plan.dim, plan.sketch_size
    if plan.sketch == "none":
        return np.zeros((d, 0)), None, np.zeros(2)
    if plan.sketch == "identity" and kernel.dense:  # tr A = ‖J‖²_F, tr A² = ‖A‖²_F from one Gram matrix
        return np.zeros((d, 0)), None, kernel.gram_sums(plan.square)
    if plan.sketch == "identity":  # stream the basis: tr A = Σ‖M eᵢ‖², tr A² = Σ‖A eᵢ‖²
        sums = np.zeros(2)
        for start in range(0, d, plan.block_size):
            stop = min(start + plan.block_size, d)
            rows = np.zeros((stop - start, d))
            rows[np.arange(stop - start), np.arange(start, stop)] = 1.0
            out = kernel(rows, adjoint=plan.square)
            sums += [np.sum(out.image_sq), np.sum(out.adjoint_sq)]
        return np.zeros((d, 0)), None, sums
    if plan.sketch == "random":
        basis = np.linalg.qr(rng.standard_normal((d, q)))[0]
    else:  # range finder: Q = orth(A S)
        sketch = rng.choice(np.array([-1.0, 1.0]), size=(q, d))
        basis = np.linalg.qr(kernel.rows(sketch, adjoint=True, keep=("adjoint",))["adjoint"].T.astype(np.float64))[0]
    out = kernel.rows(basis.T, adjoint=plan.square, keep=() if plan.square else ("images",))
    if plan.square:  # tr A² part: ‖AQ‖²_F
        return basis, None, np.array([np.sum(out["image_sq"]), np.sum(out["adjoint_sq"])])
    images = out["images"]  # ‖QᵀAQ‖²_F from the q × q Gram matrix of the basis images
    return basis, images, np.array([np.sum(out["image_sq"]), np.sum(_scaled_products(images, images) ** 2)])


def _block_replicate(out: ProbeProducts, plan: EstimatePlan, basis_images: np.ndarray | None) -> np.ndarray:
    """One block's unbiased replicate of (tr(ΠAΠ), residual of tr A²); see the module docstring."""
    b = plan.block_size
    tr_rep = np.mean(out.image_sq)
    if plan.square:
        return np.array([tr_rep, np.mean(out.adjoint_sq)])
    gram = out.gram
    f2_rep = (np.sum(gram**2) - np.sum(np.diag(gram) ** 2)) / (b * (b - 1))
    if basis_images is not None:  # 2‖QᵀAΠ‖²_F from the cross products with the basis images
        cross = _scaled_products(np.asarray(out.images), basis_images)
        f2_rep += 2.0 * np.mean(np.sum(cross**2, axis=1))
    return np.array([tr_rep, f2_rep])


def host_rng(key: Array, *path: int) -> np.random.Generator:
    """A numpy generator determined by a JAX key and a path (estimators: sketch 0, block i (1, i))."""
    return np.random.default_rng([*np.asarray(jax.random.key_data(key)).ravel().tolist(), *path])


def _label_sums(op: NTKOperator, kernel: ProbeKernel, plan: EstimatePlan, y: Array) -> np.ndarray:
    """(yᵀKy, ‖y‖²) for y and for y centred over the batch axis: ‖Jᵀy‖² by one VJP each."""
    y = np.asarray(y, np.float64)
    rows = np.stack([y.ravel(), (y - y.mean(axis=0, keepdims=True)).ravel()])
    if plan.side == "state":  # the kernel's own images are VJPs (its compiled variant of the blocks is reused;
        # a dense exact kernel has no blocks, only its Gram matrix, so it takes the images alone)
        yky = kernel.rows(rows, adjoint=plan.square and not (kernel.dense and plan.sketch == "identity"))["image_sq"]
    else:
        jty = vjp_batch(op.apply_fn, op.params, op.x, jnp.asarray(rows, op.dtype))
        yky = np.sum(np.asarray(jty, np.float64) ** 2, axis=1)
    return np.stack([yky, np.sum(rows**2, axis=1)], axis=1)


def ntk_metrics(
    apply_fn: ApplyFn,
    params: Params,
    x: Array,
    y: Array | None = None,
    *,
    key: Array,
    method: Method = _DEFAULTS.method,
    rtol: float = _DEFAULTS.rtol,
    max_matvecs: int = _DEFAULTS.max_matvecs,
    quantities: Sequence[str] | None = None,
    min_blocks: int = 4,
    sketch_size: int | None = _DEFAULTS.sketch_size,
    block_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    compile_mode: CompileMode = _DEFAULTS.compile_mode,
) -> dict[str, Estimate]:
    """Estimate NTK quantities of ``apply_fn`` at ``(params, x)`` without forming J or K.

    The defaults of ``method``, ``rtol``, ``max_matvecs`` and ``sketch_size`` are :class:`NTKOptions`'
    (``ntk_metrics(..., **options.estimator_arguments())`` runs at given options).

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
      compile_mode: ``"fast"``, ``"optimised"`` or ``"auto"``, how the product kernel compiles
        (:mod:`ntksearch.ntk.compile`: level 0 halves a new model's compile time, its products run 2–10×
        longer; ``"optimised"`` when one model is estimated many times or with thousands of products).

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
    wanted = requested_quantities(quantities, y is not None)
    n_labels = 2 if any(q.startswith("label") for q in wanted) else 0
    mesh = probe_mesh(devices)
    setup = prepare_kernel(apply_fn, params, x, mesh, compile_mode)
    plan = plan_estimate(method, op.n, op.p, max_matvecs=max_matvecs, wanted=wanted, n_labels=n_labels,
                         min_blocks=min_blocks, sketch_size=sketch_size, block_size=block_size, mesh=mesh,
                         dense=setup.point is not None)
    kernel = ProbeKernel(apply_fn, params, x, side=plan.side, block_size=plan.block_size, dim=plan.dim, mesh=mesh,
                         point=setup.point, fast_compile=setup.fast_compile)
    with threadpool_limits(1, user_api="blas"):  # small host matrices; threaded BLAS beside XLA only thrashes
        return _estimate(op, kernel, plan, y, key, rtol)


def _estimate(op: NTKOperator, kernel: ProbeKernel, plan: EstimatePlan, y: Array | None, key: Array, rtol: float
              ) -> dict[str, Estimate]:
    labels = _label_sums(op, kernel, plan, y) if plan.n_labels else np.zeros((0, 2))
    basis, basis_images, fixed = _fixed_part(kernel, plan, host_rng(key, 0))
    reps: list[np.ndarray] = []
    converged = plan.sketch == "identity"
    while len(reps) < plan.max_blocks and not converged:
        z = host_rng(key, 1, len(reps)).choice(np.array([-1.0, 1.0]), size=(plan.block_size, plan.dim))
        if basis.shape[1]:
            z = z - (z @ basis) @ basis.T
        reps.append(_block_replicate(kernel(z, adjoint=plan.square), plan, basis_images))
        if len(reps) >= plan.min_blocks and rtol > 0:
            value, stderr, _ = _jackknife(fixed, np.stack(reps), labels)
            converged = bool(np.all(stderr[list(plan.wanted)] <= rtol * np.abs(value[list(plan.wanted)])))
    sums = np.stack(reps) if reps else np.zeros((0, 2))
    if not all(np.all(np.isfinite(a)) for a in (fixed, sums, labels)):
        raise NonFiniteModelError(
            f"the NTK overflows {kernel.dtype} (Jacobian products beyond {np.finfo(kernel.dtype).max:.2g}): tr K, "
            "‖K‖_F and the ratios cannot be computed at this scale; use float64 parameters (jax_enable_x64) or a "
            "smaller initialisation scale")
    value, stderr, bias = _jackknife(fixed, sums, labels)
    n_jvp, n_vjp = plan.passes(len(reps))
    n_probes = plan.sketch_size + len(reps) * plan.block_size
    return {
        QUANTITIES[i]: Estimate(float(value[i]), float(stderr[i]), float(bias[i]), plan.method, n_jvp, n_vjp,
                                n_probes, converged)
        for i in plan.wanted
    }


def probe_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A 1-d ``"probes"`` mesh over ``devices`` (default: all local devices), or None for a single device."""
    devices = list(jax.local_devices() if devices is None else devices)
    if len(devices) <= 1:
        return None
    return Mesh(np.asarray(devices), ("probes",), axis_types=(AxisType.Auto,))
