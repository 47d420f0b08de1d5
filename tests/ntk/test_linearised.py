"""Linearised training (Lanczos on K_AA) against the dense computation: eigendecomposition of K_AA, dense K_BA."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from ntksearch.ntk import linearise_kernel, linearised_metrics, ntk_metrics
from ntksearch.ntk import structured as structured_module
from ntksearch.ntk.estimators import probe_products
from tests.ntk.linearised_reference import Dense, dense, dense_metrics, held_out, simulate
from tests.ntk.problems import CLASSIFIERS, Problem, make_cnn, make_mlp

KEY = jax.random.PRNGKey(0)
QUANTITIES = ("train_loss", "val_loss", "val_accuracy", "complexity")
PATHS = {"products": False, "structured": True}  # the ``structured`` argument: AD products or K from factors


@pytest.fixture(params=sorted(PATHS))
def structured(request: pytest.FixtureRequest) -> bool:
    return PATHS[request.param]


@pytest.fixture(params=sorted(CLASSIFIERS), scope="module")
def case(request: pytest.FixtureRequest) -> tuple[Problem, jax.Array, np.ndarray, Dense]:
    with jax.enable_x64(True):
        problem = CLASSIFIERS[request.param]()
        x_val, labels = held_out(problem)
        return problem, x_val, labels, dense(problem, x_val, labels)


def test_exact_once_the_basis_spans_the_space(case, structured):
    """With k = NC Lanczos steps every setting of one decomposition matches the dense computation to 1e-6."""
    problem, x_val, y_val, d = case
    n = d.residual.size
    kernel = linearise_kernel(problem.apply_fn, problem.params, problem.x, problem.y, x_val, y_val, key=KEY,
                              max_matvecs=n, rtol=0.0, structured=structured)
    lam_max = np.linalg.eigvalsh(d.kernel)[-1]
    assert kernel.lanczos_steps == n
    assert kernel.trace == pytest.approx(np.trace(d.kernel), rel=1e-10) and kernel.trace_stderr == 0.0
    assert kernel.lambda_max == pytest.approx(lam_max, rel=1e-10)
    n_ex = problem.y.shape[0]
    for rate, steps, ridge in [("auto", 100, 1e-3), (0.3 * n_ex / lam_max, 7, 0.1), (1.9 * n_ex / lam_max, 1000, 1.0)]:
        got = kernel.metrics(rate, steps, ridge)
        eta = n_ex / lam_max if rate == "auto" else rate
        assert got.learning_rate == pytest.approx(eta, rel=1e-10) and not got.diverged
        want = dense_metrics(d, eta, steps, ridge)
        for name in QUANTITIES:
            assert got[name].value == pytest.approx(want[name], rel=1e-6, abs=1e-12), (name, rate, steps, ridge)


def test_default_steps_are_within_the_reported_error(case, structured):
    problem, x_val, y_val, d = case
    got = linearised_metrics(problem.apply_fn, problem.params, problem.x, problem.y, x_val, y_val, key=KEY,
                             structured=structured)
    lam_max = np.linalg.eigvalsh(d.kernel)[-1]
    want = dense_metrics(d, problem.y.shape[0] / lam_max, 100, 1e-3)
    assert got.lanczos_steps < d.residual.size  # stopped early: the indicators are what is being tested
    assert set(got) == set(QUANTITIES)
    for name in QUANTITIES:
        est = got[name]
        assert est.converged and est.method == "lanczos" and est.n_probes == got.lanczos_steps
        assert abs(est.value - want[name]) <= est.stderr + 1e-10 * abs(want[name]), name


def test_momentum_matches_heavy_ball_gradient_descent(case):
    problem, x_val, y_val, d = case
    kernel = linearise_kernel(problem.apply_fn, problem.params, problem.x, problem.y, x_val, y_val, key=KEY,
                              max_matvecs=d.residual.size, rtol=0.0)
    eta = 0.4 * problem.y.shape[0] / kernel.lambda_max
    for momentum, steps in [(0.0, 25), (0.9, 40), (0.5, 3)]:
        got = kernel.metrics(eta, steps, momentum=momentum)
        train, val = simulate(d, eta, steps, momentum)
        assert got["train_loss"].value == pytest.approx(train, rel=1e-8)
        assert got["val_loss"].value == pytest.approx(val, rel=1e-8)
    reference = dense_metrics(d, eta, 25, 1e-3)  # the dense reference itself, against the step-by-step run
    assert (reference["train_loss"], reference["val_loss"]) == pytest.approx(simulate(d, eta, 25, 0.0), rel=1e-8)


def test_divergence_above_the_stable_rate(case):
    problem, x_val, y_val, d = case
    kernel = linearise_kernel(problem.apply_fn, problem.params, problem.x, problem.y, x_val, y_val, key=KEY)
    n_ex, n_classes = problem.y.shape
    stable = 2 * n_ex / kernel.lambda_max
    initial = float(d.residual @ d.residual) / (2 * n_ex)
    below = kernel.metrics(0.99 * stable, 200)
    assert not below.diverged and below["train_loss"].value < initial
    assert kernel.metrics(1.01 * stable, 200).diverged
    for got in (kernel.metrics(1.1 * stable, 200), kernel.metrics("auto", 200, lr_fraction=1.5),
                kernel.metrics(1.1 * stable * 1.9, 200, momentum=0.9)):  # heavy ball: stable below (1 + β)·2N/λ
        assert got.diverged
        assert got["val_accuracy"].value == 1 / n_classes
        assert got["train_loss"].value > 1e3 * initial
        assert not any(math.isnan(e.value) or math.isnan(e.stderr) for e in got.values())
    overflow = kernel.metrics(3 * stable, 100_000)  # (1 − ηλ/N)^2t overflows float64
    assert overflow.diverged and overflow["train_loss"].value == math.inf and overflow["val_loss"].value == math.inf
    assert not any(math.isnan(e.value) or math.isnan(e.stderr) for e in overflow.values())


def test_a_rank_deficient_kernel_is_spanned_through_restarts():
    """p < NC: Lanczos from r₀ meets an invariant subspace; restarts carry the basis on to all of R^{NC}."""
    with jax.enable_x64(True):
        problem = make_mlp(sizes=(3, 2, 4), batch=16)
        x_val, labels = held_out(problem)
        d = dense(problem, x_val, labels)
        assert np.linalg.matrix_rank(d.kernel) < d.residual.size
        kernel = linearise_kernel(problem.apply_fn, problem.params, problem.x, problem.y, x_val, labels, key=KEY,
                                  max_matvecs=1000, rtol=0.0)
    assert kernel.lanczos_steps == d.residual.size
    eta = 0.5 * 16 / kernel.lambda_max
    got = kernel.metrics(eta, 60)
    train, val = simulate(d, eta, 60, 0.0)
    assert got["train_loss"].value == pytest.approx(train, rel=1e-8)
    assert got["val_loss"].value == pytest.approx(val, rel=1e-8)
    assert got["complexity"].value == pytest.approx(dense_metrics(d, eta, 60, 1e-3)["complexity"], rel=1e-8)


def test_the_trace_estimate_is_within_its_standard_error():
    """Stopped early, tr K_AA comes from deflated Rademacher probes: within 4 standard errors, for 4 keys."""
    with jax.enable_x64(True):
        problem = make_mlp(batch=32)
        exact = np.trace(dense(problem, problem.x, np.zeros(32, int)).kernel)
        for seed in range(4):
            kernel = linearise_kernel(problem.apply_fn, problem.params, problem.x, problem.y,
                                      key=jax.random.PRNGKey(seed), max_matvecs=20, rtol=0.0)
            assert 0 < kernel.trace_stderr < 0.05 * exact
            assert abs(kernel.trace - exact) <= 4 * kernel.trace_stderr


def test_without_a_held_out_batch_and_the_pass_count():
    with jax.enable_x64(True):
        problem = make_mlp()
        run = lambda x_val, y_val, structured: linearised_metrics(
            problem.apply_fn, problem.params, problem.x, problem.y, x_val, y_val, key=KEY, max_matvecs=10, rtol=0.0,
            block_size=3, structured=structured)
        got, held = run(None, None, False), run(problem.x, np.arange(16) % 4, False)
        factored, factored_held = run(None, None, True), run(problem.x, np.arange(16) % 4, True)
    assert set(got) == {"train_loss", "complexity"}
    assert got.lanczos_steps == 10
    est = got["train_loss"]
    assert est.n_vjp == est.n_jvp == 3 * 11  # 11 calls of 3 rows: the first one holds trace probes only
    assert held["val_loss"].n_jvp == 3 * 11 + 10 and held["val_loss"].n_vjp == 3 * 11  # + one JVP on B per vector
    assert held["train_loss"].value == got["train_loss"].value  # B does not change what A computes
    assert factored.lanczos_steps == 10  # the same Lanczos run on K formed once: 4 outputs, per batch 4 VJPs
    assert (factored["train_loss"].n_jvp, factored["train_loss"].n_vjp) == (0, 4)
    assert (factored_held["val_loss"].n_jvp, factored_held["val_loss"].n_vjp) == (0, 8)
    for name in got:
        assert factored[name].value == pytest.approx(got[name].value, rel=1e-9)
        assert factored_held[name].value == pytest.approx(held[name].value, rel=1e-9)


def test_a_dense_jacobian_forms_k_once_without_a_held_out_batch(monkeypatch):
    """The CNN's products go through its dense per-example Jacobian: with the per-layer factors declined (no room
    for the convolution rows), K_AA = J Jᵀ is formed once (no JVP, C per-example VJPs), with the values of the
    Lanczos run on products through J; with a held-out batch the products through J stay."""
    monkeypatch.setattr(structured_module, "REST_MAX_ENTRIES", 0)
    with jax.enable_x64(True):
        problem = make_cnn()
        y_val = np.arange(problem.x.shape[0]) % problem.y.shape[1]
        run = lambda x_val, y, structured: linearised_metrics(
            problem.apply_fn, problem.params, problem.x, problem.y, x_val, y, key=KEY, max_matvecs=12, rtol=0.0,
            structured=structured)
        products, formed = run(None, None, False), run(None, None, True)
        held = run(problem.x, y_val, True)
    assert (formed["train_loss"].n_jvp, formed["train_loss"].n_vjp) == (0, problem.y.shape[1])
    assert products["train_loss"].n_jvp > 0 and held["val_loss"].n_jvp > 0
    assert formed.lanczos_steps == products.lanczos_steps == 12
    for name in formed:
        assert formed[name].value == pytest.approx(products[name].value, rel=1e-9)
        assert held[name].value == pytest.approx(products[name].value, rel=1e-9)


def test_a_zero_residual_gives_zero_losses():
    with jax.enable_x64(True):
        problem = make_mlp()
        fitted = problem.apply_fn(problem.params, problem.x)  # targets equal to the outputs: r₀ = 0
        got = linearised_metrics(problem.apply_fn, problem.params, problem.x, fitted, None, None, key=KEY)
    assert got["train_loss"].value == 0.0 and got["complexity"].value == 0.0 and got.lambda_max > 0


def test_block_16_reuses_the_estimators_compiled_kernel():
    with jax.enable_x64(True):
        problem = make_mlp()
        ntk_metrics(problem.apply_fn, problem.params, problem.x, key=KEY, method="hutch++", max_matvecs=512)
        before = probe_products._cache_size()
        linearised_metrics(problem.apply_fn, problem.params, problem.x, problem.y, None, None, key=KEY,
                           block_size=16, structured=False)
        assert probe_products._cache_size() == before


@pytest.mark.parametrize(("change", "match"), [
    ({"x_val": np.zeros((4, 7))}, "x_val examples have shape"),
    ({"y_val": np.zeros(4, int)}, "y_val must be integer labels"),
    ({"y_val": np.full(16, 9)}, "y_val must be integer labels"),
    ({"y_val": None}, "both x_val and y_val"),
    ({"y_train": np.zeros((16, 3))}, "y_train has shape"),
    ({"steps": 0}, "steps must be a positive integer"),
    ({"steps": 2.5}, "steps must be a positive integer"),
    ({"learning_rate": 0.0}, "learning_rate must be a positive number"),
    ({"learning_rate": -1e-3}, "learning_rate must be a positive number"),
    ({"learning_rate": "fast"}, "learning_rate must be a positive number or 'auto'"),
    ({"ridge": 0.0}, "ridge must be a positive number"),
    ({"momentum": 1.0}, "momentum must be a number in"),
    ({"max_matvecs": 0}, "max_matvecs must be a positive number"),
    ({"block_size": 1}, "block_size must be ≥ 2"),
])
def test_bad_inputs_raise_clear_errors(change, match):
    with jax.enable_x64(True):
        problem = make_mlp()
        args = {"x_val": problem.x, "y_val": np.arange(16) % 4, "y_train": problem.y} | change
        with pytest.raises(ValueError, match=match):
            linearised_metrics(problem.apply_fn, problem.params, problem.x, args.pop("y_train"), args.pop("x_val"),
                               args.pop("y_val"), key=KEY, **args)


def test_a_model_without_class_logits_is_rejected():
    with jax.enable_x64(True):
        problem = CLASSIFIERS["rnn"]()
        trajectory = lambda params, x: problem.apply_fn(params, x)[:, None, :]
        with pytest.raises(ValueError, match=r"must return logits of shape \(N, C\)"):
            linearised_metrics(trajectory, problem.params, problem.x, problem.y, None, None, key=KEY)


def test_bad_settings_of_a_decomposition_raise():
    with jax.enable_x64(True):
        problem = make_mlp()
        kernel = linearise_kernel(problem.apply_fn, problem.params, problem.x, problem.y, key=KEY, max_matvecs=5)
    with pytest.raises(ValueError, match="steps"):
        kernel.metrics(steps=-3)
    with pytest.raises(ValueError, match="lr_fraction"):
        kernel.metrics(lr_fraction=0.0)
