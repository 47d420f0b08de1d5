"""Training hyperparameters, the optimizer registry and the learning-rate schedules.

Optimizers and schedules are built from *traced* scalars (learning rate, weight decay, clipping norm, warmup
and total steps), so candidates that differ only in those values share one compiled train step; only the
optimizer and schedule names are static.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntksearch.settings import check_settings, setting
from ntksearch.validation import Node

__all__ = ["MOMENTUM", "OPTIMIZERS", "SCHEDULES", "ScheduleArgs", "TrainHParams", "make_transform"]

Scalar = float | jax.Array
OptimizerFactory = Callable[[Scalar, Scalar], optax.GradientTransformation]

MOMENTUM = 0.9  # the heavy-ball coefficient of the ``momentum`` optimizer


def _sgd(learning_rate: Scalar, weight_decay: Scalar) -> optax.GradientTransformation:
    """Plain SGD on the loss plus the L2 term ½·wd·‖θ‖² (coupled weight decay)."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate))


def _momentum(learning_rate: Scalar, weight_decay: Scalar) -> optax.GradientTransformation:
    """Heavy-ball SGD (momentum 0.9) with coupled weight decay."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=MOMENTUM))


def _adam(learning_rate: Scalar, weight_decay: Scalar) -> optax.GradientTransformation:
    """Adam with coupled (L2) weight decay added to the gradient before the moment estimates."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate))


def _adamw(learning_rate: Scalar, weight_decay: Scalar) -> optax.GradientTransformation:
    """AdamW: decoupled weight decay, θ ← θ − lr·(adam_update + wd·θ)."""
    return optax.adamw(learning_rate, weight_decay=weight_decay)


OPTIMIZERS: dict[str, OptimizerFactory] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "adam": _adam,
    "adamw": _adamw,
}


class ScheduleArgs(NamedTuple):
    """The dynamic (traced) hyperparameters of one training run, float32 scalars."""

    learning_rate: jax.Array
    weight_decay: jax.Array
    clip_norm: jax.Array      # +inf: no clipping
    warmup_steps: jax.Array
    total_steps: jax.Array


def _warmup(step: jax.Array, args: ScheduleArgs) -> jax.Array:
    """Linear warmup factor min(1, (t + 1) / warmup); 1 without warmup."""
    return jnp.minimum(1.0, (step + 1) / jnp.maximum(args.warmup_steps, 1.0))


def _constant(step: jax.Array, args: ScheduleArgs) -> jax.Array:
    return args.learning_rate * _warmup(step, args)


def _cosine(step: jax.Array, args: ScheduleArgs) -> jax.Array:
    """lr·½(1 + cos(π·u)), u = (t − warmup)/(total − warmup) clipped to [0, 1]: from lr down to 0."""
    progress = jnp.clip((step - args.warmup_steps) / jnp.maximum(args.total_steps - args.warmup_steps, 1.0),
                        0.0, 1.0)
    return args.learning_rate * _warmup(step, args) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))


SCHEDULES: dict[str, Callable[[jax.Array, ScheduleArgs], jax.Array]] = {
    "constant": _constant,
    "cosine": _cosine,
}


def make_transform(optimizer: str, args: ScheduleArgs, learning_rate: Scalar) -> optax.GradientTransformation:
    """Gradient clipping by global norm (``args.clip_norm``) followed by ``OPTIMIZERS[optimizer]``."""
    return optax.chain(optax.clip_by_global_norm(args.clip_norm),
                       OPTIMIZERS[optimizer](learning_rate, args.weight_decay))


def _validated(values: Mapping[str, Any], file: str | Path | None, path: str) -> dict[str, Any]:
    """Check and normalise hyperparameter values against :class:`TrainHParams`' declarations;
    :class:`~ntksearch.validation.ConfigError` on problems."""
    plain = {k: v.item() if isinstance(v, np.generic) else v for k, v in values.items()}
    return check_settings(Node(plain, file, path), TrainHParams)


@dataclass(frozen=True)
class TrainHParams:
    """Hyperparameters of a short confirmation training run.

    Attributes:
      optimizer: a key of :data:`OPTIMIZERS` (sgd, momentum, adam, adamw).
      learning_rate: peak learning rate (> 0).
      weight_decay: L2 coefficient (coupled for sgd/momentum/adam, decoupled for adamw), ≥ 0.
      batch_size: minibatch size (capped at the training-set size; the last incomplete batch is dropped).
      epochs: passes over the training split.
      max_steps: stop after this many optimizer steps (``None``: epochs × steps per epoch).
      grad_clip_norm: clip gradients to this global L2 norm (``None``: no clipping).
      schedule: ``"cosine"`` (decay to 0 over the run) or ``"constant"``.
      warmup_steps: linear warmup from lr/warmup to lr over this many steps.

    Each field is a declared setting (:func:`ntksearch.settings.setting`): construction and :meth:`from_dict`
    validate against the declarations, and a search space's ``train`` section is checked against the same ones
    (:data:`ntksearch.spaces.TRAIN_HYPERPARAMETERS` is derived from them). Errors are
    :class:`~ntksearch.validation.ConfigError`.
    """

    optimizer: str = setting("adam", choices=OPTIMIZERS, doc="optimizer")
    learning_rate: float = setting(1e-3, minimum=0.0, exclusive_minimum=True, doc="peak learning rate")
    weight_decay: float = setting(0.0, minimum=0.0, doc="weight decay coefficient")
    batch_size: int = setting(128, minimum=1, doc="minibatch size")
    epochs: int = setting(5, minimum=1, doc="passes over the training split")
    max_steps: int | None = setting(None, minimum=1, doc="cap on optimizer steps")
    grad_clip_norm: float | None = setting(None, minimum=0.0, exclusive_minimum=True, doc="global gradient-norm clip")
    schedule: str = setting("cosine", choices=SCHEDULES, doc="learning-rate schedule")
    warmup_steps: int = setting(0, minimum=0, doc="linear warmup steps")

    def __post_init__(self) -> None:
        for key, value in _validated(dataclasses.asdict(self), None, "").items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, file: str | Path | None = None,
                  path: str = "") -> TrainHParams:
        """Build from a mapping (a space point's ``train`` dict, a YAML section); missing keys keep defaults.

        ``file`` and ``path`` (the key path of ``values`` in its document) locate errors: unknown keys and bad
        values raise ``ConfigError("<file>: <path.key>: <message>")`` listing what is allowed.
        """
        return cls(**_validated(values, file, path))

    def total_steps(self, n_train: int) -> int:
        """Optimizer steps of a run on ``n_train`` examples: epochs × ⌊n_train / min(batch_size, n_train)⌋ (the last
        incomplete batch is dropped), capped at ``max_steps``."""
        total = self.epochs * (n_train // min(self.batch_size, n_train))
        return total if self.max_steps is None else min(total, self.max_steps)

    def schedule_args(self, total_steps: int) -> ScheduleArgs:
        """The traced scalars for a run of ``total_steps`` optimizer steps."""
        clip = np.inf if self.grad_clip_norm is None else self.grad_clip_norm
        values = (self.learning_rate, self.weight_decay, clip, self.warmup_steps, total_steps)
        return ScheduleArgs(*(jnp.asarray(v, jnp.float32) for v in values))
