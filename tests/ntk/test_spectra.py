"""Lanczos λ_max against the dense eigendecomposition."""

from __future__ import annotations

import jax
import pytest

from ntksearch.ntk import exact_ntk_stats
from ntksearch.ntk.spectra import lambda_max


def test_lambda_max_matches_dense(problem):
    exact = exact_ntk_stats(problem.apply_fn, problem.params, problem.x).lambda_max
    est = lambda_max(problem.apply_fn, problem.params, problem.x, key=jax.random.PRNGKey(0), rtol=1e-6,
                     max_iters=60)
    assert est.converged
    assert est.value <= exact * (1 + 1e-9)
    assert abs(est.value - exact) <= max(est.stderr, 1e-9 * exact)
    assert est.n_jvp == est.n_vjp == est.n_probes <= 60


def test_lambda_max_rejects_zero_iterations(problem):
    with pytest.raises(ValueError, match="max_iters"):
        lambda_max(problem.apply_fn, problem.params, problem.x, key=jax.random.PRNGKey(0), max_iters=0)
