"""Pinned outputs: the estimators and the default-option proxies give these values for these keys.

A refactoring must leave every estimate unchanged for a given key (same probes, same arithmetic), so searches
and the committed proxy tables stay reproducible. The values were recorded on a float64 CPU run; the tolerance
(10⁻¹⁰ relative) only absorbs summation-order differences between machines, far below any change of probes.
"""

from __future__ import annotations

import jax
import pytest

from ntksearch.ntk import ntk_metrics
from ntksearch.ntk.spectra import lambda_max
from ntksearch.proxies import ProxyInputs, compute_proxies
from tests.ntk.problems import make_mlp

RTOL = 1e-10

PINNED = {  # method: (tr K, ‖K‖_F, label alignment, n_jvp, n_vjp) at key 7, rtol 0.05, 300 passes
    "hutchinson": (1017.7757206102659, 250.95802265381124, 0.10365411998768052, 0, 299),
    "hutch++": (1020.3668392757323, 250.4769300175886, 0.10385320911671413, 110, 112),
    "forward": (1029.4972123178027, 245.4232378237394, 0.1059917276892556, 275, 2),
    "reverse": (986.046002289095, 235.85694701908733, 0.11029072207028967, 0, 88),
}

PINNED_PROXIES = {  # compute_proxies at the default NTKOptions and LinearisedOptions, key 5
    "ntk_trace": 15.949684493082135,
    "ntk_effective_rank": 16.614856518364604,
    "ntk_lambda_max": 155.86154334648035,
    "lin_train_loss": 0.02394095211022818,
    "lin_val_loss": 0.023940952110228595,
    "ntk_complexity": 0.2980954969175004,
}


@pytest.mark.parametrize("method", sorted(PINNED))
def test_estimates_are_pinned_for_a_key(method):
    p = make_mlp()
    est = ntk_metrics(p.apply_fn, p.params, p.x, p.y, key=jax.random.PRNGKey(7), method=method, rtol=0.05,
                      max_matvecs=300)
    trace, fro, align, n_jvp, n_vjp = PINNED[method]
    assert est["trace"].value == pytest.approx(trace, rel=RTOL)
    assert est["frobenius"].value == pytest.approx(fro, rel=RTOL)
    assert est["label_alignment"].value == pytest.approx(align, rel=RTOL)
    assert (est["trace"].n_jvp, est["trace"].n_vjp) == (n_jvp, n_vjp)


def test_lambda_max_is_pinned_for_a_key():
    p = make_mlp()
    assert lambda_max(p.apply_fn, p.params, p.x, key=jax.random.PRNGKey(3), max_iters=20).value == pytest.approx(
        155.8616792772728, rel=RTOL)


def test_default_option_proxies_are_pinned_for_a_key():
    p = make_mlp()
    inputs = ProxyInputs(p.apply_fn, p.params, p.x, p.y, jax.random.PRNGKey(5), x_val=p.x, y_val=p.y)
    got = compute_proxies(sorted(PINNED_PROXIES), inputs).values
    assert {name: got[name].value for name in PINNED_PROXIES} == pytest.approx(PINNED_PROXIES, rel=RTOL)
