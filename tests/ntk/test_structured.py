"""K from per-layer factors against the exact dense NTK (float64, 1e-10), on the test models, Flax MLPs and RNNs
and their padded programs; which parameters are factored (recurrent weights too); both ways of forming a dense
use's part; coupled models and large remainders are declined."""

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
from ntksearch.ntk.structured import _analysis, _by_positions, _dense_part, structured_kernel, structured_pays
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
    """MLP, CNN and RNN classifier: dense heads and the RNN's input and recurrent weights (constants of its
    ``scan``) factored, convolutions as Jacobian rows."""
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


RNNS = [
    {"cell": "tanh", "layers": 1, "hidden": [5], "bidirectional": False},
    {"cell": "gru", "layers": 2, "hidden": [6, 4], "bidirectional": True},
    {"cell": "lstm", "layers": 2, "hidden": [3, 7], "bidirectional": True},
]


@pytest.mark.parametrize("case", range(len(RNNS)))
def test_equals_the_exact_ntk_on_flax_rnns_and_their_padded_programs(case: int) -> None:
    """Every input and recurrent kernel is factored (the recurrent ones inside the 8-step ``scan``), stand-alone
    and padded; biases used at every step stay Jacobian rows."""
    arch = {**RNNS[case], "readout": "last", "dropout": 0.0, "init": "lecun_normal", "init_scale": 1.0}
    built = build_model("rnn", arch, input_shape=SHAPE, n_classes=3, key=jax.random.key(case))
    x_a, x_b = _inputs()
    grids = [BucketGrid(widths=(8, 16)), BucketGrid(widths=(16,), depths=(2,), uniform=True)]
    programs = [(built.apply_fn, _as64(built.params))] + [
        (padded.apply_fn, _as64(padded.params)) for padded in (PADDERS["rnn"](built, grid) for grid in grids)]
    directions = 2 if arch["bidirectional"] else 1
    for apply_fn, params in programs:
        analysis = _analysis(apply_fn, params, x_a)
        loops = sorted(analysis.loops.values())
        slots = len(params["layers"])
        assert loops == [()] * (1 + slots * directions) + [(8,)] * (slots * directions)  # head, input, recurrent
        _check(apply_fn, params, x_a, x_b)


def test_equals_the_exact_ntk_on_a_flax_transformer() -> None:
    """Dense layers over the 9 token positions (8 rows and a class token) are factored; attention's mixing and
    the norms stay Jacobian rows."""
    arch = {"depth": 2, "heads": 2, "head_dim": 8, "mlp_ratio": 2.0, "pre_norm": True, "readout": "cls",
            "activation": "gelu", "dropout": 0.0, "init": "xavier_uniform", "init_scale": 1.0}
    built = build_model("transformer", arch, input_shape=SHAPE, n_classes=3, key=jax.random.key(0))
    x_a, x_b = _inputs()
    params = _as64(built.params)
    analysis = _analysis(built.apply_fn, params, x_a)
    positions = sorted(e.invars[0].aval.shape[:-1] for e in analysis.dense.values())
    assert positions == [(1,), (1, 8)] + [(1, 9)] * 8  # head; embedding; q|k|v, out, mlp in and out per block
    _check(built.apply_fn, params, x_a, x_b)


@pytest.mark.parametrize(("positions", "d_in", "d_out"), [(4, 2, 5), (2, 50, 50), (1, 7, 3)])
def test_both_ways_of_forming_a_dense_use_equal_the_sum_over_positions(positions: int, d_in: int, d_out: int
                                                                       ) -> None:
    """Σ_{s,t} (a_is·a_jt)(g_ios·g_jo't) by brute force, against Gram matrices over positions (chosen for the
    second case) and against Jacobian rows (the first), with zero columns in both factors."""
    outputs = 2
    by_positions = _by_positions(outputs, positions, d_in, d_out)
    assert by_positions == (positions != 4)
    rng = np.random.default_rng(positions)
    a1, a2 = rng.normal(size=(3, positions, d_in)), rng.normal(size=(5, positions, d_in))
    g1, g2 = rng.normal(size=(3, outputs, positions, d_out)), rng.normal(size=(5, outputs, positions, d_out))
    a1[..., 0], g2[..., -1] = 0.0, 0.0  # a column zero in one batch only is skipped: its products are zero
    want = np.einsum("isd,jtd,iose,jqte->iojq", a1, a2, g1, g2).reshape(6, 10)
    got = _dense_part(a1, a2, g1, g2)
    assert np.max(np.abs(got - want)) <= RTOL * np.max(np.abs(want))
    assert _dense_part(np.zeros_like(a1), a2, g1, g2) is None


def test_a_model_with_every_parameter_factored() -> None:
    """No Jacobian rows left (bias-free layers): K is the dense uses' parts alone."""
    keys = jax.random.split(jax.random.key(4), 3)
    params = _as64({"w": jax.random.normal(keys[0], (5, 6)), "head": jax.random.normal(keys[1], (6, 2))})
    apply_fn = lambda p, x: jnp.tanh(x @ p["w"]) @ p["head"]
    x = jax.random.normal(keys[2], (7, 5), jnp.float64)
    assert _analysis(apply_fn, params, x).rest_size == 0
    _check(apply_fn, params, x[:4], x[4:])


def test_a_weight_used_in_a_loop_and_after_it_is_kept_as_jacobian_rows() -> None:
    """A loop constant used once per step is factored; used after the loop as well, it is not; K stays exact."""
    def apply_fn(params, x):
        def step(h, xt):
            h = jnp.tanh(xt @ params["w_in"] + h @ params["w"])
            return h, h

        h, _ = jax.lax.scan(step, jnp.zeros((x.shape[0], 4), x.dtype), jnp.swapaxes(x, 0, 1))
        return jnp.tanh(h @ params["w"]) @ params["head"]

    keys = jax.random.split(jax.random.key(3), 4)
    params = _as64({"w_in": jax.random.normal(keys[0], (3, 4)), "w": jax.random.normal(keys[1], (4, 4)) / 2,
                    "head": jax.random.normal(keys[2], (4, 2))})
    x = jax.random.normal(keys[3], (7, 5, 3), jnp.float64)
    analysis = _analysis(apply_fn, params, x)
    assert sorted(tuple(e.invars[1].aval.shape) for e in analysis.dense.values()) == [(3, 4), (4, 2)]
    assert sorted(analysis.loops.values()) == [(), (5,)]
    assert analysis.rest_size == 16
    _check(apply_fn, params, x[:4], x[4:])


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
    # 28 steps of 28 features: a 16-unit LSTM's factors fit; padded to 128 units its recurrent kernel's Jacobian
    # rows (the cheaper way at 28 positions) would be 320 × 128 × 512 > 2²⁴ entries on the host
    arch = {"cell": "lstm", "layers": 1, "hidden": [16], "bidirectional": False, "readout": "last", "dropout": 0.0,
            "init": "lecun_normal", "init_scale": 1.0}
    lstm = build_model("rnn", arch, input_shape=(28, 28, 1), n_classes=10, key=jax.random.key(0))
    padded = PADDERS["rnn"](lstm, BucketGrid(widths=(128,), depths=(1,), uniform=True))
    images = jnp.ones((32, 28, 28, 1))
    assert structured_pays(lstm.apply_fn, lstm.params, images, None, 10)
    assert not structured_pays(padded.apply_fn, padded.params, images, None, 10)
