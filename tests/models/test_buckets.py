"""Shape buckets: padded candidates give the stand-alone proxies (float64, 1e-10), share compiled programs."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntksearch.models import build_model
from ntksearch.models.buckets import BucketGrid, PaddedProgram
from ntksearch.models.padded import PADDERS, bucket_candidate
from ntksearch.proxies import PROXIES, LinearisedOptions, NTKOptions, ProxyInputs, compute_proxies
from ntksearch.search.bucketed import PADDED_GROUPS, plan_scoring

SHAPE = (8, 8, 1)
N_CLASSES = 3
RTOL = 1e-10
PER_LAYER = BucketGrid(widths=(8, 16, 32, 64))
UNIFORM = BucketGrid(widths=(8, 16, 32, 64), depths=(2, 4), uniform=True)
MENUS = (("activation", ("relu", "gelu", "tanh", "swish")), ("norm", ("none", "layer", "batch")))

# every padded code path of each family: norms, activations, identity and projected skips, bypassed layers
CASES = {
    "mlp": [
        {"depth": 3, "width": [12, 12, 20], "norm": "layer", "residual": True, "activation": "gelu"},
        {"depth": 2, "width": [64, 9], "norm": "batch", "residual": True, "activation": "tanh"},
        {"depth": 1, "width": [33], "norm": "none", "residual": False, "activation": "swish",
         "init": "normal", "init_scale": 1.7},
    ],
    "rnn": [
        {"cell": "gru", "layers": 2, "hidden": [20, 33], "bidirectional": True},
        {"cell": "lstm", "layers": 1, "hidden": [17], "init": "xavier_uniform"},
        {"cell": "tanh", "layers": 2, "hidden": [16, 9], "init_scale": 0.7},
    ],
}
SAME_BUCKET = {"mlp": {"width": [10, 10, 17]}, "rnn": {"hidden": [25, 40]}}  # as CASES[family][0] per layer
GRIDS = {"per_layer": PER_LAYER, "uniform": UNIFORM, "menus": BucketGrid(widths=(8, 16, 32, 64), menus=MENUS)}
# the few-buckets grid of a search (one width, residual skips chosen at run time): every mlp case
RESIDUAL_MENU = BucketGrid(widths=(64,), depths=(2, 4), uniform=True, menus=(*MENUS, ("residual", (False, True))))


def _build(family: str, arch: dict, seed: int = 0):
    return build_model(family, arch, input_shape=SHAPE, n_classes=N_CLASSES, key=jax.random.key(seed))


def _as64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def _inputs(built, x, y, x_val, y_val) -> ProxyInputs:
    return ProxyInputs(built.apply_fn, _as64(built.params), x, y, jax.random.key(3), state_fn=built.state_fn,
                       features_fn=built.features_fn, probe_fn=built.probe_fn, flops=built.flops,
                       ntk=NTKOptions(method="exact", max_matvecs=4096), x_val=x_val, y_val=y_val,
                       linearised=LinearisedOptions(learning_rate=0.5, steps=20, max_matvecs=64, rtol=1e-12))


@pytest.mark.parametrize("family,case,grid", [(f, i, sorted(GRIDS)[i % len(GRIDS)])
                                             for f, cases in CASES.items() for i in range(len(cases))]
                         + [("mlp", i, "residual_menu") for i in range(len(CASES["mlp"]))])
def test_padded_proxies_equal_the_stand_alone_ones(family: str, case: int, grid: str) -> None:
    """Every registry proxy: those of PADDED_GROUPS computed on the padded program equal the stand-alone values
    to 1e-10 relative in float64; the others are planned on the stand-alone candidate."""
    built = _build(family, CASES[family][case])
    rng = np.random.default_rng(case)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.random((6, *SHAPE)))
        y = jax.nn.one_hot(jnp.arange(6) % N_CLASSES, N_CLASSES, dtype=jnp.float64)
        x_val, y_val = jnp.asarray(rng.random((5, *SHAPE))), jnp.arange(5) % N_CLASSES
        inputs = _inputs(built, x, y, x_val, y_val)
        names = list(PROXIES)
        grid_ = RESIDUAL_MENU if grid == "residual_menu" else GRIDS[grid]
        (padded_names, padded), (rest, alone) = plan_scoring(names, inputs, built, grid_)
        assert isinstance(padded.apply_fn, PaddedProgram) and padded.state_fn is padded.apply_fn
        assert alone is inputs and set(padded_names) | set(rest) == set(names)
        assert set(padded_names) == {n for n in names if PROXIES[n].group in PADDED_GROUPS}
        padded = padded.__class__(**{**padded.__dict__, "params": _as64(padded.params)})
        want = compute_proxies(padded_names, inputs).values
        got = compute_proxies(padded_names, padded).values
    assert got["n_params"].value == built.n_params and got["flops"].value == built.flops
    for name in padded_names:
        assert np.isfinite(want[name].value), name
        np.testing.assert_allclose(got[name].value, want[name].value, rtol=RTOL, err_msg=name)


@pytest.mark.parametrize("family", sorted(CASES))
def test_candidates_of_a_bucket_share_one_compiled_program(family: str) -> None:
    first, second = (_build(family, CASES[family][0], seed=s) for s in (0, 1))
    third = _build(family, {**CASES[family][0], **SAME_BUCKET[family]}, seed=2)
    a, b, c = (bucket_candidate(m, PER_LAYER) for m in (first, second, third))
    assert a.apply_fn == b.apply_fn == c.apply_fn and hash(a.apply_fn) == hash(c.apply_fn)
    traces = []

    @partial(jax.jit, static_argnums=0)
    def logits(fn, params, x):
        traces.append(fn)
        return fn(params, x)

    x = jnp.ones((2, *SHAPE))
    for model, bucketed in zip((first, second, third), (a, b, c), strict=True):
        np.testing.assert_allclose(logits(bucketed.apply_fn, bucketed.params, x), model.apply_fn(model.params, x),
                                   rtol=1e-5, atol=1e-6)
    assert len(traces) == 1


def test_real_parameters_are_embedded_and_padding_is_zero() -> None:
    built = _build("mlp", CASES["mlp"][0])
    bucketed = bucket_candidate(built, PER_LAYER)
    assert bucketed.apply_fn.widths == (16, 16, 32)
    kernel = np.asarray(bucketed.params["layers"][2]["kernel"])
    real = np.asarray(built.params["layers"][2]["kernel"][...])
    np.testing.assert_array_equal(kernel[:12, :20], real)
    assert not kernel[12:].any() and not kernel[:, 20:].any()
    np.testing.assert_array_equal(bucketed.params["runtime"]["mask"][0], [1.0] * 12 + [0.0] * 4)


def test_uniform_grid_rounds_depth_up_with_bypassed_layers() -> None:
    bucketed = bucket_candidate(_build("mlp", CASES["mlp"][0]), UNIFORM)
    assert bucketed.apply_fn.widths == (32,) * 4
    np.testing.assert_array_equal(bucketed.params["runtime"]["on"], [1, 1, 1, 0])


def test_menus_turn_choices_into_runtime_codes() -> None:
    grid = GRIDS["menus"]
    relu, tanh = (bucket_candidate(_build("mlp", {**CASES["mlp"][0], "activation": a}), grid) for a in ("relu", "tanh"))
    assert relu.apply_fn == tanh.apply_fn and relu.apply_fn.activations == ("relu", "gelu", "tanh", "swish")
    assert float(tanh.params["runtime"]["activation"]) == 2.0
    outside = bucket_candidate(_build("mlp", {**CASES["mlp"][0], "activation": "elu"}), grid)
    assert outside.apply_fn.activations == ("elu",) and outside.apply_fn != relu.apply_fn


def test_a_residual_menu_shares_one_program_between_skip_kinds() -> None:
    """Without, with identity and with projected skips: one program, the skip kinds as runtime codes."""
    archs = [{**CASES["mlp"][0], "residual": False}, CASES["mlp"][0], {**CASES["mlp"][0], "width": [30, 9, 40]}]
    plain, mixed, projected = (bucket_candidate(_build("mlp", arch), RESIDUAL_MENU) for arch in archs)
    assert plain.apply_fn == mixed.apply_fn == projected.apply_fn
    assert plain.apply_fn.widths == (64,) * 4 and plain.apply_fn.skips == ("runtime",) * 4
    codes = [np.asarray(b.params["runtime"]["skip"]).tolist() for b in (plain, mixed, projected)]
    assert codes == [[0, 0, 0, 0], [2, 1, 2, 0], [2, 2, 2, 0]]  # 0 none, 1 identity, 2 projection
    assert not np.asarray(plain.params["skips"][1]["kernel"]).any()


def test_choices_without_a_padded_form_are_scored_on_their_own() -> None:
    assert set(PADDERS) >= set(CASES)
    group_norm = _build("mlp", {**CASES["mlp"][0], "norm": "group"})
    assert bucket_candidate(group_norm, PER_LAYER) is None
    assert bucket_candidate(_build("nb201", {"C": 4, "N": 1}), PER_LAYER) is None
    x, y = jnp.ones((4, *SHAPE)), jax.nn.one_hot(jnp.arange(4) % N_CLASSES, N_CLASSES)
    inputs = ProxyInputs.from_model(group_norm, x, y, key=jax.random.key(0))
    assert plan_scoring(["ntk_trace", "zico"], inputs, group_norm, PER_LAYER) == [(["ntk_trace", "zico"], inputs)]


def test_fewer_parameters_than_ntk_state_entries_are_scored_on_their_own() -> None:
    """The estimators pick their side by comparing p with n: a padded p ≥ n could change a p < n candidate's plan."""
    built = _build("mlp", {"depth": 1, "width": [1]})
    n = built.n_params // N_CLASSES + 1
    x, y = jnp.ones((n, *SHAPE)), jax.nn.one_hot(jnp.arange(n) % N_CLASSES, N_CLASSES)
    inputs = ProxyInputs.from_model(built, x, y, key=jax.random.key(0))
    assert plan_scoring(["ntk_trace"], inputs, built, PER_LAYER) == [(["ntk_trace"], inputs)]
    assert plan_scoring(["ntk_trace"], inputs, built, None) == [(["ntk_trace"], inputs)]


def test_a_per_layer_bucket_is_used_from_its_second_candidate_on() -> None:
    first, second = (_build("mlp", CASES["mlp"][0], seed=s) for s in (0, 1))
    x, y = jnp.ones((4, *SHAPE)), jax.nn.one_hot(jnp.arange(4) % N_CLASSES, N_CLASSES)
    met: set = set()
    plans = [plan_scoring(["ntk_trace"], ProxyInputs.from_model(m, x, y, key=jax.random.key(0)), m, PER_LAYER,
                          met=met) for m in (first, second, first)]
    assert [isinstance(plan[0][1].apply_fn, PaddedProgram) for plan in plans] == [False, True, True]
    assert met == {bucket_candidate(first, PER_LAYER).apply_fn}
    met = set()  # the few buckets of a uniform grid repeat: the first candidate runs in its bucket already
    plans = [plan_scoring(["ntk_trace"], ProxyInputs.from_model(m, x, y, key=jax.random.key(0)), m, UNIFORM,
                          met=met) for m in (first, second)]
    assert [isinstance(plan[0][1].apply_fn, PaddedProgram) for plan in plans] == [True, True]
    assert met == {bucket_candidate(first, UNIFORM).apply_fn}


def test_grid_rounds_up() -> None:
    grid = BucketGrid(widths=(16, 64), depths=(2, 4))
    assert [grid.width(w) for w in (1, 16, 17, 64, 65)] == [16, 16, 64, 64, 65]
    assert [grid.depth(d) for d in (1, 3, 5)] == [2, 4, 5]
