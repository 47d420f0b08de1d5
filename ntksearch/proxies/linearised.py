r"""Linearised-training proxies: what the network, linearised at its initialisation, reaches when trained.

* ``lin_train_loss`` = ‖r_t‖²/(2N), the linearised network's MSE on the scoring batch A after t steps (sign −1);
* ``lin_val_loss`` = ‖f_t(B) − Y_B‖²/(2M) on a held-out batch B (sign −1);
* ``lin_val_accuracy``, its accuracy on B (sign +1);
* ``ntk_complexity`` = r₀ᵀ(K_AA + ρI)⁻¹r₀/N, the NTK generalisation measure of Arora et al. (ICML 2019), smaller
  meaning a target the kernel fits with less norm (sign −1).

All four come from one Lanczos run on the NTK of the logits (:func:`ntksearch.ntk.linearised_metrics`, whose
docstring has the definitions); their standard errors are its error indicators. The held-out batch is part of
:class:`~ntksearch.proxies.ProxyInputs` (``x_val``, ``y_val``): a search draws it from the validation split
(class-balanced, seeded, ``scoring.linearised.val_batch_size`` examples); without it the two held-out proxies
are unavailable and the other two are still computed.

**Which hyperparameters the score sees** (:func:`options_for_training`, applied by a search to every candidate
unless ``scoring.linearised.from_training`` is false):

* the architecture and its initialisation, ``init_scale`` included: through θ₀, hence f₀, K_AA and K_BA;
* the learning rate of ``sgd`` and ``momentum``: a number lr becomes η = lr/C. Confirmation training minimises
  softmax cross-entropy, whose Hessian in one example's logits at the uniform initial prediction is
  (1/C)(I − 𝟙𝟙ᵀ/C): gradient descent with step lr on it moves the logits like gradient descent with step lr/C
  on the MSE loss of the definitions (the same factor separates the stable rates 2NC/λ_max and 2N/λ_max). ``auto``
  stays ``auto`` (η = lr_fraction · 2N/λ_max, the time scale of confirmation's lr_fraction · 2NC/λ_max);
* ``momentum``'s heavy-ball coefficient (0.9, :data:`ntksearch.train.hparams.MOMENTUM`), modelled exactly;
* the number of steps: t = Σ_s lr_s/lr over the optimizer steps of the confirmation run (epochs × ⌊n/batch⌋ on
  its n training examples, capped at ``max_steps``): the constant-rate steps that move the linearised model as
  far as the schedule does (exact in the small-step limit, where gradient descent is gradient flow for time
  Σ_s η_s/N); about half the steps under the default cosine decay. ``epochs``, ``batch_size``, ``max_steps``,
  ``schedule`` and ``warmup_steps`` enter only this way.

What it cannot see: **adaptive optimizers** (``adam``, ``adamw``) normalise every parameter's step by running
gradient moments, so their learning rate has no fixed counterpart in the NTK's time: their candidates get the
configured ``learning_rate`` (default ``auto``, the lr_fraction rule), and two Adam learning rates score alike.
**Weight decay** pulls θ towards 0, not θ₀, and is ignored (it matters once wd · Σ_s lr_s is not small).
**Minibatch noise** (the linearised model takes full-batch steps on A; the batch size only sets the number of
steps), gradient clipping, dropout (the NTK is taken in evaluation mode) and the cross-entropy's curvature
beyond initialisation (the definitions use MSE) are not modelled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from ntksearch.ntk.linearised import linearised_metrics
from ntksearch.proxies.registry import LinearisedOptions, Proxy, ProxyInputs, ProxyValue, register_group
from ntksearch.train.hparams import MOMENTUM, SCHEDULES, ScheduleArgs, TrainHParams

__all__ = ["GRADIENT_DESCENT", "options_for_training", "schedule_steps"]

GRADIENT_DESCENT = {"sgd": 0.0, "momentum": MOMENTUM}  # optimizers the linearised dynamics model: heavy-ball β
_NAMES = {"train_loss": "lin_train_loss", "val_loss": "lin_val_loss", "val_accuracy": "lin_val_accuracy",
          "complexity": "ntk_complexity"}


def schedule_steps(train: Mapping[str, Any], train_size: int) -> int:
    """t = round(Σ_s lr_s / lr) over the optimizer steps of a training run with hyperparameters ``train`` (a
    space point's ``train`` dict; ``learning_rate`` may be ``auto``) on ``train_size`` examples, at least 1."""
    hparams = TrainHParams.from_dict({**train, "learning_rate": 1.0})  # the schedule's shape does not depend on lr
    total = hparams.total_steps(train_size)
    return max(1, round(float(_schedule_sum(hparams.schedule, total, hparams.schedule_args(total)))))


@partial(jax.jit, static_argnums=(0, 1))
def _schedule_sum(schedule: str, total: int, args: ScheduleArgs) -> jax.Array:
    """Σ_s lr_s over ``total`` steps, one compiled program per (schedule, total) instead of one per operation."""
    return jnp.sum(SCHEDULES[schedule](jnp.arange(total, dtype=jnp.float32), args))


def options_for_training(train: Mapping[str, Any], options: LinearisedOptions, *, n_classes: int,
                         train_size: int | None) -> LinearisedOptions:
    """The linearised setting of a candidate trained with ``train`` (module docstring): η = lr/C (or ``auto``)
    and its momentum for ``sgd``/``momentum``, the configured learning rate otherwise; t from the schedule
    when ``train_size`` (the confirmation's training examples) is known, the configured steps otherwise."""
    changes: dict[str, Any] = {}
    optimizer = train.get("optimizer", TrainHParams.optimizer)
    if optimizer in GRADIENT_DESCENT:
        rate = train.get("learning_rate", TrainHParams.learning_rate)
        changes = {"learning_rate": rate if rate == "auto" else float(rate) / n_classes,
                   "momentum": GRADIENT_DESCENT[optimizer]}
    if train_size is not None:
        changes["steps"] = schedule_steps(train, train_size)
    return dataclasses.replace(options, **changes)


def linearised_group(inputs: ProxyInputs, done: Mapping[str, ProxyValue]) -> dict[str, ProxyValue]:
    del done
    held_out = inputs.x_val is not None and inputs.y_val is not None
    result = linearised_metrics(inputs.apply_fn, inputs.params, inputs.x, inputs.y,
                                inputs.x_val if held_out else None, inputs.y_val if held_out else None,
                                key=jax.random.fold_in(inputs.key, 5), **inputs.linearised.lanczos_arguments())
    return {_NAMES[q]: ProxyValue(e.value, e.stderr) for q, e in result.items()}


register_group("linearised", linearised_group, [
    Proxy("lin_train_loss", "linearised", "linearised network's training MSE after t GD steps", -1),
    Proxy("lin_val_loss", "linearised", "linearised network's held-out MSE after t GD steps", -1,
          requires=("x_val", "y_val")),
    Proxy("lin_val_accuracy", "linearised", "linearised network's held-out accuracy after t GD steps", +1,
          requires=("x_val", "y_val")),
    Proxy("ntk_complexity", "linearised", "r₀ᵀ(K + ρI)⁻¹r₀/N, NTK generalisation measure (Arora et al. 2019)", -1),
])
