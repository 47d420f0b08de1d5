"""Confirmation training: learning, divergence, determinism, compile reuse, hyperparameters, stable LR."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntksearch.data import Dataset, load_dataset
from ntksearch.train import OPTIMIZERS, TrainHParams, stable_learning_rate, train_model
from ntksearch.train.hparams import SCHEDULES
from ntksearch.validation import ConfigError

TRACES = {"train": 0}


@dataclass(frozen=True)
class MLPApply:
    """Eval-mode 2-layer tanh MLP; instances of equal width are equal, like Flax graphdefs."""

    width: int

    def __call__(self, params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
        return h @ params["w2"] + params["b2"]


@dataclass(frozen=True)
class MLPTrainApply:
    """Training mode: dropout (rate 0.1) on the hidden layer; counts its traces."""

    width: int

    def __call__(self, params: dict[str, jax.Array], x: jax.Array, key: jax.Array) -> jax.Array:
        TRACES["train"] += 1
        h = jnp.tanh(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
        h = jnp.where(jax.random.bernoulli(key, 0.9, h.shape), h / 0.9, 0.0)
        return h @ params["w2"] + params["b2"]


@dataclass(frozen=True)
class StandIn:
    """The fields of ``ntksearch.models.BuiltModel`` that training uses."""

    apply_fn: Callable[..., jax.Array]
    train_apply_fn: Callable[..., jax.Array]
    params: Any


def mlp(seed: int, d_in: int = 64, width: int = 64, n_classes: int = 10) -> StandIn:
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"w1": jax.random.normal(k1, (d_in, width)) / np.sqrt(d_in), "b1": jnp.zeros(width),
              "w2": jax.random.normal(k2, (width, n_classes)) / np.sqrt(width), "b2": jnp.zeros(n_classes)}
    return StandIn(MLPApply(width), MLPTrainApply(width), params)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


FAST = TrainHParams(optimizer="adam", learning_rate=3e-3, batch_size=64, epochs=6)


def test_mlp_learns_digits(digits: Dataset) -> None:
    model = mlp(0)
    before = jax.tree.map(np.array, model.params)
    result = train_model(model, digits, FAST, key=jax.random.key(0), eval_test=True)
    assert result.val_accuracy > 0.8 and result.test_accuracy is not None and result.test_accuracy > 0.8
    assert not result.diverged and result.steps == 6 * (1257 // 64)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5, 6]
    assert set(result.history[0]) == {"epoch", "step", "train_loss", "val_loss", "val_accuracy", "seconds"}
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.val_loss == result.history[-1]["val_loss"] and result.seconds < 30
    for key, value in before.items():  # the caller's parameters survive the donated train step
        np.testing.assert_array_equal(model.params[key], value)
    assert train_model(model, digits, FAST, key=jax.random.key(0)).test_accuracy is None


def test_huge_learning_rate_diverges_and_is_reported(digits: Dataset) -> None:
    hparams = TrainHParams(optimizer="sgd", learning_rate=1e6, schedule="constant", batch_size=64, epochs=3)
    result = train_model(mlp(0), digits, hparams, key=jax.random.key(0))
    assert result.diverged and len(result.history) == 1
    assert result.steps < 3 * (1257 // 64)


def test_training_is_deterministic_for_a_key(digits: Dataset) -> None:
    hparams = dataclasses.replace(FAST, epochs=2)
    a = train_model(mlp(0), digits, hparams, key=jax.random.key(5))
    b = train_model(mlp(0), digits, hparams, key=jax.random.key(5))
    c = train_model(mlp(0), digits, hparams, key=jax.random.key(6))
    strip = lambda r: [{k: v for k, v in h.items() if k != "seconds"} for h in r.history]
    assert strip(a) == strip(b) and strip(a) != strip(c)
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])


def test_compiled_step_is_reused_across_candidates(digits: Dataset) -> None:
    """Equal apply_fns + other dynamic hyperparameters: no new trace; a new optimizer: one new trace."""
    width = 48  # a width no other test uses, so the first run compiles
    runs = [
        (mlp(1, width=width), TrainHParams(learning_rate=1e-3, batch_size=64, epochs=1)),
        (mlp(2, width=width), TrainHParams(learning_rate=5e-2, weight_decay=1e-4, grad_clip_norm=1.0,
                                           warmup_steps=5, batch_size=64, epochs=2)),
    ]
    counts = []
    for model, hparams in runs:
        train_model(model, digits, hparams, key=jax.random.key(0))
        counts.append(TRACES["train"])
    assert counts[1] == counts[0]
    sgd = TrainHParams(optimizer="sgd", batch_size=64, epochs=1)
    train_model(runs[0][0], digits, sgd, key=jax.random.key(0))
    assert TRACES["train"] == counts[1] + 1


def test_max_steps_and_max_train_examples(digits: Dataset) -> None:
    result = train_model(mlp(0), digits, dataclasses.replace(FAST, max_steps=7), key=jax.random.key(0))
    assert result.steps == 7 and len(result.history) == 1 and result.history[0]["step"] == 7
    result = train_model(mlp(0), digits, dataclasses.replace(FAST, epochs=2), key=jax.random.key(0),
                         max_train_examples=200)
    assert result.steps == 2 * (200 // 64)


def test_on_epoch_sees_every_epoch_and_can_stop_the_run(digits: Dataset) -> None:
    seen: list[dict[str, float]] = []
    result = train_model(mlp(0), digits, dataclasses.replace(FAST, epochs=3), key=jax.random.key(0),
                         on_epoch=seen.append)
    assert seen == result.history and [h["epoch"] for h in seen] == [1, 2, 3]

    class Stop(Exception):
        pass

    def stop_after_two(entry: dict[str, float]) -> None:
        if entry["epoch"] == 2:
            raise Stop
    with pytest.raises(Stop):
        train_model(mlp(0), digits, dataclasses.replace(FAST, epochs=5), key=jax.random.key(0),
                    on_epoch=stop_after_two)


def test_grad_clipping_and_weight_decay_are_applied(digits: Dataset) -> None:
    base = TrainHParams(optimizer="sgd", learning_rate=1.0, schedule="constant", max_steps=1, epochs=1)
    model = mlp(0)
    flat = lambda p: np.concatenate([np.ravel(p[k]) for k in sorted(p)])
    clip = dataclasses.replace(base, grad_clip_norm=1e-3)
    clipped = train_model(model, digits, clip, key=jax.random.key(0))
    assert np.linalg.norm(flat(clipped.params) - flat(model.params)) <= 1e-3 * 1.001
    plain = train_model(model, digits, base, key=jax.random.key(0))
    decayed = train_model(model, digits, dataclasses.replace(base, weight_decay=0.5), key=jax.random.key(0))
    # one SGD step with coupled decay: θ' = θ − lr·(g + wd·θ)
    np.testing.assert_allclose(flat(decayed.params), flat(plain.params) - 0.5 * flat(model.params), atol=1e-5)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_optimizer_trains(digits: Dataset, optimizer: str) -> None:
    hparams = TrainHParams(optimizer=optimizer, learning_rate=0.05 if "sgd" in optimizer else 3e-3,
                           weight_decay=1e-4, batch_size=128, epochs=2, warmup_steps=3)
    result = train_model(mlp(0), digits, hparams, key=jax.random.key(0))
    assert not result.diverged and result.history[-1]["train_loss"] < result.history[0]["train_loss"]


# -- hyperparameters ---------------------------------------------------------------------------------------
def test_hparams_from_dict_normalises_values() -> None:
    hp = TrainHParams.from_dict({"optimizer": "adamw", "learning_rate": 1, "batch_size": np.int64(32),
                                 "weight_decay": np.float32(0.5), "max_steps": None})
    assert hp.learning_rate == 1.0 and isinstance(hp.learning_rate, float)
    assert hp.batch_size == 32 and type(hp.batch_size) is int and hp.weight_decay == 0.5
    assert hp.epochs == TrainHParams().epochs


@pytest.mark.parametrize(("values", "message"), [
    ({"optimiser": "adam"}, "exp.yaml: train.optimiser: unknown key; allowed here: batch_size, epochs"),
    ({"optimizer": "lion"}, "exp.yaml: train.optimizer: 'lion' is not allowed; choose one of: adam, adamw, "
                            "momentum, sgd"),
    ({"schedule": "step"}, "train.schedule: 'step' is not allowed; choose one of: constant, cosine"),
    ({"learning_rate": 0.0}, "train.learning_rate: 0.0 must be > 0.0"),
    ({"batch_size": 1.5}, "train.batch_size: expected an integer, got float 1.5"),
    ({"grad_clip_norm": -1}, "train.grad_clip_norm: -1 must be > 0.0"),
])
def test_hparams_errors_name_the_key_and_allowed_values(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrainHParams.from_dict(values, file="exp.yaml", path="train")
    assert message in str(err.value)


def test_hparams_are_validated_on_construction() -> None:
    with pytest.raises(ConfigError, match="epochs: 0 is below the minimum 1"):
        TrainHParams(epochs=0)


def test_schedules() -> None:
    args = TrainHParams(learning_rate=2.0, warmup_steps=4).schedule_args(total_steps=104)
    lr = {name: np.array([float(fn(jnp.asarray(t), args)) for t in (0, 3, 54, 104)])
          for name, fn in SCHEDULES.items()}
    np.testing.assert_allclose(lr["constant"], [0.5, 2.0, 2.0, 2.0])
    np.testing.assert_allclose(lr["cosine"], [0.5, 2.0, 1.0, 0.0], atol=1e-6)


# -- stable learning rate ----------------------------------------------------------------------------------
def test_stable_learning_rate_formula() -> None:
    assert stable_learning_rate(10.0, n=5, loss="mse") == pytest.approx(1.0)
    assert stable_learning_rate(10.0, n=5) == pytest.approx(2.0)                 # h_max = 1/2
    assert stable_learning_rate(10.0, n=5, n_classes=10) == pytest.approx(10.0)  # h_max = 1/C
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        stable_learning_rate(1.0, n=1, loss="hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lambda_max must be positive"):
        stable_learning_rate(0.0, n=1)


def linear_apply(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


def linear_ntk_lambda_max(x: np.ndarray) -> float:
    """λ_max of K = (X Xᵀ + 𝟙𝟙ᵀ) ⊗ I_C for f = X W + b: the top eigenvalue of [X, 1]ᵀ[X, 1]."""
    design = np.concatenate([x.reshape(len(x), -1), np.ones((len(x), 1))], axis=1).astype(np.float64)
    return float(np.linalg.eigvalsh(design.T @ design)[-1])


def test_stable_learning_rate_separates_convergence_from_divergence_for_mse() -> None:
    rng = np.random.default_rng(0)
    n, f, c = 32, 8, 3
    x, y = rng.normal(size=(n, f)).astype(np.float32), rng.normal(size=(n, c)).astype(np.float32)
    params = {"w": jnp.zeros((f, c)), "b": jnp.zeros(c)}
    jac = jax.jacobian(lambda p: linear_apply(p, x).ravel())(params)
    jac = np.concatenate([np.asarray(j).reshape(n * c, -1) for j in jax.tree.leaves(jac)], axis=1)
    lam = linear_ntk_lambda_max(x)
    assert np.linalg.eigvalsh(jac.astype(np.float64) @ jac.T.astype(np.float64))[-1] == pytest.approx(lam)
    bound = stable_learning_rate(lam, n=n, loss="mse")

    def final_loss(lr: float, steps: int = 200) -> tuple[float, float]:
        loss = jax.jit(lambda p: 0.5 / n * jnp.sum((linear_apply(p, x) - y) ** 2))
        step = jax.jit(lambda p: jax.tree.map(lambda a, g: a - lr * g, p, jax.grad(loss)(p)))
        p = params
        for _ in range(steps):
            p = step(p)
        return float(loss(params)), float(loss(p))

    start, converged = final_loss(0.9 * bound)
    design = np.concatenate([x, np.ones((n, 1))], axis=1)
    optimum = 0.5 / n * np.sum((y - design @ np.linalg.lstsq(design, y, rcond=None)[0]) ** 2)
    assert converged == pytest.approx(optimum, rel=1e-3, abs=1e-5)
    _, exploded = final_loss(1.1 * bound)
    assert not np.isfinite(exploded) or exploded > 1e6 * start


def test_conservative_cross_entropy_bound_gives_monotone_training(digits: Dataset) -> None:
    """Linear model, full-batch SGD at 0.9× 2N/(½λ_max): the loss is (1/N)(½λ_max)-smooth, so it decreases."""
    n = len(digits.y_train)
    lr = 0.9 * stable_learning_rate(linear_ntk_lambda_max(digits.x_train), n=n)
    model = StandIn(linear_apply, lambda p, x, key: linear_apply(p, x),
                    {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)})
    hparams = TrainHParams(optimizer="sgd", learning_rate=lr, schedule="constant", batch_size=n, epochs=15)
    losses = [h["train_loss"] for h in train_model(model, digits, hparams, key=jax.random.key(0)).history]
    assert np.all(np.diff(losses) < 0) and losses[-1] < 0.8 * losses[0]
