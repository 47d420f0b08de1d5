"""NTK proxies: trace, Frobenius norm, effective rank, label alignment, λ_max, conditioning, stable step.

All from the matrix-free core (:mod:`ntksearch.ntk`), on the candidate's NTK state (``state_fn``, the logits
for every family except an RNN with a trajectory readout). With n the state size (batch × outputs):

* ``ntk_trace`` = tr(K)/n, the mean eigenvalue (dimension-free across batch and state sizes);
* ``ntk_frobenius`` = ‖K‖_F/n, the root-mean-square kernel entry;
* ``ntk_effective_rank`` = tr(K)²/‖K‖²_F ∈ [1, rank K];
* ``ntk_label_alignment`` = yᵀKy / (‖K‖_F‖y‖²) for one-hot y on the logits' NTK, and its ``_centred`` variant
  (y minus its batch mean, which removes the shared "mean logit" direction);
* ``ntk_lambda_max`` = λ_max(K) (block Lanczos), ``ntk_condition`` = λ_max / (tr K / n) ∈ [1, n], how far the top
  eigenvalue stands above the mean (TE-NAS uses the NTK condition number in the same spirit);
* ``max_stable_lr`` = 2NC/λ_max of the logits' NTK: the largest stable gradient-descent step for softmax
  cross-entropy at initialisation (:func:`ntksearch.train.stable_learning_rate`).
Standard errors come from the estimators (the jackknife over probe blocks; the Ritz residual for λ_max).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np

from ntksearch.ntk import ntk_metrics
from ntksearch.ntk.spectra import lambda_max
from ntksearch.proxies.registry import Proxy, ProxyInputs, ProxyValue, register_group
from ntksearch.train.stability import stable_learning_rate

__all__: list[str] = []


def _state_fn(inputs: ProxyInputs):
    return inputs.state_fn if inputs.state_fn is not None else inputs.apply_fn


def _state_size(fn, inputs: ProxyInputs) -> int:
    return int(np.prod(jax.eval_shape(fn, inputs.params, inputs.x).shape))


def ntk_group(inputs: ProxyInputs, done: Mapping[str, ProxyValue]) -> dict[str, ProxyValue]:
    del done
    kw = inputs.ntk.estimator_arguments()
    state_fn = _state_fn(inputs)
    on_logits = state_fn == inputs.apply_fn
    est = ntk_metrics(state_fn, inputs.params, inputs.x, inputs.y if on_logits else None,
                      key=jax.random.fold_in(inputs.key, 1), **kw)
    if not on_logits:
        est |= ntk_metrics(inputs.apply_fn, inputs.params, inputs.x, inputs.y, key=jax.random.fold_in(inputs.key, 2),
                           quantities=("label_alignment", "label_alignment_centred"), **kw)
    n = _state_size(state_fn, inputs)
    scale = {"trace": n, "frobenius": n}
    return {f"ntk_{q}": ProxyValue(e.value / scale.get(q, 1), e.stderr / scale.get(q, 1)) for q, e in est.items()}


def spectrum_group(inputs: ProxyInputs, done: Mapping[str, ProxyValue]) -> dict[str, ProxyValue]:
    state_fn = _state_fn(inputs)
    run = lambda fn, i: lambda_max(fn, inputs.params, inputs.x, key=jax.random.fold_in(inputs.key, i),
                                   **inputs.ntk.spectrum_arguments())
    lam = run(state_fn, 3)
    lam_logits = lam if state_fn == inputs.apply_fn else run(inputs.apply_fn, 4)
    mean_eig = done["ntk_trace"]
    cond = lam.value / mean_eig.value
    batch, n_classes = inputs.y.shape[0], inputs.y.shape[-1]
    lr = stable_learning_rate(lam_logits.value, n=batch, n_classes=n_classes) if lam_logits.value > 0 else np.inf
    return {
        "ntk_lambda_max": ProxyValue(lam.value, lam.stderr),
        "ntk_condition": ProxyValue(cond, cond * float(np.hypot(mean_eig.stderr / mean_eig.value,
                                                                 lam.stderr / lam.value))),
        "max_stable_lr": ProxyValue(lr, lr * lam_logits.stderr / lam_logits.value if np.isfinite(lr) else np.inf),
    }


register_group("ntk", ntk_group, [
    Proxy("ntk_trace", "ntk", "mean NTK eigenvalue tr(K)/n", +1),
    Proxy("ntk_frobenius", "ntk", "‖K‖_F / n, root-mean-square NTK entry", +1),
    Proxy("ntk_effective_rank", "ntk", "effective rank tr(K)²/‖K‖²_F", +1),
    Proxy("ntk_label_alignment", "ntk", "label alignment yᵀKy/(‖K‖_F‖y‖²), one-hot y", +1),
    Proxy("ntk_label_alignment_centred", "ntk", "label alignment with batch-centred y", +1),
])
register_group("spectrum", spectrum_group, [
    Proxy("ntk_lambda_max", "spectrum", "largest NTK eigenvalue (block Lanczos)", 0),
    Proxy("ntk_condition", "spectrum", "λ_max / mean eigenvalue, in [1, n]", -1),
    Proxy("max_stable_lr", "spectrum", "largest stable GD learning rate 2NC/λ_max (cross-entropy, init)", 0),
], after=("ntk",))
