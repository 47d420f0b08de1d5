r"""The linearised training dynamics of a Lanczos decomposition of K_AA at any (η, t, ρ, β): :class:`LinearisedKernel`.

The quantities, their definitions and how the decomposition is built are in :mod:`ntksearch.ntk.linearised`.
Given Q_k, T_k = Q_kᵀK_AAQ_k = S diag(θ) Sᵀ, c = ‖r₀‖ S₁,:ᵀ (the roots of the Gauss weights), K_BA Q_k and
f₀(B), a setting costs O(k³ + k log t + MCk) host flops:

    train_loss ≈ Σᵢ cᵢ² p_t(θᵢ)² / (2N),     complexity ≈ Σᵢ cᵢ²/(θᵢ + ρ) / N,
    f_t(B) ≈ f₀(B) + (K_BA Q_k) S (h_t(θ) ⊙ c),

with p_t, h_t the residual and displacement polynomials of gradient descent with heavy-ball momentum β:
p_{s+1} = (1 + β − ηλ/N)p_s − βp_{s−1} (p₀ = p₋₁ = 1), h_{s+1} = (1 + β − ηλ/N)h_s − βh_{s−1} + η/N
(h₀ = h₋₁ = 0); for β = 0, p_t = (1 − ηλ/N)^t and h_t = (1 − p_t)/λ. Both are entries of the t-th power of one
3 × 3 affine recurrence matrix, evaluated by repeated squaring (:func:`_dynamics`); the complexity's upper end
comes from the Gauss–Radau rule (:func:`ntksearch.ntk.lanczos.gauss_radau`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ntksearch.ntk.estimators import Estimate
from ntksearch.ntk.lanczos import gauss_radau, ritz
from ntksearch.ntk.options import LinearisedOptions

__all__ = ["QUANTITIES", "LinearisedKernel", "LinearisedMetrics", "check_setting"]

QUANTITIES = ("train_loss", "val_loss", "val_accuracy", "complexity")
_DEFAULTS = LinearisedOptions()  # the setting LinearisedKernel.metrics evaluates by default
_NODE = 1e-12  # the Gauss–Radau node sits at −_NODE · θ_max: below every eigenvalue of the PSD K_AA


@dataclass(frozen=True)
class LinearisedMetrics(Mapping[str, Estimate]):
    """``"train_loss"``, ``"complexity"`` and, with a held-out batch, ``"val_loss"`` and ``"val_accuracy"`` →
    :class:`~ntksearch.ntk.estimators.Estimate`, plus the setting they were computed at.

    Attributes:
      estimates: the mapping itself. learning_rate: η used. steps: t. ridge: ρ used (absolute).
      momentum: β. lambda_max: θ_max, the λ_max estimate (``auto`` uses it). diverged: ηλ_max/N ≥ 2(1 + β).
      lanczos_steps: k, the Krylov dimension.
    """

    estimates: dict[str, Estimate]
    learning_rate: float
    steps: int
    ridge: float
    momentum: float
    lambda_max: float
    diverged: bool
    lanczos_steps: int

    def __getitem__(self, name: str) -> Estimate:
        return self.estimates[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.estimates)

    def __len__(self) -> int:
        return len(self.estimates)


@dataclass(frozen=True)
class LinearisedKernel:
    """A Lanczos decomposition of K_AA from r₀ and K_BA on its basis: the linearised dynamics at any setting.

    Attributes:
      n_classes: C. residual: r₀ (NC,). tridiagonal: T_k (k, k). betas: (k,) β_j after step j (for the
        Gauss–Radau rule at every truncation).
      val_products: K_BA Q_k (MC, k), or None without a held-out batch. val_outputs: f₀(B) (M, C).
        val_labels: y_B (M,) int.
      trace, trace_stderr: tr K_AA and its standard error (0 once the basis spans R^{NC}).
      lambda_max, lambda_max_residual: θ_max and ‖K_AA s − θ_max s‖.
      n_jvp, n_vjp: AD passes spent: b rows per call on A and one JVP on B per Lanczos vector, or, with K formed
        from per-layer factors, no JVP and C per-example reverse passes per batch.
      rtol: relative tolerance deciding ``converged``.
    """

    n_classes: int
    residual: np.ndarray
    tridiagonal: np.ndarray
    betas: np.ndarray
    val_products: np.ndarray | None
    val_outputs: np.ndarray | None
    val_labels: np.ndarray | None
    trace: float
    trace_stderr: float
    lambda_max: float
    lambda_max_residual: float
    n_jvp: int
    n_vjp: int
    rtol: float
    _spectra: dict[int, tuple[np.ndarray, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_examples(self) -> int:
        """N, the training batch size."""
        return self.residual.size // self.n_classes

    @property
    def lanczos_steps(self) -> int:
        """k, the Krylov dimension."""
        return self.tridiagonal.shape[0]

    def metrics(self, learning_rate: float | str = _DEFAULTS.learning_rate, steps: int = _DEFAULTS.steps,
                ridge: float = _DEFAULTS.ridge, *, momentum: float = _DEFAULTS.momentum,
                lr_fraction: float = _DEFAULTS.lr_fraction) -> LinearisedMetrics:
        """The linearised quantities at one setting (module docstring), with error indicators from the last step.

        Raises ValueError for a bad setting (learning_rate ≤ 0, steps ≤ 0, ridge ≤ 0, momentum ∉ [0, 1)...).
        """
        setting = _setting(self, learning_rate, steps, ridge, momentum, lr_fraction)
        k = self.lanczos_steps
        with threadpool_limits(1, user_api="blas"):  # k × k host algebra; threaded BLAS only thrashes here
            now = _evaluate(self, k, setting)
            before = _evaluate(self, k - 1, setting) if k > 1 else None
        c = self.n_classes
        diverged = setting.eta * self.lambda_max / self.n_examples >= 2 * (1 + momentum)
        errors = {"train_loss": _change(now, before, "train_loss"), "complexity": self._complexity_error(now, ridge)}
        if self.val_products is not None:
            errors["val_loss"] = _change(now, before, "val_loss")
            errors["val_accuracy"] = (float(np.mean(now["labels"] != before["labels"])) if before is not None
                                      else math.inf)
            if diverged:
                now["val_accuracy"], errors["val_accuracy"] = 1.0 / c, 0.0
        estimates = {}
        for name in QUANTITIES:
            if name in errors:
                value, err = _finite_or_inf(now[name]), _finite_or_inf(errors[name])
                estimates[name] = Estimate(value, err, 0.0, "lanczos", self.n_jvp, self.n_vjp, k,
                                           bool(err <= self.rtol * abs(value)))
        return LinearisedMetrics(estimates, setting.eta, steps, setting.rho, momentum, self.lambda_max, diverged, k)

    def _complexity_error(self, now: dict[str, Any], ridge: float) -> float:
        """The Gauss–Radau bracket (its magnitude: rounding can cross the two rules once they agree) plus twice the
        trace's standard error carried through ρ (|∂C/∂ρ| δρ)."""
        derivative = float(np.sum(now["weights"] / (now["theta"] + now["rho"]) ** 2)) / self.n_examples
        rho_error = ridge * 2 * self.trace_stderr / self.residual.size
        return abs(now["complexity_upper"] - now["complexity"]) + derivative * rho_error

    def spectrum(self, k: int) -> tuple[np.ndarray, ...]:
        """(θ, S) of T_k and (θ̃, S̃₁,:) of its Gauss–Radau extension with the node −10⁻¹²θ_max (cached: they do
        not depend on the setting)."""
        if k not in self._spectra:
            tri = self.tridiagonal[:k, :k]
            theta, vectors = ritz(tri)
            upper_theta, upper_vectors = ritz(gauss_radau(tri, self.betas[k - 1], -_NODE * theta[-1]))
            self._spectra[k] = (theta, vectors, upper_theta, upper_vectors[0])
        return self._spectra[k]

    def settled(self, learning_rate: float | str, steps: int, ridge: float, momentum: float, lr_fraction: float,
                rtol: float, *, watch_displacement: bool) -> bool:
        """The stopping rule of :func:`ntksearch.ntk.linearised.linearise_kernel` for one setting at the last step:
        relative to their values, the train loss changed by ≤ rtol, the complexity's error indicator is ≤ rtol and,
        with a held-out batch (``watch_displacement``), the displacement θ_t − θ₀ = J_Aᵀ Q_k y changed by ≤ rtol
        in norm (√(δyᵀT_kδy)); for a diverging setting, the complexity's indicator and λ_max's change."""
        k = self.lanczos_steps
        if k < 2:
            return False
        setting = _setting(self, learning_rate, steps, ridge, momentum, lr_fraction)
        now, before = _evaluate(self, k, setting), _evaluate(self, k - 1, setting)
        top = now["theta"][-1]
        complexity = self._complexity_error(now, ridge) <= rtol * now["complexity"]
        if setting.eta * top / self.n_examples >= 2 * (1 + momentum):
            return bool(complexity and abs(top - before["theta"][-1]) <= rtol * top)
        settled = complexity and _change(now, before, "train_loss") <= rtol * abs(now["train_loss"])
        if watch_displacement:
            step = now["coefficients"] - np.append(before["coefficients"], 0.0)
            y = now["coefficients"]
            settled = settled and bool(step @ self.tridiagonal @ step <= rtol**2 * (y @ self.tridiagonal @ y))
        return bool(settled)


@dataclass(frozen=True)
class _Setting:
    eta: float
    steps: int
    momentum: float
    rho: float


def check_setting(learning_rate: float | str, steps: int, ridge: float, momentum: float, lr_fraction: float
                   ) -> None:
    """ValueError naming the first bad value of a setting."""
    if not (learning_rate == "auto" if isinstance(learning_rate, str) else _positive(learning_rate)):
        raise ValueError(f"learning_rate must be a positive number or 'auto', got {learning_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps must be a positive integer number of gradient steps, got {steps!r}")
    if not _positive(ridge):
        raise ValueError(f"ridge must be a positive number (ρ = ridge · tr K/(NC)), got {ridge!r}")
    if not _positive(lr_fraction):
        raise ValueError(f"lr_fraction must be a positive number, got {lr_fraction!r}")
    if isinstance(momentum, bool) or not isinstance(momentum, int | float) or not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")


def _setting(kernel: LinearisedKernel, learning_rate: float | str, steps: int, ridge: float, momentum: float,
             lr_fraction: float) -> _Setting:
    """Check a setting and resolve η (``auto``: lr_fraction · 2N/θ_max) and ρ = ridge · tr K/(NC)."""
    check_setting(learning_rate, steps, ridge, momentum, lr_fraction)
    n = kernel.n_examples
    eta = lr_fraction * 2 * n / kernel.lambda_max if learning_rate == "auto" else float(learning_rate)
    if not math.isfinite(eta):  # K_AA = 0: nothing trains, and any step is stable
        eta = float(lr_fraction)
    return _Setting(eta, int(steps), float(momentum), ridge * kernel.trace / kernel.residual.size)


def _positive(value: Any) -> bool:
    return isinstance(value, int | float | np.floating) and not isinstance(value, bool) and math.isfinite(value) \
        and value > 0


def _dynamics(theta: np.ndarray, step: float, steps: int, momentum: float) -> tuple[np.ndarray, np.ndarray]:
    """(p_t(θ), h_t(θ)) for the Ritz values θ (k,): M^t by repeated squaring, M = [[1 + β − step·θ, −β, step],
    [1, 0, 0], [0, 0, 1]] acting on (x_s, x_{s−1}, 1), applied to (1, 1, 0) for p and (0, 0, 1) for h."""
    m = np.zeros((theta.size, 3, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2], m[:, 1, 0], m[:, 2, 2] = 1 + momentum - step * theta, -momentum, step, 1, 1
    power = np.broadcast_to(np.eye(3), m.shape).copy()
    with np.errstate(over="ignore", invalid="ignore"):
        while steps:
            if steps & 1:
                power = power @ m
            steps >>= 1
            if steps:
                m = m @ m
    return power[:, 0, 0] + power[:, 0, 1], power[:, 0, 2]


def _evaluate(kernel: LinearisedKernel, k: int, s: _Setting) -> dict[str, Any]:
    """Every quantity from the first k Lanczos vectors (Gauss quadrature and the Lanczos approximation)."""
    theta, vectors, upper_theta, upper_first = kernel.spectrum(k)
    norm = float(np.linalg.norm(kernel.residual))
    c = norm * vectors[0]
    n = kernel.n_examples
    p, h = _dynamics(theta, s.eta / n, s.steps, s.momentum)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        out: dict[str, Any] = {
            "theta": theta,
            "weights": c**2,
            "rho": s.rho,
            "train_loss": float(np.sum((c * p) ** 2)) / (2 * n),
            "complexity": float(np.sum(c**2 / (theta + s.rho))) / n,
            "complexity_upper": math.inf,  # the Radau node −10⁻¹²θ_max must lie above −ρ
            "coefficients": vectors @ (h * c),  # y: h_t(K_AA) r₀ ≈ Q_k y
        }
        if s.rho > 2 * _NODE * theta[-1]:
            out["complexity_upper"] = float(np.sum((norm * upper_first) ** 2 / (upper_theta + s.rho))) / n
        if kernel.val_products is not None:
            shift = kernel.val_products[:, :k] @ out["coefficients"]
            pred = kernel.val_outputs + shift.reshape(kernel.val_outputs.shape)
            target = np.eye(kernel.n_classes)[kernel.val_labels]
            out["val_loss"] = float(np.sum((pred - target) ** 2)) / (2 * len(target))
            out["labels"] = np.argmax(np.nan_to_num(pred, nan=0.0), axis=1)
            out["val_accuracy"] = float(np.mean(out["labels"] == kernel.val_labels))
    return out


def _change(now: dict[str, Any], before: dict[str, Any] | None, name: str) -> float:
    """|now − before| of a quantity; inf without a previous step; 0 when both are the same infinity."""
    if before is None:
        return math.inf
    a, b = now[name], before[name]
    if a == b:
        return 0.0
    return abs(a - b)


def _finite_or_inf(value: float) -> float:
    """NaN (inf − inf, 0 · inf after an overflow) becomes +inf: a diverged quantity, never NaN."""
    return math.inf if math.isnan(value) else float(value)
