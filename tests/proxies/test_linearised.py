"""Linearised-training proxies: values against the dense linearised model, the held-out batch they need, and the
mapping from a candidate's training hyperparameters to the linearised setting."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntksearch.ntk.exact import exact_linearised_metrics
from ntksearch.proxies import PROXIES, LinearisedOptions, ProxyInputs, compute_proxies
from ntksearch.proxies.linearised import options_for_training, schedule_steps
from tests.ntk.linearised_reference import held_out
from tests.ntk.problems import Problem

NAMES = {"lin_train_loss": "train_loss", "lin_val_loss": "val_loss", "lin_val_accuracy": "val_accuracy",
         "ntk_complexity": "complexity"}


@pytest.fixture(autouse=True)
def float64() -> Iterator[None]:
    with jax.enable_x64(True):
        yield


def _two_layer(params, x):
    return jnp.tanh(x @ params["w1"]) @ params["w2"]


@pytest.fixture
def tiny() -> Problem:
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"w1": jax.random.normal(k1, (5, 7)) / 2, "w2": jax.random.normal(k2, (7, 3)) / 3}
    return Problem(_two_layer, params, jax.random.normal(k3, (6, 5)), jax.nn.one_hot(jnp.arange(6) % 3, 3))


def test_the_four_proxies_are_the_linearised_model(tiny):
    """Enough Lanczos steps to span R^{NC}: the proxies equal the dense definitions at the configured setting."""
    options = LinearisedOptions(learning_rate=0.05, steps=30, ridge=0.1, max_matvecs=64, rtol=0.0)
    x_val, labels = held_out(tiny)
    inputs = ProxyInputs(tiny.apply_fn, tiny.params, tiny.x, tiny.y, jax.random.PRNGKey(0), x_val=x_val,
                         y_val=labels, linearised=options)
    got = compute_proxies(list(NAMES), inputs)
    want = exact_linearised_metrics(tiny.apply_fn, tiny.params, tiny.x, tiny.y, x_val, labels, learning_rate=0.05,
                                    steps=30, ridge=0.1)
    assert set(got.seconds) == {"linearised"}
    for name, quantity in NAMES.items():
        assert got.values[name].value == pytest.approx(want[quantity], rel=1e-8)
    assert [PROXIES[name].sign for name in NAMES] == [-1, -1, +1, -1]


def test_held_out_proxies_need_a_held_out_batch(tiny):
    inputs = ProxyInputs(tiny.apply_fn, tiny.params, tiny.x, tiny.y, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"'lin_val_accuracy' needs x_val, y_val, which these proxy inputs"):
        compute_proxies(["lin_val_accuracy"], inputs)
    values = compute_proxies(["lin_train_loss", "ntk_complexity"], inputs).values
    assert all(math.isfinite(v.value) and v.value > 0 for v in values.values())


def test_learning_rate_and_momentum_from_the_optimizer():
    base = LinearisedOptions(learning_rate=0.123, steps=77)
    mapped = lambda **train: options_for_training(train, base, n_classes=10, train_size=None)
    assert mapped(optimizer="sgd", learning_rate=0.05) == dataclasses.replace(base, learning_rate=0.005, momentum=0.0)
    assert mapped(optimizer="momentum", learning_rate=0.05) == dataclasses.replace(base, learning_rate=0.005,
                                                                                  momentum=0.9)
    assert mapped(optimizer="sgd", learning_rate="auto").learning_rate == "auto"
    assert mapped(optimizer="adamw", learning_rate=0.05) == base  # adaptive: not seen, the configured setting stays


def test_steps_from_the_schedule():
    train = {"optimizer": "sgd", "learning_rate": "auto", "batch_size": 100, "epochs": 3, "schedule": "constant"}
    assert schedule_steps(train, 1050) == 30  # 3 epochs × ⌊1050/100⌋ steps at the full rate
    assert schedule_steps({**train, "max_steps": 10}, 1050) == 10
    cosine = sum(0.5 * (1 + math.cos(math.pi * s / 30)) for s in range(30))  # 15.5: half the steps, and a half
    steps = schedule_steps({**train, "schedule": "cosine"}, 1050)
    assert steps in (15, 16) and abs(steps - cosine) <= 0.5 + 1e-5
    options = options_for_training({**train, "schedule": "cosine"}, LinearisedOptions(steps=5), n_classes=10,
                                   train_size=1050)
    assert options.steps == steps and options.learning_rate == "auto"


def test_a_diverging_setting_is_finite_or_inf_and_flags_chance_accuracy(tiny):
    x_val, labels = held_out(tiny)
    inputs = ProxyInputs(tiny.apply_fn, tiny.params, tiny.x, tiny.y, jax.random.PRNGKey(0), x_val=x_val,
                         y_val=labels, linearised=LinearisedOptions(lr_fraction=3.0, steps=10_000))
    values = compute_proxies(list(NAMES), inputs).values
    assert values["lin_val_accuracy"].value == pytest.approx(1 / 3)
    assert values["lin_train_loss"].value == math.inf and values["lin_val_loss"].value == math.inf
    assert not any(np.isnan([v.value for v in values.values()] + [v.stderr for v in values.values()]))
