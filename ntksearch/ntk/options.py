"""The settings of the NTK computations, declared once: their types, defaults, allowed values and meaning.

:class:`NTKOptions` (trace-moment estimators and λ_max) and :class:`LinearisedOptions` (linearised training)
are the defaults of :func:`ntksearch.ntk.ntk_metrics`, :func:`ntksearch.ntk.spectra.lambda_max`,
:func:`ntksearch.ntk.linearise_kernel` and :func:`ntksearch.ntk.linearised_metrics` (their signatures read
them from here), of every search, and of the config keys ``scoring.ntk`` and ``scoring.linearised`` (validated
and documented from the same fields, :mod:`ntksearch.settings`). The defaults aim at ranking: ±5% relative
standard error on the trace moments and a 1% change of the linearised quantities are far below the spread
between candidates; pass a smaller ``rtol`` for a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from ntksearch.settings import setting

__all__ = ["COMPILE_MODES", "METHODS", "CompileMode", "LinearisedOptions", "Method", "NTKOptions"]

Method = Literal["auto", "exact", "hutchinson", "hutch++", "forward", "reverse"]
METHODS: tuple[str, ...] = get_args(Method)
CompileMode = Literal["auto", "fast", "optimised"]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
_COMPILE_DOC = ("how the NTK programs compile (ntksearch.ntk.compile): fast, XLA's level 0 (about half the compile "
                "time, slower products); optimised, XLA's default; auto, fast unless the model has convolutions or "
                "its forward pass does at least 2^26 matrix-product flops (2^24 with a loop)")


@dataclass(frozen=True)
class NTKOptions:
    """How the NTK proxies are estimated (see :func:`ntksearch.ntk_metrics`); config key ``scoring.ntk``."""

    method: str = setting("auto", choices=METHODS, doc="trace estimator (auto: chosen per candidate from its "
                          "output and parameter counts)")
    rtol: float = setting(0.05, minimum=0, maximum=1, exclusive_minimum=True,
                          doc="stop once every estimate's relative standard error is below this")
    max_matvecs: int = setting(512, minimum=1, doc="budget of AD passes (JVPs + VJPs) per candidate")
    sketch_size: int | None = setting(None, minimum=1, doc="Hutch++ sketch columns (null: from the budget)")
    lanczos_iters: int = setting(20, minimum=1, doc="block-Lanczos steps of λ_max (ntk_lambda_max, "
                                 "ntk_condition, max_stable_lr)")
    lanczos_rtol: float = setting(1e-3, minimum=0, exclusive_minimum=True,
                                  doc="λ_max stops when its residual bound is below this, relative")
    compile_mode: str = setting("auto", choices=COMPILE_MODES, doc=_COMPILE_DOC)

    def estimator_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :func:`ntksearch.ntk_metrics` these options set."""
        return {"method": self.method, "rtol": self.rtol, "max_matvecs": self.max_matvecs,
                "sketch_size": self.sketch_size, "compile_mode": self.compile_mode}

    def spectrum_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :func:`ntksearch.ntk.spectra.lambda_max` these options set."""
        return {"max_iters": self.lanczos_iters, "rtol": self.lanczos_rtol, "compile_mode": self.compile_mode}


@dataclass(frozen=True)
class LinearisedOptions:
    """The setting of the linearised-training proxies (see :func:`ntksearch.linearised_metrics`); config key
    ``scoring.linearised``.

    ``learning_rate`` (a number or ``"auto"``), ``steps``, ``momentum`` and ``lr_fraction`` give the gradient
    descent the linearised network runs; with ``from_training`` a search replaces them per candidate by what
    its training hyperparameters say (:func:`ntksearch.proxies.linearised.options_for_training`). ``ridge`` sets
    ρ of the complexity, ``max_matvecs`` and ``rtol`` the Lanczos budget and tolerance, ``val_batch_size`` the
    held-out batch a search draws.
    """

    learning_rate: float | str = setting("auto", minimum=0, exclusive_minimum=True, choices=("auto",),
                                         doc="η of the linearised gradient descent; auto: lr_fraction · 2N/λ_max")
    steps: int = setting(100, minimum=1, doc="gradient-descent steps t")
    ridge: float = setting(1e-3, minimum=0, exclusive_minimum=True,
                           doc="ρ = ridge · tr K/(NC) of ntk_complexity")
    lr_fraction: float = setting(0.5, minimum=0, exclusive_minimum=True,
                                 doc="fraction of the stable step 2N/λ_max that learning_rate auto takes")
    momentum: float = setting(0.0, minimum=0, maximum=1, exclusive_maximum=True, doc="heavy-ball momentum")
    max_matvecs: int = setting(128, minimum=1, doc="Lanczos budget of K-products")
    rtol: float = setting(1e-2, minimum=0, maximum=1, doc="Lanczos stops when the quantities change by less")
    val_batch_size: int = setting(256, minimum=1, doc="held-out batch drawn from the validation split "
                                  "(class-balanced, at most the split)")
    from_training: bool = setting(True, doc="take each candidate's learning rate, momentum and steps from its "
                                  "training hyperparameters (sgd/momentum: η = lr/C)")
    compile_mode: str = setting("auto", choices=COMPILE_MODES, doc=_COMPILE_DOC)
    structured: bool = setting(True, doc="form K_AA and K_BA once from per-layer factors where the model allows "
                               "(dense layers; exact), instead of Lanczos products by AD passes")

    def setting_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`ntksearch.ntk.LinearisedKernel.metrics` these options set."""
        return {"learning_rate": self.learning_rate, "steps": self.steps, "ridge": self.ridge,
                "momentum": self.momentum, "lr_fraction": self.lr_fraction}

    def lanczos_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :func:`ntksearch.linearised_metrics` (and ``linearise_kernel``) these
        options set: the setting, the Lanczos budget and its tolerance."""
        return self.setting_arguments() | {"max_matvecs": self.max_matvecs, "rtol": self.rtol,
                                           "compile_mode": self.compile_mode, "structured": self.structured}
