"""Block-Krylov λ_max against the dense eigendecomposition, and the kernel it shares with the estimators."""

from __future__ import annotations

import jax
import pytest

from ntksearch.ntk import NTKOperator, exact_ntk_stats, ntk_metrics
from ntksearch.ntk.estimators import probe_products
from ntksearch.ntk.spectra import lambda_max


@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_lambda_max_matches_dense(problem, block_size):
    exact = exact_ntk_stats(problem.apply_fn, problem.params, problem.x).lambda_max
    est = lambda_max(problem.apply_fn, problem.params, problem.x, key=jax.random.PRNGKey(0), rtol=1e-6,
                     max_iters=60, block_size=block_size)
    assert est.converged and est.method == "block-krylov"
    assert est.value <= exact * (1 + 1e-9)  # a Ritz value never exceeds λ_max
    assert abs(est.value - exact) <= max(est.stderr, 1e-9 * exact)  # the residual bounds the error
    assert est.n_jvp == est.n_vjp == est.n_probes <= 60 * block_size


def test_lambda_max_with_the_whole_space_is_exact(problem):
    """max_iters large enough for the basis to span all d directions: θ is λ_max to rounding."""
    exact = exact_ntk_stats(problem.apply_fn, problem.params, problem.x).lambda_max
    est = lambda_max(problem.apply_fn, problem.params, problem.x, key=jax.random.PRNGKey(1), rtol=0.0,
                     max_iters=10_000, block_size=16)
    op = NTKOperator.create(problem.apply_fn, problem.params, problem.x)
    assert est.n_probes == min(op.n, op.p)
    assert est.value == pytest.approx(exact, rel=1e-9)


def test_lambda_max_reuses_the_estimators_compiled_kernel(problem):
    """After hutch++ at its default block of 16, λ_max compiles nothing new (the CPU search's main cost)."""
    ntk_metrics(problem.apply_fn, problem.params, problem.x, key=jax.random.PRNGKey(0), method="hutch++",
                max_matvecs=512)
    before = probe_products._cache_size()
    lambda_max(problem.apply_fn, problem.params, problem.x, key=jax.random.PRNGKey(0))
    assert probe_products._cache_size() == before


@pytest.mark.parametrize("kwargs", [{"max_iters": 0}, {"block_size": 0}])
def test_lambda_max_rejects_bad_sizes(problem, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        lambda_max(problem.apply_fn, problem.params, problem.x, key=jax.random.PRNGKey(0), **kwargs)
