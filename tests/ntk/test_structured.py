"""K from per-layer factors against the exact dense NTK (float64, 1e-10), on the test models, Flax MLPs and their
padded programs; which parameters are factored; coupled models and large remainders are declined."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntksearch.models import build_model
from ntksearch.models.buckets import BucketGrid
from ntksearch.models.padded import PADDERS
from ntksearch.ntk import linearised_metrics
from ntksearch.ntk.exact import exact_ntk
from ntksearch.ntk.structured import _analysis, structured_kernel, structured_pays
from tests.ntk.problems import CLASSIFIERS

RTOL = 1e-10
SHAPE = (8, 8, 1)
MLPS = [
    {"depth": 3, "width": [12, 12, 20], "norm": "layer", "residual": True, "activation": "gelu"},
    {"depth": 1, "width": [33], "norm": "none", "residual": False, "activation": "swish"},
    {"depth": 2, "width": [9, 17], "norm": "group", "groups": 3, "residual": True, "activation": "tanh",
     "init": "normal"},
]
GRIDS = {"per_layer": BucketGrid(widths=(8, 16, 32, 64)),
         "uniform": BucketGrid(widths=(8, 16, 32, 64), depths=(2, 4), uniform=True),
         "uniform, residual menu": BucketGrid(widths=(64,), depths=(2, 4), uniform=True,
                                              menus=(("residual", (False, True)),))}


def _as64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def _close(got, want) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert np.max(np.abs(got - want)) <= RTOL * np.max(np.abs(want))


def _check(apply_fn, params, x_a, x_b) -> None:
    n_out = apply_fn(params, x_a).shape[1]
    assert structured_pays(apply_fn, params, x_a, x_b, n_out)
    got = structured_kernel(apply_fn, params, x_a, x_b)
    assert got is not None
    full = np.asarray(exact_ntk(apply_fn, params, jnp.concatenate([x_a, x_b])))
    n = x_a.shape[0] * n_out
    _close(got.k_aa, full[:n, :n])
    _close(got.k_ba, full[n:, :n])
    _close(got.out_a, jnp.ravel(apply_fn(params, x_a)))
    _close(got.out_b, jnp.ravel(apply_fn(params, x_b)))


def _mlp(arch: dict, seed: int = 0):
    return build_model("mlp", arch, input_shape=SHAPE, n_classes=3, key=jax.random.key(seed))


def _inputs() -> tuple[jax.Array, jax.Array]:
    x = jax.random.normal(jax.random.key(1), (6, *SHAPE), jnp.float64)
    return x[:4], x[4:] * 2.0


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_equals_the_exact_ntk_on_the_test_models(name: str) -> None:
    """MLP, CNN and RNN classifier: dense heads factored, convolutions and recurrences as Jacobian rows."""
    problem = CLASSIFIERS[name]()
    _check(problem.apply_fn, problem.params, problem.x[:5], problem.x[5:8] + 0.5)


@pytest.mark.parametrize("case", range(len(MLPS)))
def test_equals_the_exact_ntk_on_flax_mlps_and_their_padded_programs(case: int) -> None:
    built = _mlp(MLPS[case])
    x_a, x_b = _inputs()
    _check(built.apply_fn, _as64(built.params), x_a, x_b)
    for grid in GRIDS.values():
        padded = PADDERS["mlp"](built, grid)
        if padded is not None:
            _check(padded.apply_fn, _as64(padded.params), x_a, x_b)


def test_every_hidden_and_head_kernel_of_an_mlp_is_factored() -> None:
    built = _mlp(MLPS[0])  # 3 hidden layers, 2 projection skips (64 → 12, 12 → 20) and the head
    x_a, _ = _inputs()
    analysis = _analysis(built.apply_fn, _as64(built.params), x_a)
    sizes = sorted(int(np.prod(e.invars[1].aval.shape)) for e in analysis.dense.values())
    assert sizes == sorted([64 * 12, 12 * 12, 12 * 20, 64 * 12, 12 * 20, 20 * 3])
    kernels = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(_as64(built.params)))
    assert analysis.rest_size == kernels - sum(sizes)  # biases and norm scales


def test_a_weight_used_twice_is_kept_as_jacobian_rows() -> None:
    """Shared weights (h W then W again): not one outer product, so not factored; K stays exact."""
    def apply_fn(params, x):
        h = jnp.tanh(x @ params["w"])
        return jnp.tanh(h @ params["w"]) @ params["head"]

    keys = jax.random.split(jax.random.key(0), 3)
    params = {"w": jax.random.normal(keys[0], (5, 5), jnp.float64) / 2, "head": jax.random.normal(keys[1], (5, 2))}
    x = jax.random.normal(keys[2], (7, 5), jnp.float64)
    params = _as64(params)
    analysis = _analysis(apply_fn, params, x)
    assert [int(np.prod(e.invars[1].aval.shape)) for e in analysis.dense.values()] == [10]  # the head only
    assert analysis.rest_size == 25
    _check(apply_fn, params, x[:4], x[4:])


def test_a_coupled_model_is_declined_and_scored_by_products() -> None:
    """Batch normalisation couples the examples: the check fails, the Lanczos run takes the AD products."""
    built = _mlp({"depth": 2, "width": [16, 8], "norm": "batch", "residual": False, "activation": "relu"})
    padded = PADDERS["mlp"](built, GRIDS["per_layer"])
    x = jax.random.normal(jax.random.key(2), (12, *SHAPE), jnp.float64)
    y = jax.nn.one_hot(jnp.arange(12) % 3, 3)
    for apply_fn, params in [(built.apply_fn, _as64(built.params)), (padded.apply_fn, _as64(padded.params))]:
        assert structured_pays(apply_fn, params, x, None, 3)
        assert structured_kernel(apply_fn, params, x) is None
        run = lambda structured, fn=apply_fn, p=params: linearised_metrics(
            fn, p, x, y, None, None, key=jax.random.key(0), rtol=0.0, max_matvecs=36, structured=structured)
        factored, products = run(True), run(False)
        assert factored["complexity"].value == products["complexity"].value
        assert factored["train_loss"].n_vjp == products["train_loss"].n_vjp > 3  # AD passes: no factors


def test_declined_without_dense_products_or_with_a_large_remainder() -> None:
    def conv_only(params, x):
        dn = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(x, params["c"], (1, 1), "VALID", dimension_numbers=dn).mean(axis=(1, 2))

    x = jnp.ones((4, 8, 8, 1))
    assert not structured_pays(conv_only, {"c": jnp.ones((3, 3, 1, 2))}, x, None, 2)
    wide = _mlp({"depth": 1, "width": [2048], "norm": "layer", "residual": False, "activation": "relu"})
    batch = jnp.ones((512, *SHAPE))  # n·p_rest = 1536 rows × 6147 biases and norm entries > 2²²
    assert not structured_pays(wide.apply_fn, wide.params, batch, None, 3)
    assert structured_pays(wide.apply_fn, wide.params, batch[:32], None, 3)
