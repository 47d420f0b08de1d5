"""Proxy registry, NTK proxies and baselines against hand computations on tiny models."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntksearch.ntk import exact_ntk_stats
from ntksearch.proxies import (
    DEFAULT_SCORE,
    GROUPS,
    PROXIES,
    LinearScore,
    NTKOptions,
    ProxyInputs,
    ScoreTerm,
    compute_proxies,
    non_finite,
    score,
)
from ntksearch.proxies.registry import ProxyValue
from ntksearch.train import stable_learning_rate


def _two_layer(params, x):
    return jnp.tanh(x @ params["w1"]) @ params["w2"]


def _linear2(params, x):
    return x @ params["w1"] @ params["w2"]


@pytest.fixture
def tiny():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"w1": jax.random.normal(k1, (5, 7)) / 2, "w2": jax.random.normal(k2, (7, 3)) / 3}
    x = jax.random.normal(k3, (6, 5))
    y = jax.nn.one_hot(jnp.arange(6) % 3, 3)
    return params, x, y


def _inputs(apply_fn, params, x, y, **kw):
    return ProxyInputs(apply_fn, params, x, y, jax.random.PRNGKey(0), ntk=NTKOptions(max_matvecs=4096), **kw)


def test_ntk_proxies_match_the_dense_kernel(tiny):
    params, x, y = tiny
    res = compute_proxies(["ntk_trace", "ntk_frobenius", "ntk_effective_rank", "ntk_label_alignment",
                           "ntk_label_alignment_centred", "ntk_lambda_max", "ntk_condition", "max_stable_lr"],
                          _inputs(_two_layer, params, x, y))
    v = {k: p.value for k, p in res.values.items()}
    exact = exact_ntk_stats(_two_layer, params, x, y)
    n = y.size
    np.testing.assert_allclose(v["ntk_trace"], exact.trace / n, rtol=1e-5)
    np.testing.assert_allclose(v["ntk_frobenius"], exact.frobenius / n, rtol=1e-5)
    np.testing.assert_allclose(v["ntk_effective_rank"], exact.effective_rank, rtol=1e-5)
    np.testing.assert_allclose(v["ntk_label_alignment"], exact.label_alignment, rtol=1e-5)
    np.testing.assert_allclose(v["ntk_label_alignment_centred"], exact.label_alignment_centred, rtol=1e-4)
    np.testing.assert_allclose(v["ntk_lambda_max"], exact.lambda_max, rtol=1e-4)
    np.testing.assert_allclose(v["ntk_condition"], exact.lambda_max * n / exact.trace, rtol=1e-4)
    np.testing.assert_allclose(v["max_stable_lr"], stable_learning_rate(exact.lambda_max, n=6, n_classes=3),
                               rtol=1e-4)
    assert set(res.seconds) == {"ntk", "spectrum"}


def test_ntk_proxies_of_a_float32_mlp_with_init_scale_30_match_float64():
    """An MLP whose float32 forward pass is finite but whose tr K² exceeds float32's range: the NTK proxies
    equal the dense float64 values (they were inf and 0 when squares were formed in float32)."""
    from ntksearch.data import load_dataset, scoring_batch
    from ntksearch.models import build_model

    digits = load_dataset("digits")
    x, y = scoring_batch(digits, 32, seed=0)
    built = build_model("mlp", {"depth": 6, "width": 128, "init_scale": 30.0}, input_shape=digits.input_shape,
                        n_classes=10, key=jax.random.key(0))
    names = ["ntk_trace", "ntk_frobenius", "ntk_effective_rank", "ntk_label_alignment", "ntk_label_alignment_centred"]
    inputs = ProxyInputs(built.apply_fn, built.params, x, y, jax.random.PRNGKey(0))  # default NTKOptions: Hutch++
    values = compute_proxies(names, inputs).values
    with jax.enable_x64(True):
        params64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), built.params)
        exact = exact_ntk_stats(built.apply_fn, params64, jnp.asarray(x, jnp.float64), y)
    assert exact.frobenius**2 > 1e39  # tr K² is beyond float32 (3.4e38)
    n = y.size
    for name, expected in (("ntk_trace", exact.trace / n), ("ntk_frobenius", exact.frobenius / n),
                           ("ntk_effective_rank", exact.effective_rank), ("ntk_label_alignment", exact.label_alignment),
                           ("ntk_label_alignment_centred", exact.label_alignment_centred)):
        got = values[name]
        assert abs(got.value - expected) <= 4 * got.stderr + 1e-4 * abs(expected), (name, got, expected)


def test_gradient_proxies_match_a_hand_gradient(tiny):
    params, x, y = tiny

    def loss(p):
        logits = _two_layer(p, x)
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits), axis=1))

    g = jax.grad(loss)(params)
    res = compute_proxies(["grad_norm", "snip"], _inputs(_two_layer, params, x, y)).values
    np.testing.assert_allclose(res["grad_norm"].value,
                               float(jnp.linalg.norm(g["w1"]) + jnp.linalg.norm(g["w2"])), rtol=1e-5)
    saliency = sum(float(jnp.sum(jnp.abs(g[k] * params[k]))) for k in ("w1", "w2"))
    np.testing.assert_allclose(res["snip"].value, saliency, rtol=1e-5)


def test_synflow_of_a_deep_linear_net_is_depth_times_the_path_sum(tiny):
    # f = x W1 W2 is 2-homogeneous in θ, so Σ θ ∂R/∂θ = 2 R with R = 𝟙ᵀ|W1||W2|𝟙
    params, x, y = tiny
    res = compute_proxies(["synflow"], _inputs(_linear2, params, x, y)).values
    path_sum = float(jnp.sum(jnp.abs(params["w1"]) @ jnp.abs(params["w2"])))
    np.testing.assert_allclose(res["synflow"].value, math.log(2 * path_sum), rtol=1e-6)


def test_naswot_is_the_log_determinant_of_the_agreement_kernel(tiny):
    params, x, y = tiny
    features = lambda p, xb: [xb @ p["w1"]]
    res = compute_proxies(["naswot"], _inputs(_two_layer, params, x, y, features_fn=features)).values
    codes = np.asarray(x @ params["w1"] > 0, dtype=np.float64)
    agree = codes @ codes.T + (1 - codes) @ (1 - codes).T
    np.testing.assert_allclose(res["naswot"].value, np.linalg.slogdet(agree)[1], rtol=1e-5)


def test_size_proxies(tiny):
    params, x, y = tiny
    res = compute_proxies(["n_params", "flops"], _inputs(_linear2, params, x, y)).values
    assert res["n_params"].value == 5 * 7 + 7 * 3
    assert res["flops"].value == 2 * (5 * 7 + 7 * 3)  # two matmuls of one example


def test_groups_run_once_and_dependencies_are_pulled_in(tiny, monkeypatch):
    params, x, y = tiny
    calls = []
    original = GROUPS["ntk"]
    monkeypatch.setitem(GROUPS, "ntk", type(original)(lambda i, d: calls.append(1) or original.fn(i, d),
                                                       original.after))
    res = compute_proxies(["ntk_condition", "ntk_trace", "ntk_effective_rank"], _inputs(_two_layer, params, x, y))
    assert len(calls) == 1
    assert list(res.values) == ["ntk_condition", "ntk_trace", "ntk_effective_rank"]


def test_registry_errors(tiny):
    params, x, y = tiny
    with pytest.raises(KeyError, match=r"registered: .*ntk_trace"):
        compute_proxies(["nope"], _inputs(_two_layer, params, x, y))
    with pytest.raises(ValueError, match="needs features_fn"):
        compute_proxies(["naswot"], _inputs(_two_layer, params, x, y))
    assert all(p.sign in (-1, 0, 1) for p in PROXIES.values())


def test_non_finite_lists_bad_values():
    assert non_finite({"a": ProxyValue(1.0), "b": ProxyValue(float("nan")), "c": ProxyValue(-math.inf)}) == ["b", "c"]


def test_linear_score_formula():
    s = LinearScore((ScoreTerm("a", "log", 1.0, 2.0, 3.0), ScoreTerm("b", "identity", 0.5, 0.25, -1.0)))
    assert s.proxies == ("a", "b")
    assert s({"a": math.e**3, "b": 1.0}) == pytest.approx(3.0 * (3 - 1) / 2 - (1.0 - 0.5) / 0.25)


def test_default_score_needs_only_apply_fn(tiny):
    params, x, y = tiny
    assert all(not PROXIES[name].requires for name in DEFAULT_SCORE.proxies)
    value = score(_two_layer, params, x, y, key=jax.random.PRNGKey(0))
    assert math.isfinite(value)


def test_fit_linear_score_vote_and_ridge():
    from ntksearch.proxies import fit_linear_score

    rng = np.random.default_rng(0)
    good = rng.lognormal(size=200)  # accuracy increases with log(good), decreases with bad
    bad = rng.normal(size=200)
    accuracy = np.log(good) - 0.5 * bad + rng.normal(scale=0.1, size=200)
    values = {"a": good, "b": bad}
    terms = [("a", "log"), ("b", "identity")]
    vote = fit_linear_score(values, accuracy, terms, method="vote")
    assert [t.weight for t in vote.terms] == [1.0, -1.0]
    assert vote.terms[0].mean == pytest.approx(np.mean(np.log(good)))
    ridge = fit_linear_score(values, accuracy, terms, method="ridge", alpha=1e-3)
    w_a, w_b = (t.weight for t in ridge.terms)
    assert w_a > 0 > w_b and abs(w_a / w_b) == pytest.approx(2 * np.std(np.log(good)) / np.std(bad), rel=0.15)
    scores = [ridge({"a": g, "b": b}) for g, b in zip(good, bad, strict=True)]
    assert np.corrcoef(np.argsort(np.argsort(scores)), np.argsort(np.argsort(accuracy)))[0, 1] > 0.95
    with pytest.raises(ValueError, match="allowed: vote, ridge"):
        fit_linear_score(values, accuracy, terms, method="lasso")
