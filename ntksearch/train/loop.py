"""Short confirmation training of a built model with optax: minibatch training, per-epoch validation.

The loss is the mean softmax cross-entropy of the logits, ``L(θ) = (1/B) Σᵢ −log softmax(f(θ, xᵢ))_{yᵢ}``,
computed with the model's training-mode ``train_apply_fn(params, x, key)``; evaluation uses the deterministic
``apply_fn(params, x)``.

Compilation is shared: the train step is one module-level :func:`jax.jit` function whose static arguments are
``train_apply_fn`` and the optimizer and schedule names, everything else (learning rate, weight decay, clip
norm, warmup, step counts, the parameters) is traced. ``apply_fn`` objects of identical architectures are
equal and hash alike (docs/architecture.md), so training a second candidate of the same architecture and data
shapes reuses the compiled step. The training split lives on the device for the whole run; each step gathers
its minibatch there from a per-epoch permutation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntksearch.data import Dataset, subsample
from ntksearch.train.hparams import SCHEDULES, ScheduleArgs, TrainHParams, make_transform

__all__ = ["DIVERGENCE_FACTOR", "TrainResult", "TrainableModel", "train_model"]

Array = jax.Array
Params = Any

DIVERGENCE_FACTOR = 1e3
"""A run has diverged when a training loss is non-finite or exceeds this multiple of the first step's loss."""

_CHECK_EVERY = 25   # steps between divergence checks (each check waits for the device)
_EVAL_CHUNK = 1000  # examples per evaluation call; the last chunk is padded, so one shape compiles


class TrainableModel(Protocol):
    """The part of ``ntksearch.models.BuiltModel`` that training uses."""

    apply_fn: Callable[[Params, Array], Array]              # (params, x) -> logits (N, C), eval mode
    train_apply_fn: Callable[[Params, Array, Array], Array]  # (params, x, key) -> logits, training mode
    params: Params


@dataclass(frozen=True, eq=False)
class TrainResult:
    """Outcome of :func:`train_model`.

    Attributes:
      val_accuracy, val_loss: of the final parameters (a model with non-finite logits scores 0 accuracy).
      test_accuracy: of the final parameters, ``None`` unless ``eval_test``.
      history: one dict per (possibly partial) epoch: ``epoch`` (1-based), ``step`` (optimizer steps so far),
        ``train_loss`` (mean over the epoch's steps), ``val_loss``, ``val_accuracy``, ``seconds`` (since
        the call, set-up and compilation included).
      diverged: the loss became non-finite or exploded; training stopped early.
      steps: optimizer steps taken. seconds: wall time of the whole run.
      params: the final parameters.
    """

    val_accuracy: float
    val_loss: float
    test_accuracy: float | None
    history: list[dict[str, float]]
    diverged: bool
    steps: int
    seconds: float
    params: Params = field(repr=False)


class _State(NamedTuple):
    params: Params
    opt_state: optax.OptState
    step: Array  # int32 scalar: optimizer steps taken


@partial(jax.jit, static_argnames=("train_apply_fn", "optimizer", "schedule"), donate_argnames=("state",))
def _train_step(train_apply_fn: Callable[[Params, Array, Array], Array], optimizer: str, schedule: str,
                state: _State, batches: Array, i: Array, *, args: ScheduleArgs, x_all: Array, y_all: Array,
                key: Array) -> tuple[_State, Array]:
    """One optimizer step on minibatch ``batches[i]`` of the device-resident training split.

    Args:
      x_all: (N, ...) inputs; y_all: (N,) labels; batches: (steps_per_epoch, B) indices into them.
      key: the run's dropout key, folded with the step number.
    Returns: the new state and the minibatch loss before the update.
    """
    idx = batches[i]
    x, y = x_all[idx], y_all[idx]
    step_key = jax.random.fold_in(key, state.step)

    def loss_fn(params: Params) -> Array:
        logits = train_apply_fn(params, x, step_key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    transform = make_transform(optimizer, args, SCHEDULES[schedule](state.step, args))
    updates, opt_state = transform.update(grads, state.opt_state, state.params)
    return _State(optax.apply_updates(state.params, updates), opt_state, state.step + 1), loss


@partial(jax.jit, static_argnames=("apply_fn",))
def _eval_chunk(apply_fn: Callable[[Params, Array], Array], params: Params, x: Array, y: Array,
                mask: Array) -> tuple[Array, Array]:
    """Summed cross-entropy and number of correct predictions over the rows of ``x`` where ``mask``."""
    logits = apply_fn(params, x)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    correct = (jnp.argmax(logits, axis=-1) == y) & jnp.all(jnp.isfinite(logits), axis=-1)
    return jnp.sum(jnp.where(mask, losses, 0.0)), jnp.sum(correct & mask)


class _EvalSet(NamedTuple):
    """An evaluation split on the device, padded to whole chunks: x (k, chunk, ...), y and mask (k, chunk)."""

    x: Array
    y: Array
    mask: Array
    n: int


def _eval_set(x: np.ndarray, y: np.ndarray) -> _EvalSet:
    chunk = min(_EVAL_CHUNK, len(y))
    k = -(-len(y) // chunk)
    pad = k * chunk - len(y)
    xs = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]).reshape(k, chunk, *x.shape[1:])
    ys = np.concatenate([y, np.zeros(pad, y.dtype)]).reshape(k, chunk)
    mask = (np.arange(k * chunk) < len(y)).reshape(k, chunk)
    return _EvalSet(jnp.asarray(xs), jnp.asarray(ys), jnp.asarray(mask), len(y))


def _evaluate(apply_fn: Callable[[Params, Array], Array], params: Params,
              data: _EvalSet) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``apply_fn`` on an evaluation split."""
    totals = [_eval_chunk(apply_fn, params, data.x[j], data.y[j], data.mask[j]) for j in range(len(data.y))]
    loss, correct = np.sum(np.asarray(jax.device_get(totals), dtype=np.float64), axis=0)
    return float(loss / data.n), float(correct / data.n)


def _run_epoch(step_fn: Callable[[_State, Array, int], tuple[_State, Array]], state: _State, batches: Array,
               n_steps: int, initial: float | None) -> tuple[_State, np.ndarray, bool]:
    """Run ``n_steps`` steps over ``batches``, checking for divergence every :data:`_CHECK_EVERY` steps.

    ``initial`` is the run's first loss (``None`` before the first step). Returns the state, the losses of
    the steps taken (stopping after the check that found divergence) and whether the run diverged.
    """
    pending: list[Array] = []
    fetched: list[np.ndarray] = []
    for i in range(n_steps):
        state, loss = step_fn(state, batches, i)
        pending.append(loss)
        if len(pending) == _CHECK_EVERY or i == n_steps - 1:
            recent = np.asarray(jax.device_get(pending), dtype=np.float64)
            fetched.append(recent)
            pending = []
            initial = recent[0] if initial is None else initial
            if not np.all(np.isfinite(recent)) or np.any(recent > DIVERGENCE_FACTOR * initial):
                return state, np.concatenate(fetched), True
    return state, np.concatenate(fetched), False


def train_model(built: TrainableModel, dataset: Dataset, hparams: TrainHParams, *, key: Array,
                eval_test: bool = False, max_train_examples: int | None = None,
                on_epoch: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Train ``built`` on ``dataset.x_train`` with ``hparams`` and validate after every epoch.

    Minibatches of ``min(batch_size, N)`` examples are drawn without replacement from a permutation of the
    training split per epoch (``key``); the last incomplete batch is dropped. Training stops after
    ``epochs`` epochs, at ``max_steps``, or when the loss diverges (non-finite, or above
    :data:`DIVERGENCE_FACTOR` × the first loss; checked every few steps), which is reported as
    ``diverged=True``, never raised. ``built.params`` are copied, not modified.

    Args:
      built: a ``BuiltModel`` (only ``apply_fn``, ``train_apply_fn`` and ``params`` are used).
      key: PRNG key for the minibatch order and the training-mode randomness (dropout).
      eval_test: also report the accuracy on the test split.
      max_train_examples: train on a stratified, deterministic subset of at most this many examples.
      on_epoch: called after every epoch with its ``history`` entry; it may raise to stop the run (a pruner's
        ``optuna.TrialPruned``, a time budget), and the exception propagates to the caller.
    """
    start = time.perf_counter()
    if max_train_examples is not None:
        dataset = subsample(dataset, max_train=max_train_examples)
    if eval_test and len(dataset.y_test) == 0:
        raise ValueError(f"eval_test=True but dataset {dataset.name} has an empty test split")
    n = len(dataset.y_train)
    batch = min(hparams.batch_size, n)
    per_epoch = n // batch
    total = hparams.total_steps(n)
    args = hparams.schedule_args(total)
    x_all, y_all = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    val = _eval_set(dataset.x_val, dataset.y_val)
    params = jax.tree.map(jnp.array, built.params)  # a copy: the train step donates its state
    state = _State(params, make_transform(hparams.optimizer, args, args.learning_rate).init(params),
                   jnp.zeros((), jnp.int32))
    shuffle_key, dropout_key = jax.random.split(key)
    step_fn = partial(_train_step, built.train_apply_fn, hparams.optimizer, hparams.schedule,
                      args=args, x_all=x_all, y_all=y_all, key=dropout_key)

    history: list[dict[str, float]] = []
    steps, initial, diverged = 0, None, False
    for epoch in range(hparams.epochs):
        order = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
        batches = order[: per_epoch * batch].reshape(per_epoch, batch)
        state, losses, diverged = _run_epoch(step_fn, state, batches, min(per_epoch, total - steps), initial)
        steps += len(losses)
        initial = losses[0] if initial is None else initial
        val_loss, val_accuracy = _evaluate(built.apply_fn, state.params, val)
        history.append({"epoch": epoch + 1, "step": steps, "train_loss": float(np.mean(losses)),
                        "val_loss": val_loss, "val_accuracy": val_accuracy,
                        "seconds": time.perf_counter() - start})
        if on_epoch is not None:
            on_epoch(history[-1])
        if diverged or steps >= total:
            break
    test_accuracy = None
    if eval_test:
        test_accuracy = _evaluate(built.apply_fn, state.params, _eval_set(dataset.x_test, dataset.y_test))[1]
    return TrainResult(val_accuracy=history[-1]["val_accuracy"], val_loss=history[-1]["val_loss"],
                       test_accuracy=test_accuracy, history=history, diverged=diverged, steps=steps,
                       seconds=time.perf_counter() - start, params=state.params)
