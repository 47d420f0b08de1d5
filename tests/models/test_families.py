"""Model families: contract of BuiltModel, hashable apply_fns, determinism, shapes, errors."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ntksearch.models import (
    ACTIVATIONS,
    FAMILIES,
    HYPERPARAMETERS,
    INITIALIZERS,
    BuildError,
    BuiltModel,
    build_model,
    nb201_arch_string,
    nb201_edges,
)
from ntksearch.models.layers import make_init, make_norm
from ntksearch.validation import ConfigError
from tests.models.helpers import flax_param_count

SHAPE = (8, 8, 1)
X = jax.random.uniform(jax.random.PRNGKey(1), (4, *SHAPE))

# one small, feature-rich architecture per family (every family exercised by each test below)
CASES = {
    "mlp": {"depth": 2, "width": [16, 24], "norm": "layer", "residual": True, "dropout": 0.2},
    "cnn": {"stages": 2, "channels": [4, 8], "stride": [1, 2], "pool": ["max", "avg"], "residual": True,
            "norm": "group", "groups": 3, "dropout": 0.2},
    "rnn": {"cell": "lstm", "layers": 2, "hidden": [8, 6], "bidirectional": True, "dropout": 0.2},
    "nb201": {"C": 4, "N": 1, "edge_1_0": "nor_conv_1x1", "edge_2_1": "avg_pool_3x3", "edge_3_0": "none",
              "edge_3_2": "skip_connect", "dropout": 0.2},
    "transformer": {"depth": 1, "heads": 2, "head_dim": 4, "readout": "cls", "dropout": 0.2},
}


def _build(family: str, point: dict | None = None, seed: int = 0, shape: tuple[int, ...] = SHAPE) -> BuiltModel:
    return build_model(family, CASES[family] if point is None else point, input_shape=shape, n_classes=3,
                       key=jax.random.PRNGKey(seed))


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request: pytest.FixtureRequest) -> BuiltModel:
    return _build(request.param)


def test_registries_cover_each_other() -> None:
    assert set(FAMILIES) == set(HYPERPARAMETERS) == set(CASES)


def test_contract(built: BuiltModel) -> None:
    logits = built.apply_fn(built.params, X)
    assert logits.shape == (4, 3) and bool(jnp.all(jnp.isfinite(logits)))
    assert built.n_params == flax_param_count(built) > 0
    assert built.flops > 0 and built.input_shape == SHAPE and built.n_classes == 3
    assert built.state_fn is built.apply_fn  # only rnn "trajectory" has a separate state
    features = built.features_fn(built.params, X)
    assert features and all(f.shape[0] == 4 for f in features)
    train = built.train_apply_fn(built.params, X, jax.random.PRNGKey(5))
    assert train.shape == (4, 3) and not np.allclose(train, logits)  # dropout only in training mode
    np.testing.assert_array_equal(train, built.train_apply_fn(built.params, X, jax.random.PRNGKey(5)))


def test_apply_fns_equal_across_builds_of_one_architecture(built: BuiltModel) -> None:
    other_init = {**built.point, "init": "xavier_uniform", "init_scale": 0.5}
    again = build_model(built.family, other_init, input_shape=SHAPE, n_classes=3, key=jax.random.PRNGKey(9))
    assert again.apply_fn == built.apply_fn and hash(again.apply_fn) == hash(built.apply_fn)
    assert again.features_fn == built.features_fn and again.train_apply_fn == built.train_apply_fn
    assert again.apply_fn != built.features_fn
    traces = []

    @partial(jax.jit, static_argnums=0)
    def probe(fn: object, x: jax.Array) -> jax.Array:
        traces.append(fn)
        return x

    probe(built.apply_fn, X)
    probe(again.apply_fn, X)
    assert len(traces) == 1  # a jit keyed on apply_fn reuses its compiled code for the second candidate


def test_different_architectures_differ() -> None:
    a = _build("mlp", {"depth": 1, "width": 16})
    assert a.apply_fn != _build("mlp", {"depth": 1, "width": 17}).apply_fn
    assert a.apply_fn != _build("mlp", {"depth": 1, "width": 16, "activation": "tanh"}).apply_fn


def test_deterministic_initialisation() -> None:
    same = [jax.tree.leaves(_build("cnn", seed=3).params) for _ in range(2)]
    for a, b in zip(*same, strict=True):
        np.testing.assert_array_equal(a, b)
    other = jax.tree.leaves(_build("cnn", seed=4).params)
    assert any(not np.array_equal(a, b) for a, b in zip(same[0], other, strict=True))


@pytest.mark.parametrize("scheme", sorted(INITIALIZERS))
def test_initialiser_statistics(scheme: str) -> None:
    fan_in, fan_out = 400, 300
    w = np.asarray(make_init(scheme, 1.5)(jax.random.PRNGKey(0), (fan_in, fan_out)))
    spec = INITIALIZERS[scheme]
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[spec.mode]
    assert w.std() == pytest.approx(1.5 * math.sqrt(spec.scale / fan), rel=0.03)
    if spec.distribution == "truncated_normal":
        assert np.abs(w).max() < 2 * 1.5 * math.sqrt(spec.scale / fan) / 0.8796
    np.testing.assert_array_equal(w, make_init(scheme, 1.5)(jax.random.PRNGKey(0), (fan_in, fan_out)))


def test_batch_norm_uses_batch_statistics() -> None:
    norm = make_norm("batch", 5, 4, nnx.Rngs(0))
    y = norm(3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(0), (6, 4, 4, 5)))
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1.0, atol=1e-3)
    assert not nnx.state(norm, nnx.BatchStat)  # no running averages


def test_mlp_features_are_pre_activations() -> None:
    built = _build("mlp", {"depth": 3, "width": [5, 6, 7], "activation": "relu"})
    features = built.features_fn(built.params, X)
    assert [f.shape for f in features] == [(4, 5), (4, 6), (4, 7)]
    assert bool(jnp.any(features[0] < 0))  # taken before the ReLU


def test_rnn_trajectory_state_and_sequence_inputs() -> None:
    point = {**CASES["rnn"], "readout": "trajectory"}
    built = _build("rnn", point)
    assert built.state_fn != built.apply_fn
    state, tangent = jax.jvp(lambda p: built.state_fn(p, X), (built.params,), (built.params,))
    assert state.shape == tangent.shape == (4, 8, 2 * 6)  # (N, T = rows, hidden · directions)
    assert built.apply_fn(built.params, X).shape == (4, 3)
    seq = build_model("rnn", {"cell": "tanh"}, input_shape=(5, 7), n_classes=2, key=jax.random.PRNGKey(0))
    assert seq.apply_fn(seq.params, jnp.ones((3, 5, 7))).shape == (3, 2)
    gru = _build("rnn", {"cell": "gru", "hidden": 4})
    assert [f.shape for f in gru.features_fn(gru.params, X)] == [(4, 8, 3 * 4)]  # r, z, n gates per step


def test_cnn_down_sampling_bottoms_out_at_one_pixel() -> None:
    point = {"stages": 5, "channels": 4, "stride": 2, "pool": "max", "kernel": 5}
    built = _build("cnn", point)
    assert bool(jnp.all(jnp.isfinite(built.apply_fn(built.params, X))))
    assert built.features_fn(built.params, X)[-1].shape == (4, 1, 1, 4)
    with pytest.raises(BuildError, match=r"\(H, W, C\) images or \(T, F\) sequences"):
        _build("cnn", point, shape=(8,))


def test_cnn_on_sequences_is_a_1d_convolution_over_time() -> None:
    point = {**CASES["cnn"], "kernel": [3, 5]}
    built = _build("cnn", point, shape=(12, 2))
    x = jax.random.uniform(jax.random.PRNGKey(2), (4, 12, 2))
    assert built.apply_fn(built.params, x).shape == (4, 3)
    kernels = [leaf.shape for leaf in jax.tree.leaves(built.params) if leaf.ndim == 3]
    assert (3, 2, 4) in kernels and (5, 8, 8) in kernels  # (time, in, out): 1-D kernels
    # stage 0 keeps 12 steps then pools to 6; stage 1's first block has stride 2: 3 steps
    assert [f.shape for f in built.features_fn(built.params, x)][-1] == (4, 3, 8)
    assert built.flops > 0 and built.n_params == flax_param_count(built)


def test_cnn_1d_matches_a_hand_computation() -> None:
    built = _build("cnn", {"stages": 1, "channels": [2], "kernel": [3], "activation": "relu"}, shape=(5, 2))
    x = np.asarray(jax.random.uniform(jax.random.PRNGKey(3), (2, 5, 2)))
    conv, head = built.params["stages"][0][0]["conv1"], built.params["head"]
    w, b = np.asarray(conv["kernel"]), np.asarray(conv["bias"])  # (3, 2, 2), (2,)
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0)))  # SAME padding for kernel 3, stride 1
    h = np.stack([np.einsum("nki,kio->no", padded[:, t:t + 3], w) for t in range(5)], axis=1) + b
    logits = np.maximum(h, 0).mean(axis=1) @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
    np.testing.assert_allclose(built.apply_fn(built.params, x), logits, rtol=1e-5, atol=1e-6)


def test_cnn_on_fashion_mnist_shape() -> None:
    built = _build("cnn", shape=(28, 28, 1))
    assert built.apply_fn(built.params, jnp.ones((2, 28, 28, 1))).shape == (2, 3)


def test_nb201_arch_string_round_trip() -> None:
    built = _build("nb201")
    arch = nb201_arch_string(built.point)
    assert arch == "|nor_conv_1x1~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"
    assert nb201_edges(arch) == {k: v for k, v in built.point.items() if k.startswith("edge_")}
    from_string = _build("nb201", {"C": 4, "N": 1, "dropout": 0.2, "arch": arch})
    assert from_string.apply_fn == built.apply_fn and from_string.point == built.point
    for bad in ["|nor_conv_1x1~0|+|none~0|", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"]:
        with pytest.raises(BuildError, match="NB201"):
            nb201_edges(bad)


def test_nb201_cell_of_only_none_edges_still_scores() -> None:
    point = {"C": 4, "N": 1, "arch": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"}
    built = _build("nb201", point)
    assert bool(jnp.all(jnp.isfinite(built.apply_fn(built.params, X))))


def test_point_errors_name_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match="unknown hyperparameter for mlp; allowed: depth, width"):
        _build("mlp", {"heads": 2})
    with pytest.raises(ConfigError, match="activation: 'sigmoidal' is not allowed; expected one of: relu"):
        _build("mlp", {"activation": "sigmoidal"})
    with pytest.raises(ConfigError, match=r"width: expected 2 values \(one per depth\), got 3"):
        _build("mlp", {"depth": 2, "width": [4, 5, 6]})
    with pytest.raises(ConfigError, match=r"width\[1\]: 0 is not allowed; expected an integer in \[1, 16384\]"):
        _build("mlp", {"depth": 2, "width": [4, 0]})
    with pytest.raises(ValueError, match="unknown model family 'resnet'; choose one of: mlp, cnn"):
        build_model("resnet", {}, input_shape=SHAPE, n_classes=3, key=jax.random.PRNGKey(0))
    assert set(ACTIVATIONS) <= set(HYPERPARAMETERS["mlp"]["activation"].names)
