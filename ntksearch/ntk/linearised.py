r"""What the linearised network reaches after t steps of gradient descent, matrix-free (Lanczos on K_AA).

**Definitions** (the public contract). A training batch A of N examples with C outputs each and one-hot targets
Y_A (N, C); a held-out batch B of M examples with labels y_B (one-hot Y_B); f₀ the outputs at the parameters
θ₀; K_AA = J_A J_Aᵀ (NC × NC) and K_BA = J_B J_Aᵀ (MC × NC); r₀ = vec(Y_A − f₀(A)). Gradient descent with step
η on the linearised model f(θ) = f₀ + J(θ − θ₀) and the loss L = ‖f(A) − Y_A‖²/(2N) gives after t steps

    r_t = p_t(K_AA) r₀,                   p_t(λ) = (1 − ηλ/N)^t,
    f_t(B) = f₀(B) + K_BA h_t(K_AA) r₀,    h_t(λ) = (1 − p_t(λ))/λ   (= tη/N at λ = 0),
    train_loss = ‖r_t‖²/(2N),   val_loss = ‖f_t(B) − Y_B‖²/(2M),   val_accuracy = mean_i [argmax f_t(B)_i = y_B,i],
    complexity = r₀ᵀ(K_AA + ρI)⁻¹r₀ / N  with  ρ = ridge · tr(K_AA)/(NC)   (Arora et al., ICML 2019).

Heavy-ball momentum β (θ_{s+1} = θ_s − η∇L(θ_s) + β(θ_s − θ_{s−1}), optax's ``sgd(momentum=β)``) keeps the
same form with p_{s+1} = (1 + β − ηλ/N)p_s − βp_{s−1} (p₀ = p₋₁ = 1) and h_{s+1} = (1 + β − ηλ/N)h_s − βh_{s−1}
+ η/N (h₀ = h₋₁ = 0); β = 0 is plain gradient descent (:mod:`ntksearch.ntk.linearised_dynamics` evaluates both).
``learning_rate="auto"`` means η = lr_fraction · 2N/λ_max. The default fraction 0.5 gives η = N/λ_max: the
largest step at which no mode oscillates (1 − ηλ/N ∈ [0, 1) for every eigenvalue; the top mode is fitted in one
step), the step of the dense check this score started from, and the default ``confirm.lr_fraction`` too (which
scales the softmax stable rate 2NC/λ_max, the same time scale: see :mod:`ntksearch.proxies.linearised`). The
iteration is stable iff ηλ_max/N < 2(1 + β); at or beyond it the model *diverges*: the losses are returned as
computed (huge, or +inf once they overflow), the accuracy at chance level 1/C, and
:attr:`LinearisedMetrics.diverged` is set.

**How it is computed.** Lanczos on K_AA started at r₀ (:mod:`ntksearch.ntk.lanczos`) gives Q_k and T_k = Q_kᵀ
K_AA Q_k with Ritz values θᵢ and weights wᵢ = ‖r₀‖²S₁ᵢ². Then train_loss ≈ Σᵢ wᵢ p_t(θᵢ)²/(2N) and complexity
≈ Σᵢ wᵢ/(θᵢ + ρ)/N (Gauss quadrature); h_t(K_AA)r₀ ≈ Q_k y with y = ‖r₀‖ S h_t(θ) S₁,:ᵀ (the Lanczos
approximation), so f_t(B) ≈ f₀(B) + (K_BA Q_k) y. K_BA Q_k = J_B (J_Aᵀ Q_k): the VJP image J_Aᵀq_j of every
Lanczos vector stays on the device and goes through one JVP on B (8 vectors per call). tr K_AA (for ρ) is
estimated by Rademacher probes riding in the spare rows of every kernel call, deflated by the Lanczos basis.
All products run through the estimators' compiled kernel family (:class:`~ntksearch.ntk.estimators.ProbeKernel`):
a block of b rows on A (the Lanczos vector and b − 1 probes; b = 2 by default, b = 16 reuses the estimators'
own compiled program), and the parameter-side JVP kernel on B. Nothing here depends on (η, t, ρ, β): one
:class:`LinearisedKernel` evaluates any number of settings (:meth:`LinearisedKernel.metrics`).

**K formed once, for dense-layer models** (``structured=True``, the default): when the model's weight matrices enter
through dense products (once, at every step of a ``scan``, or at every token) and the rest of its parameters are few
(:func:`ntksearch.ntk.structured.structured_pays`), K_AA and K_BA are formed exactly from per-layer factors
(:func:`ntksearch.ntk.structured.structured_kernel`: per example one forward and C reverse passes, then Gram
matrices of layer inputs and output gradients) and every product above is a float64 matrix product on the host: the
same Lanczos run, the same probes and stopping rule, values equal to the AD products' up to float rounding, in one
compiled program instead of a product kernel called ≈ 50 times. Convolutional networks, models coupling their
examples (batch statistics: the batch and per-example outputs differ) and runs over several devices keep the AD
products. Models whose products go through the dense per-example Jacobian J (convolutions,
:mod:`ntksearch.ntk.jacobian`) form K_AA = J Jᵀ once on the device when no held-out batch is asked for (one (n ×
p)·(p × n) product instead of two passes over J per Lanczos step: a 62 k-parameter digits CNN 63 ms against ≈ 44
steps of ≈ 10 ms); with one, K_BA Q_k keeps its JVPs on B.

**λ_max for ``auto``** is the top Ritz value θ_max of T_k (Lanczos finds the extreme eigenvalues first). θ_max ≤
λ_max always; the Ritz residual ‖K s − θ_max s‖ (reported) bounds the distance to an eigenvalue, and the error
to λ_max is at most residual²/gap when λ_max is separated from the rest of the spectrum by the gap, which at
initialisation it is (the top NTK eigenvalue stands tens of times above the mean): after a dozen steps θ_max
agrees with the dense λ_max to ~1e-8 relative in the tests and benchmarks. Lanczos would miss λ_max only if r₀
had no component on its eigenvector (rounding puts one there in practice).

**Stopping and error indicators.** Each returned :class:`~ntksearch.ntk.estimators.Estimate` has as ``stderr``
an error indicator, not a statistical standard error: for the complexity, the width of the Gauss/Gauss–Radau
bracket (a rigorous bound on the quadrature error at the estimated ρ) plus twice the trace's standard error
carried through ρ (|∂C/∂ρ|·2δρ); for the losses, the change over the last Lanczos step (Gauss quadrature
converges geometrically or faster, so in practice this exceeds the remaining error); for the accuracy, the
fraction of held-out predictions that changed over the last step. ``converged`` is ``stderr ≤ rtol·|value|``.
After every step the quantities of the setting passed to :func:`linearise_kernel` are evaluated, and the run
stops once the train loss changed by ≤ rtol, the complexity's indicator is ≤ rtol and (with a held-out batch)
the parameter displacement θ_t − θ₀ = J_Aᵀ Q_k y changed by ≤ rtol in norm (√(δyᵀT_kδy)), all relative to
their values (for a diverging setting: the complexity's indicator and λ_max), or after ``max_matvecs`` steps.
The held-out predictions are not watched directly (their products arrive 8 steps at a time): near-ties can
leave their accuracy indicator above rtol.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from threadpoolctl import threadpool_limits

from ntksearch.ntk.compile import compiles_fast, jitted
from ntksearch.ntk.estimators import NonFiniteModelError, ProbeKernel, host_rng, probe_mesh
from ntksearch.ntk.forward import ForwardPass, trace_forward
from ntksearch.ntk.kernel import prepare_kernel
from ntksearch.ntk.lanczos import Lanczos, ritz
from ntksearch.ntk.linearised_dynamics import LinearisedKernel, LinearisedMetrics, check_setting
from ntksearch.ntk.operator import ApplyFn, Array, Params
from ntksearch.ntk.options import CompileMode, LinearisedOptions
from ntksearch.ntk.spectra import rayleigh_ritz_top
from ntksearch.ntk.structured import StructuredKernel, structured_kernel, structured_pays

__all__ = ["DEFAULT_MAX_MATVECS", "LinearisedKernel", "LinearisedMetrics", "linearise_kernel", "linearised_metrics"]

_DEFAULTS = LinearisedOptions()  # the keyword defaults of linearise_kernel and linearised_metrics
DEFAULT_MAX_MATVECS = _DEFAULTS.max_matvecs
VAL_BLOCK = 8  # Lanczos vectors pushed through the JVPs on B per kernel call


def linearise_kernel(apply_fn: ApplyFn, params: Params, x_train: Array, y_train: Array, x_val: Array | None = None,
                     y_val: Array | None = None, *, key: Array, learning_rate: float | str = _DEFAULTS.learning_rate,
                     steps: int = _DEFAULTS.steps, ridge: float = _DEFAULTS.ridge, momentum: float = _DEFAULTS.momentum,
                     lr_fraction: float = _DEFAULTS.lr_fraction, max_matvecs: int = _DEFAULTS.max_matvecs,
                     rtol: float = _DEFAULTS.rtol, block_size: int = 2,
                     compile_mode: CompileMode = _DEFAULTS.compile_mode, structured: bool = _DEFAULTS.structured,
                     ) -> LinearisedKernel:
    """Run Lanczos on K_AA from r₀ (and K_BA on its basis) until the given setting has settled (module docstring).

    Args:
      apply_fn: ``apply_fn(params, x) -> logits (N, C)``. params: the point θ₀.
      x_train: the training batch A (N, ...). y_train: one-hot targets (N, C).
      x_val, y_val: the held-out batch B (M, ...) with integer labels (M,) or one-hot (M, C); both or neither.
      key: PRNG key for the trace probes (and restart vectors); results are a deterministic function of it.
      learning_rate, steps, ridge, momentum, lr_fraction: the setting the stopping rule watches (any other
        setting can be evaluated afterwards with :meth:`LinearisedKernel.metrics`).
      max_matvecs: the most K_AA products on Lanczos vectors (Lanczos steps, the Krylov dimension k).
      rtol: stop once the setting's quantities changed by ≤ rtol relative (0: run all ``max_matvecs`` steps;
        the default, :class:`ntksearch.ntk.options.LinearisedOptions`' 1e-2 as every keyword default here, is a
        ranking tolerance: pass 1e-3 or less for a measurement).
      block_size: b, rows per kernel call on A: the Lanczos vector and b − 1 trace probes (16 reuses the
        estimators' compiled program; 2, the default, costs the least per step where products are compute-bound).
      compile_mode: how the products compile (:mod:`ntksearch.ntk.compile`: ``"fast"`` halves the compile time
        and runs slower; ``"optimised"`` for long runs on large batches; ``"auto"``).
      structured: form K_AA and K_BA once from per-layer factors when the model allows
        (:mod:`ntksearch.ntk.structured`; the same values up to float rounding); False: always AD products.

    Raises:
      ValueError: bad shapes or settings. NonFiniteModelError: non-finite model outputs or products.
    """
    forward = trace_forward(apply_fn, params, x_train)
    labels = _check_batches(tuple(forward.out.shape), x_train, y_train, x_val, y_val)
    check_setting(learning_rate, steps, ridge, momentum, lr_fraction)
    if isinstance(max_matvecs, bool) or not isinstance(max_matvecs, int) or max_matvecs < 1:
        raise ValueError(f"max_matvecs must be a positive number of Lanczos steps, got {max_matvecs!r}")
    if block_size < 2:
        raise ValueError(f"block_size must be ≥ 2 (the Lanczos vector and at least one trace probe), got {block_size}")
    if not rtol >= 0:
        raise ValueError(f"rtol must be ≥ 0, got {rtol!r}")
    y = np.asarray(y_train, np.float64)
    n, n_classes = y.size, y.shape[1]
    products = _products(apply_fn, params, x_train, x_val if labels is not None else None, compile_mode, forward,
                         block_size, structured)
    probe_rng = host_rng(key, 1)
    draw = lambda count: probe_rng.choice(np.array([-1, 1], np.int8), size=(count, n))
    lanczos = Lanczos(n, max_matvecs, block_size * (max_matvecs + 1), host_rng(key, 2))
    with threadpool_limits(1, user_api="blas"):
        probes = draw(block_size)
        outputs, probe_sq = products.first(probes)  # trace probes only; gives f₀(A)
        lanczos.add_probes(probes, probe_sq)
        residual = y.ravel() - outputs
        norm = float(np.linalg.norm(residual))
        start = residual if norm > 0 else host_rng(key, 3).standard_normal(n)  # r₀ = 0: any start (for λ_max, tr K)
        vector = start / np.linalg.norm(start)
        calls = 1
        while lanczos.k < min(max_matvecs, n):
            probes = draw(block_size - 1)
            product, probe_sq = products.step(vector, probes)
            calls += 1
            if not np.all(np.isfinite(product)):
                raise NonFiniteModelError("a K_AA product is not finite; the linearised dynamics are undefined")
            lanczos.add_probes(probes, probe_sq)
            vector = lanczos.extend(vector, product)
            snapshot = _kernel(lanczos, residual, n_classes, None, rtol, (0, 0), final=False)
            if rtol > 0 and snapshot.settled(learning_rate, steps, ridge, momentum, lr_fraction, rtol,
                                             watch_displacement=labels is not None):
                break
        val = products.held_out(labels) if labels is not None else None
    return _kernel(lanczos, residual, n_classes, val, rtol, products.passes(calls, block_size, lanczos.k),
                   final=True)


def linearised_metrics(apply_fn: ApplyFn, params: Params, x_train: Array, y_train: Array, x_val: Array | None,
                       y_val: Array | None, *, key: Array, learning_rate: float | str = _DEFAULTS.learning_rate,
                       steps: int = _DEFAULTS.steps, ridge: float = _DEFAULTS.ridge,
                       max_matvecs: int = _DEFAULTS.max_matvecs, lr_fraction: float = _DEFAULTS.lr_fraction,
                       momentum: float = _DEFAULTS.momentum, rtol: float = _DEFAULTS.rtol, block_size: int = 2,
                       compile_mode: CompileMode = _DEFAULTS.compile_mode, structured: bool = _DEFAULTS.structured,
                       ) -> LinearisedMetrics:
    """The linearised network's train loss, held-out loss and accuracy after ``steps`` steps, and the NTK
    complexity (definitions in the module docstring), matrix-free.

    ``x_val``/``y_val`` may be None (then only ``"train_loss"`` and ``"complexity"`` are returned). Arguments as
    :func:`linearise_kernel`; this is ``linearise_kernel(...).metrics(learning_rate, steps, ridge, ...)``. For
    many settings of one model, call :func:`linearise_kernel` once and :meth:`LinearisedKernel.metrics` per setting.
    """
    kernel = linearise_kernel(apply_fn, params, x_train, y_train, x_val, y_val, key=key, learning_rate=learning_rate,
                              steps=steps, ridge=ridge, momentum=momentum, lr_fraction=lr_fraction,
                              max_matvecs=max_matvecs, rtol=rtol, block_size=block_size, compile_mode=compile_mode,
                              structured=structured)
    return kernel.metrics(learning_rate, steps, ridge, momentum=momentum, lr_fraction=lr_fraction)


def _check_batches(out_shape: tuple[int, ...], x_train: Array, y_train: Array, x_val: Array | None,
                   y_val: Array | None) -> np.ndarray | None:
    """ValueError for mismatched shapes (``out_shape``: the shape of apply_fn(params, x_train)); the held-out
    labels as integers (M,), or None without a held-out batch."""
    if len(out_shape) != 2:
        raise ValueError(f"apply_fn(params, x_train) must return logits of shape (N, C), got shape {out_shape}")
    if tuple(np.shape(y_train)) != out_shape:
        raise ValueError(f"y_train has shape {tuple(np.shape(y_train))} but apply_fn(params, x_train) has shape "
                         f"{out_shape}; y_train must be one-hot targets (N, C) matching the logits")
    if (x_val is None) != (y_val is None):
        raise ValueError("pass both x_val and y_val (the held-out batch) or neither")
    if x_val is None:
        return None
    if tuple(np.shape(x_val)[1:]) != tuple(np.shape(x_train)[1:]):
        raise ValueError(f"x_val examples have shape {tuple(np.shape(x_val)[1:])} but x_train examples have shape "
                         f"{tuple(np.shape(x_train)[1:])}")
    m, n_classes = np.shape(x_val)[0], out_shape[1]
    labels = np.asarray(y_val)
    if labels.shape == (m, n_classes):
        return np.argmax(labels, axis=1)
    integers = labels.shape == (m,) and np.issubdtype(labels.dtype, np.integer)
    if integers and np.all((labels >= 0) & (labels < n_classes)):
        return labels.astype(np.int64)
    raise ValueError(f"y_val must be integer labels (M,) in [0, {n_classes}) or one-hot targets (M, {n_classes}) for "
                     f"the M = {m} held-out examples, got shape {labels.shape} and dtype {labels.dtype}")


def _jacobian_gram(jac: Array) -> Array:
    """J Jᵀ (n, n) of a dense Jacobian (n, p), in its dtype."""
    return jac @ jac.T


def _products(apply_fn: ApplyFn, params: Params, x_train: Array, x_val: Array | None, compile_mode: CompileMode,
              forward: ForwardPass, block_size: int, structured: bool) -> _ADProducts | _GramProducts:
    """Where the Lanczos run's products come from: K_AA and K_BA formed from per-layer factors when
    ``structured`` and the model allows it on one device (:mod:`ntksearch.ntk.structured`), K_AA = J Jᵀ when
    ``structured``, the products go through a dense Jacobian and there is no held-out batch, else the compiled
    product kernel."""
    mesh = probe_mesh()
    n_outputs = forward.out.shape[1]
    if (structured and mesh is None and not forward.batch_statistics
            and structured_pays(apply_fn, params, x_train, x_val, n_outputs)):
        gram = structured_kernel(apply_fn, params, x_train, x_val,
                                 fast_compile=compiles_fast(compile_mode, forward, runs_once=True))
        if gram is not None:
            return _GramProducts(gram, n_outputs)
    setup = prepare_kernel(apply_fn, params, x_train, mesh, compile_mode, forward=forward)
    if structured and setup.point is not None and x_val is None:  # J in hand: K_AA = J Jᵀ once (module doc)
        outputs, jac = setup.point
        gram = np.asarray(jitted(_jacobian_gram, fast=False)(jac))
        return _GramProducts(StructuredKernel(gram, np.asarray(outputs), None, None), n_outputs)
    kernel = ProbeKernel(apply_fn, params, x_train, side="state", block_size=block_size,
                         dim=x_train.shape[0] * n_outputs, mesh=mesh, point=setup.point,
                         fast_compile=setup.fast_compile)
    return _ADProducts(kernel, None if x_val is None else _HeldOut(apply_fn, params, x_val, mesh, setup.fast_compile))


class _ADProducts:
    """K_AA products through the compiled product kernel (AD passes or the dense Jacobian), one block of rows per
    Lanczos step; K_BA on the Lanczos basis through :class:`_HeldOut`."""

    def __init__(self, kernel: ProbeKernel, held: _HeldOut | None):
        self.kernel, self.held = kernel, held

    def first(self, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(f₀(A) flattened (n,), zᵀK_AA z of each probe row)."""
        out = self.kernel(probes, adjoint=True)
        return np.asarray(out.outputs, np.float64), np.asarray(out.image_sq, np.float64)

    def step(self, vector: np.ndarray, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K_AA q for the Lanczos vector q, zᵀK_AA z of each probe row)."""
        out = self.kernel(np.concatenate([vector[None], probes]), adjoint=True)
        if self.held is not None:
            self.held.add(out.images[0])
        product = np.asarray(out.adjoint, np.float64)[0]  # one transfer, no slicing program on the device
        return product, np.asarray(out.image_sq[1:], np.float64)

    def held_out(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K_BA Q_k (MC, k), f₀(B) (M, C), labels (M,))."""
        assert self.held is not None
        return self.held.finish(labels)

    def passes(self, calls: int, rows: int, k: int) -> tuple[int, int]:
        """(JVPs, VJPs): ``rows`` of each of ``calls`` kernel calls on A, one JVP on B per Lanczos vector."""
        return calls * rows + (k if self.held is not None else 0), calls * rows


class _GramProducts:
    """The same products with K_AA and K_BA formed once (:func:`ntksearch.ntk.structured.structured_kernel`, or
    K_AA = J Jᵀ from a dense Jacobian), as float64 matrix products on the host."""

    def __init__(self, gram: StructuredKernel, n_outputs: int):
        self.n_outputs = n_outputs
        self.outputs = np.asarray(gram.out_a, np.float64)
        if not np.all(np.isfinite(self.outputs)):
            raise NonFiniteModelError(f"apply_fn(params, x) returned {int(np.sum(~np.isfinite(self.outputs)))} "
                                      "non-finite values; the NTK is undefined there")
        self.k_aa = np.asarray(gram.k_aa, np.float64)
        self.k_ba = None if gram.k_ba is None else np.asarray(gram.k_ba, np.float64)
        self.out_b = None if gram.out_b is None else np.asarray(gram.out_b, np.float64)
        self.basis: list[np.ndarray] = []

    def _quadratic(self, probes: np.ndarray) -> np.ndarray:
        z = probes.astype(np.float64)
        return np.einsum("ij,ij->i", z @ self.k_aa, z)

    def first(self, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.outputs, self._quadratic(probes)

    def step(self, vector: np.ndarray, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.basis.append(vector)
        return self.k_aa @ vector, self._quadratic(probes)

    def held_out(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert self.k_ba is not None and self.out_b is not None
        products = self.k_ba @ np.stack(self.basis, axis=1)
        if not np.all(np.isfinite(products)):
            raise NonFiniteModelError("a K_BA product is not finite; the held-out predictions are undefined")
        return products, self.out_b.reshape(len(labels), -1), labels

    def passes(self, calls: int, rows: int, k: int) -> tuple[int, int]:
        """(JVPs, VJPs): none; C per-example reverse passes over A (and B)."""
        del calls, rows, k
        return 0, self.n_outputs * (1 if self.k_ba is None else 2)


class _HeldOut:
    """K_BA q = J_B (J_Aᵀ q) for the Lanczos vectors: their VJP images J_Aᵀq stay on the device and go through
    the parameter-side kernel on B (JVPs), :data:`VAL_BLOCK` at a time (the last block zero-padded)."""

    def __init__(self, apply_fn: ApplyFn, params: Params, x_val: Array, mesh: Any, fast_compile: bool):
        p = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))
        self.kernel = ProbeKernel(apply_fn, params, x_val, side="param", block_size=VAL_BLOCK, dim=p, mesh=mesh,
                                  fast_compile=fast_compile)
        self.pending: list[Array] = []
        self.columns: list[np.ndarray] = []
        self.outputs: np.ndarray | None = None

    def add(self, image: Array) -> None:
        self.pending.append(image)
        if len(self.pending) == VAL_BLOCK:
            self._flush()

    def _flush(self) -> None:
        count = len(self.pending)
        block = jnp.stack(self.pending + [jnp.zeros_like(self.pending[0])] * (VAL_BLOCK - count))
        out = self.kernel(block, adjoint=False)
        self.columns.append(np.asarray(out.images, np.float64)[:count])
        if self.outputs is None:
            self.outputs = np.asarray(out.outputs, np.float64)
        self.pending = []

    def finish(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K_BA Q_k (MC, k), f₀(B) (M, C), labels (M,))."""
        if self.pending:
            self._flush()
        products = np.concatenate(self.columns).T
        if not np.all(np.isfinite(products)):
            raise NonFiniteModelError("a K_BA product is not finite; the held-out predictions are undefined")
        return products, self.outputs.reshape(len(labels), -1), labels


def _kernel(lanczos: Lanczos, residual: np.ndarray, n_classes: int,
            val: tuple[np.ndarray, np.ndarray, np.ndarray] | None, rtol: float, passes: tuple[int, int], *,
            final: bool) -> LinearisedKernel:
    """A :class:`LinearisedKernel` from the Lanczos state; ``passes`` = (JVPs, VJPs) spent.
    Only the ``final`` one gets the Ritz residual of λ_max (O(nk) host work; NaN in the loop's snapshots)."""
    k = lanczos.k
    tri = lanczos.tri[:k, :k].copy()
    if final:
        top, top_residual = rayleigh_ritz_top(lanczos.basis[:, :k], lanczos.products[:, :k])
    else:
        top, top_residual = float(ritz(tri)[0][-1]), math.nan
    trace, trace_stderr = lanczos.trace()
    products, outputs, labels = val if val is not None else (None, None, None)
    return LinearisedKernel(n_classes, residual, tri, lanczos.betas[:k].copy(), products, outputs, labels, trace,
                            trace_stderr, max(top, 0.0), top_residual, *passes, rtol)
