"""count_flops against hand-computed counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from ntksearch.models import FlopCountError, build_model, count_flops


def _mlp(params: dict, x: jax.Array) -> jax.Array:
    h = jax.nn.relu(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


@pytest.mark.parametrize("batch", [1, 5])
def test_two_layer_mlp(batch: int) -> None:
    d, h, c = 3, 4, 2
    params = {"w1": jnp.ones((d, h)), "b1": jnp.ones(h), "w2": jnp.ones((h, c)), "b2": jnp.ones(c)}
    # dot 2·d·h, bias add h, relu (max inside custom_jvp/jit) h, dot 2·h·c, bias add c
    expected = batch * (2 * d * h + h + h + 2 * h * c + c)
    assert count_flops(_mlp, params, jnp.ones((batch, d))) == expected == batch * 50


@pytest.mark.parametrize(("groups", "stride", "expected"), [
    (1, 1, 2 * (6 * 6 * 4) * (3 * 3 * 2)),  # 2 · output elements · kernel window · input channels
    (2, 1, 2 * (6 * 6 * 4) * (3 * 3 * 1)),  # grouped: each output sees C_in / groups channels
    (1, 2, 2 * (3 * 3 * 4) * (3 * 3 * 2)),  # stride 2, SAME: 3×3 outputs
])
def test_single_conv(groups: int, stride: int, expected: int) -> None:
    kernel = jnp.ones((3, 3, 2 // groups, 4))
    conv = lambda x: jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                  feature_group_count=groups)
    assert count_flops(conv, jax.ShapeDtypeStruct((1, 6, 6, 2), jnp.float32)) == expected


def test_control_flow_and_wrappers() -> None:
    xs = jnp.ones(7)
    scan = lambda xs: jax.lax.scan(lambda c, x: (c * x + 1.0, None), 0.0, xs)[0]
    assert count_flops(scan, xs) == 7 * 2  # length × (mul + add)
    cond = lambda p, x: jax.lax.cond(p, lambda v: jnp.sin(v), lambda v: jnp.sin(v) * jnp.cos(v) + 1.0, x)
    assert count_flops(cond, True, jnp.ones(5)) == 5 * 4  # the dearer branch
    assert count_flops(jax.checkpoint(lambda x: jnp.exp(x) * 2.0), jnp.ones(3)) == 6
    assert count_flops(lambda x: jnp.sum(x, axis=1), jnp.ones((3, 4))) == 12  # one per reduced input


def test_while_loop_is_not_countable() -> None:
    loop = lambda x: jax.lax.while_loop(lambda v: v < 10.0, lambda v: v * 2.0, x)
    with pytest.raises(FlopCountError, match="while"):
        count_flops(loop, 1.0)


def test_family_flops_match_formula() -> None:
    d, h, c = 64, 32, 10
    built = build_model("mlp", {"depth": 1, "width": h, "activation": "relu"}, input_shape=(8, 8, 1),
                        n_classes=c, key=jax.random.PRNGKey(0))
    assert built.flops == 2 * d * h + h + h + 2 * h * c + c
