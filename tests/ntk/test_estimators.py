"""Every estimator against the dense float64 NTK, with tolerances in the estimator's own standard error."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntksearch.ntk import METHODS, QUANTITIES, NonFiniteModelError, exact_ntk_stats, ntk_metrics
from ntksearch.ntk import kernel as kernel_module
from tests.ntk.problems import make_cnn, make_mlp, mlp_apply

RANDOMISED = ("hutchinson", "hutch++", "forward", "reverse")
Z_MAX = 4.0  # |estimate − truth| ≤ 4 standard errors: a false alarm once in ~15,000 checks


def _exact_values(problem) -> dict[str, float]:
    stats = exact_ntk_stats(problem.apply_fn, problem.params, problem.x, problem.y)
    return {q: getattr(stats, q) for q in QUANTITIES}


def _z(est, truth: float) -> float:
    return (est.value - truth) / est.stderr


@pytest.mark.parametrize("method", RANDOMISED)
def test_randomised_estimates_within_their_stderr(problem, method):
    truth = _exact_values(problem)
    est = ntk_metrics(problem.apply_fn, problem.params, problem.x, problem.y, key=jax.random.PRNGKey(1),
                      method=method, rtol=0.0, max_matvecs=400, sketch_size=6)
    assert set(est) == set(QUANTITIES)
    for name, e in est.items():
        assert e.method == method
        assert e.stderr > 0, name
        assert abs(_z(e, truth[name])) <= Z_MAX, (name, e, truth[name])
        assert e.matvecs <= 400


def test_exact_method_equals_dense(problem):
    truth = _exact_values(problem)
    est = ntk_metrics(problem.apply_fn, problem.params, problem.x, problem.y, key=jax.random.PRNGKey(0),
                      method="exact", max_matvecs=10_000)
    for name, e in est.items():
        assert e.stderr == 0.0 and e.converged
        np.testing.assert_allclose(e.value, truth[name], rtol=1e-10)
    assert est["trace"].matvecs == 2 * est["trace"].n_probes + 2  # A eᵢ for tr K², + the two label VJPs


def test_exact_costs_min_n_p_passes(problem):
    """The cheapest exact path: min(n, p) one-sided passes for tr K, as many again for tr K²."""
    from ntksearch.ntk import NTKOperator

    op = NTKOperator.create(problem.apply_fn, problem.params, problem.x)
    d = min(op.n, op.p)
    run = lambda **kw: ntk_metrics(problem.apply_fn, problem.params, problem.x, key=jax.random.PRNGKey(0),
                                   method="exact", max_matvecs=10_000, **kw)
    trace_only = run(quantities=("trace",))
    assert set(trace_only) == {"trace"}
    e = trace_only["trace"]
    assert e.n_probes == d and e.matvecs == d
    assert (e.n_vjp if op.n <= op.p else e.n_jvp) == d
    full = run()["frobenius"]
    assert full.n_jvp == full.n_vjp == d


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "forward"])
def test_standard_errors_are_calibrated(method):
    """Across 40 seeds the z-scores (estimate − truth)/stderr have mean ≈ 0 and spread ≈ 1."""
    prob = make_mlp(seed=3)
    truth = _exact_values(prob)
    zs = {q: [] for q in ("trace", "frobenius", "effective_rank")}
    for seed in range(40):
        est = ntk_metrics(prob.apply_fn, prob.params, prob.x, key=jax.random.PRNGKey(seed), method=method,
                          rtol=0.0, max_matvecs=160, sketch_size=4, block_size=4)
        for q in zs:
            zs[q].append(_z(est[q], truth[q]))
    for q, z in zs.items():
        z = np.asarray(z)
        # mean of 40 (approximately t-distributed) z-scores: standard error ≈ 0.17
        assert abs(z.mean()) < 0.6, (q, z.mean())
        assert 0.6 < z.std() < 1.6, (q, z.std())


def test_stderr_shrinks_as_inverse_sqrt_of_probes():
    prob = make_mlp(seed=5)
    ratios = []
    for seed in range(6):
        key = jax.random.PRNGKey(seed)
        small, large = (
            ntk_metrics(prob.apply_fn, prob.params, prob.x, key=key, method="hutchinson", rtol=0.0,
                        max_matvecs=m, block_size=4)["trace"]
            for m in (64, 1024)
        )
        assert large.n_probes == 16 * small.n_probes
        ratios.append(small.stderr / large.stderr)
    # 16× the probes ⇒ 4× smaller standard error (jackknife noise with 16 vs 256 blocks: ±30%)
    assert 2.8 < float(np.median(ratios)) < 5.6, ratios


def test_hutchpp_is_exact_once_the_sketch_covers_the_rank():
    prob = make_mlp(seed=2)
    # 4 distinct inputs, each repeated 4 times: rank K ≤ 4 inputs × 4 outputs = 16 < n = 64 ≤ p
    x = jnp.repeat(prob.x[:4], 4, axis=0)
    truth = exact_ntk_stats(prob.apply_fn, prob.params, x, prob.y)
    for q in (16, 20):
        est = ntk_metrics(prob.apply_fn, prob.params, x, prob.y, key=jax.random.PRNGKey(0), method="hutch++",
                          rtol=0.0, max_matvecs=200, sketch_size=q, block_size=4)
        for name, e in est.items():
            np.testing.assert_allclose(e.value, getattr(truth, name), rtol=1e-8, atol=1e-12)
            assert e.stderr <= 1e-8 * abs(e.value) + 1e-12
    short = ntk_metrics(prob.apply_fn, prob.params, x, key=jax.random.PRNGKey(0), method="hutch++", rtol=0.0,
                        max_matvecs=200, sketch_size=8, block_size=4)["trace"]
    assert short.stderr > 1e-6 * short.value  # a sketch below the rank leaves a random residual


def test_forward_and_reverse_agree(problem):
    kw = dict(key=jax.random.PRNGKey(4), rtol=0.0, max_matvecs=300, sketch_size=4)
    fwd = ntk_metrics(problem.apply_fn, problem.params, problem.x, method="forward", **kw)
    rev = ntk_metrics(problem.apply_fn, problem.params, problem.x, method="reverse", **kw)
    for q in ("trace", "frobenius", "effective_rank"):
        f, r = fwd[q], rev[q]
        assert abs(f.value - r.value) <= Z_MAX * math.hypot(f.stderr, r.stderr), q
    assert fwd["trace"].n_vjp == 0 and fwd["trace"].n_jvp > 0  # one AD mode only
    assert rev["trace"].n_jvp == 0 and rev["trace"].n_vjp > 0


def test_adaptive_mode_stops_at_rtol():
    prob = make_mlp(seed=1)
    est = ntk_metrics(prob.apply_fn, prob.params, prob.x, key=jax.random.PRNGKey(0), method="hutch++",
                      rtol=0.05, max_matvecs=4000, sketch_size=8, block_size=4)
    assert all(e.converged for e in est.values())
    assert all(e.rel_stderr <= 0.05 for e in est.values())
    assert est["trace"].matvecs < 4000
    tight = ntk_metrics(prob.apply_fn, prob.params, prob.x, key=jax.random.PRNGKey(0), method="hutchinson",
                        rtol=1e-6, max_matvecs=64, block_size=4)
    assert not tight["trace"].converged
    assert tight["trace"].matvecs <= 64


def test_reproducible_for_a_key():
    prob = make_mlp()
    run = lambda seed: ntk_metrics(prob.apply_fn, prob.params, prob.x, key=jax.random.PRNGKey(seed),
                                   method="hutchinson", rtol=0.0, max_matvecs=64)["trace"].value
    assert run(0) == run(0)
    assert run(0) != run(1)


def test_auto_picks_exact_when_cheap_and_hutchpp_otherwise():
    prob = make_mlp()  # n = 64, p = 868
    assert ntk_metrics(prob.apply_fn, prob.params, prob.x, key=jax.random.PRNGKey(0),
                       max_matvecs=1024)["trace"].method == "exact"
    assert ntk_metrics(prob.apply_fn, prob.params, prob.x, key=jax.random.PRNGKey(0),
                       max_matvecs=200)["trace"].method == "hutch++"


def test_without_labels_no_alignment():
    prob = make_mlp()
    est = ntk_metrics(prob.apply_fn, prob.params, prob.x, key=jax.random.PRNGKey(0))
    assert set(est) == {"trace", "frobenius", "effective_rank"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(max_matvecs=0), ValueError, "max_matvecs"),
        (dict(method="lanczos"), ValueError, "allowed: auto, exact"),
        (dict(method="hutchinson", max_matvecs=6), ValueError, "min_blocks"),
        (dict(method="exact", max_matvecs=10), ValueError, "exact NTK needs"),
        (dict(min_blocks=1), ValueError, "min_blocks"),
        (dict(method="hutchinson", block_size=1), ValueError, "block_size"),
        (dict(quantities=("trace", "label_alignment")), ValueError, "unavailable quantity"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    prob = make_mlp()
    with pytest.raises(error, match=match):
        ntk_metrics(prob.apply_fn, prob.params, prob.x, key=jax.random.PRNGKey(0), **kwargs)


def test_mismatched_targets_raise():
    prob = make_mlp()
    with pytest.raises(ValueError, match=r"y has shape \(16, 3\) but apply_fn"):
        ntk_metrics(prob.apply_fn, prob.params, prob.x, prob.y[:, :3], key=jax.random.PRNGKey(0))


def test_non_finite_output_raises():
    prob = make_mlp()
    nan_params = jax.tree_util.tree_map(lambda a: a.at[..., 0].set(jnp.nan), prob.params)
    with pytest.raises(NonFiniteModelError, match="non-finite"):
        ntk_metrics(prob.apply_fn, nan_params, prob.x, key=jax.random.PRNGKey(0))


def test_zero_kernel_gives_nan_ratios_not_crashes():
    prob = make_mlp()
    const = lambda p, x: jnp.zeros((x.shape[0], 2)) + 0.0 * p[-1]["b"][:2]  # ∂f/∂θ = 0
    est = ntk_metrics(const, prob.params, prob.x, key=jax.random.PRNGKey(0), method="hutchinson",
                      max_matvecs=64)
    assert est["trace"].value == 0.0 and est["frobenius"].value == 0.0
    assert math.isnan(est["effective_rank"].value)


@settings(max_examples=8, deadline=None)
@given(
    batch=st.integers(1, 5),
    width=st.integers(1, 6),
    outputs=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    method=st.sampled_from(METHODS),
)
def test_random_shapes(batch, width, outputs, seed, method):
    with jax.enable_x64(True):
        prob = make_mlp(seed=seed, batch=batch, sizes=(3, width, outputs))
        truth = _exact_values(prob)
        est = ntk_metrics(mlp_apply, prob.params, prob.x, prob.y, key=jax.random.PRNGKey(seed), method=method,
                          rtol=0.0, max_matvecs=256, block_size=2)
        for name, e in est.items():
            if not math.isfinite(truth[name]):
                continue
            tol = Z_MAX * e.stderr + 1e-8 * abs(truth[name]) + 1e-12
            assert abs(e.value - truth[name]) <= tol, (name, e, truth[name])


def _float32_scaled_mlp(scale: float):
    """make_mlp's MLP in float32 with every parameter multiplied by ``scale`` (3 layers: K grows like scale⁴)."""
    prob = make_mlp(seed=7)
    params = jax.tree_util.tree_map(lambda a: (scale * a).astype(jnp.float32), prob.params)
    return prob._replace(params=params, x=prob.x.astype(jnp.float32), y=prob.y.astype(jnp.float32))


@pytest.mark.parametrize("method", ["exact", "hutch++", "forward"])
def test_float32_kernel_whose_square_overflows_matches_float64(method):
    """‖K u‖² beyond float32's range (≈ 3.4e38) must not turn ‖K‖_F into inf and the ratios into 0."""
    prob = _float32_scaled_mlp(3e4)
    truth = exact_ntk_stats(prob.apply_fn, jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), prob.params),
                            prob.x.astype(jnp.float64), prob.y)
    assert truth.frobenius**2 > 1e40  # tr K² itself is not representable in float32
    est = ntk_metrics(prob.apply_fn, prob.params, prob.x, prob.y, key=jax.random.PRNGKey(3), method=method,
                      rtol=0.0, max_matvecs=400, sketch_size=6)
    for name, e in est.items():
        expected = getattr(truth, name)
        tol = Z_MAX * e.stderr + 1e-4 * abs(expected)  # float32 rounding on top of the estimator's own error
        assert math.isfinite(e.value) and abs(e.value - expected) <= tol, (name, e, expected)


def test_kernel_beyond_float32_range_raises_with_the_reason():
    prob = _float32_scaled_mlp(1e10)  # K entries ≈ 1e40: not representable in float32 at all
    with pytest.raises(NonFiniteModelError, match="float32"):
        ntk_metrics(prob.apply_fn, prob.params, prob.x, prob.y, key=jax.random.PRNGKey(0), method="hutch++",
                    max_matvecs=200)


@pytest.mark.parametrize("method", ["exact", "hutch++", "forward", "reverse"])
def test_dense_products_give_the_same_estimates_for_a_key(monkeypatch, method):
    """The CNN's products go through its dense Jacobian; with AD passes instead the same probes give the same
    values to rounding (the estimator and its distribution are unchanged)."""
    prob = make_cnn()
    run = lambda: ntk_metrics(prob.apply_fn, prob.params, prob.x, prob.y, key=jax.random.PRNGKey(4), method=method,
                              rtol=0.0, max_matvecs=300, sketch_size=6)
    dense = run()
    monkeypatch.setattr(kernel_module, "dense_point", lambda *args, **kwargs: None)
    passes = run()
    for name in dense:
        assert dense[name].matvecs == passes[name].matvecs
        np.testing.assert_allclose(dense[name].value, passes[name].value, rtol=1e-10)
        np.testing.assert_allclose(dense[name].stderr, passes[name].stderr, rtol=1e-8, atol=1e-14)


def test_auto_takes_exact_within_the_whole_budget_with_a_dense_jacobian(monkeypatch):
    prob = make_cnn()  # n = 36: exact needs 72 passes + 2 label VJPs
    run = lambda: ntk_metrics(prob.apply_fn, prob.params, prob.x, prob.y, key=jax.random.PRNGKey(0),
                              max_matvecs=100)["trace"].method
    assert run() == "exact"
    monkeypatch.setattr(kernel_module, "dense_point", lambda *args, **kwargs: None)
    assert run() == "hutch++"  # AD passes: exact only within half the budget
