"""``rnn``: stacked (optionally bidirectional) recurrent layers reading (H, W, C) images row by row.

Inputs become sequences (N, T, F) (T = H rows of F = W·C features; (T, F) inputs as they are). Layer l runs
``hidden[l]`` units of the ``cell`` (tanh, GRU or LSTM, :data:`CELLS`) forward, and with ``bidirectional``
also backward, concatenating both directions' outputs; dropout between layers in training mode. The
recursion is a ``jax.lax.scan`` (input projections for all steps hoisted out of it), so every function works
under ``jit``/``jvp``/``vjp``.

Readout: the logits come from the last step's hidden state (for the backward direction, the state after
reading the whole sequence, at t = 0) through a linear head. With ``readout: trajectory`` the NTK state
(``state_fn``) is the last layer's whole hidden trajectory (N, T, hidden · directions) instead of the
logits; ``apply_fn`` still returns the logits. ``features_fn`` gives, per layer and direction, the gate
pre-activations of every step (N, T, ·): the tanh input (tanh cell), r/z/n (GRU), i/f/g/o and the new cell
state (LSTM); feature taps (:class:`~ntksearch.models.layers.Ctx`) are added to them inside the recursion. The
blocks are the input sequence and each layer's output (N, T, hidden · directions).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from ntksearch.models.base import FamilyModel, family_builder
from ntksearch.models.hyper import Hyper
from ntksearch.models.layers import (
    DROPOUT,
    INIT,
    INIT_SCALE,
    Ctx,
    VarianceScaling,
    as_sequence,
    dense,
    make_init,
    sequence_shape,
    tapped,
)

__all__ = ["CELLS", "HYPERPARAMETERS", "READOUTS", "RNN", "build"]

Array = jax.Array


class _Cell(nnx.Module):
    """A recurrent cell: gates = W x_t + U h_{t-1} (+ b), ``n_gates`` blocks of ``hidden`` units."""

    n_gates: ClassVar[int] = 1
    recurrent_bias: ClassVar[bool] = False

    def __init__(self, n_in: int, hidden: int, init: VarianceScaling, rngs: nnx.Rngs):
        self.inp = dense(n_in, self.n_gates * hidden, init, rngs)
        self.rec = dense(hidden, self.n_gates * hidden, init, rngs, use_bias=self.recurrent_bias)
        self.hidden = hidden

    def initial(self, n: int, dtype: Any) -> Any:
        """The zero carry for a batch of n."""
        return jnp.zeros((n, self.hidden), dtype)

    def update(self, carry: Any, xw: Array, tap: Array | None) -> tuple[Any, Array, Array]:
        """One step from the projected input xw (N, G·H) → (carry, h (N, H), pre-activations (N, ·)).

        ``tap`` (N, ·), when given, is added to the step's pre-activations before their nonlinearities.
        """
        raise NotImplementedError

    def run(self, xs: Array, ctx: Ctx, *, reverse: bool) -> Array:
        """(N, T, F) → hidden states (N, T, H) in input time order; records the pre-activations (N, T, ·)."""
        xw = self.inp(xs).swapaxes(0, 1)  # (T, N, G·H)
        tap = ctx.feature_tap()

        def step(carry: Any, inputs: tuple[Array, Array | None]) -> tuple[Any, tuple[Array, Array]]:
            carry, h, pre = self.update(carry, *inputs)
            return carry, (h, pre)

        steps = (xw, None if tap is None else tap.swapaxes(0, 1))
        _, (hs, pres) = jax.lax.scan(step, self.initial(xs.shape[0], xw.dtype), steps, reverse=reverse)
        ctx.keep(pres.swapaxes(0, 1))
        return hs.swapaxes(0, 1)


def _split_tap(tap: Array | None, sizes: tuple[int, ...]) -> list[Array | None]:
    """A step's tap cut into the pieces of its pre-activations (Nones without a tap)."""
    if tap is None:
        return [None] * len(sizes)
    return jnp.split(tap, list(itertools.accumulate(sizes[:-1])), axis=-1)


class TanhCell(_Cell):
    """h' = tanh(W x + U h + b)."""

    def update(self, carry: Array, xw: Array, tap: Array | None) -> tuple[Array, Array, Array]:
        pre = tapped(xw + self.rec(carry), tap)
        h = jnp.tanh(pre)
        return h, h, pre


class GRUCell(_Cell):
    """r, z = σ(·), n = tanh(W_n x + r ⊙ (U_n h + b_n)), h' = (1 − z) ⊙ n + z ⊙ h."""

    n_gates = 3
    recurrent_bias = True

    def update(self, carry: Array, xw: Array, tap: Array | None) -> tuple[Array, Array, Array]:
        rx, zx, nx = jnp.split(xw, 3, axis=-1)
        rh, zh, nh = jnp.split(self.rec(carry), 3, axis=-1)
        r_tap, z_tap, n_tap = _split_tap(tap, (self.hidden,) * 3)
        r_pre, z_pre = tapped(rx + rh, r_tap), tapped(zx + zh, z_tap)
        n_pre = tapped(nx + jax.nn.sigmoid(r_pre) * nh, n_tap)
        z = jax.nn.sigmoid(z_pre)
        h = (1.0 - z) * jnp.tanh(n_pre) + z * carry
        return h, h, jnp.concatenate([r_pre, z_pre, n_pre], axis=-1)


class LSTMCell(_Cell):
    """i, f, o = σ(·), g = tanh(·), c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c'); carry (c, h)."""

    n_gates = 4

    def initial(self, n: int, dtype: Any) -> tuple[Array, Array]:
        zeros = jnp.zeros((n, self.hidden), dtype)
        return zeros, zeros

    def update(self, carry: tuple[Array, Array], xw: Array, tap: Array | None
               ) -> tuple[tuple[Array, Array], Array, Array]:
        c, h = carry
        gates_tap, c_tap = _split_tap(tap, (4 * self.hidden, self.hidden))
        gates = tapped(xw + self.rec(h), gates_tap)
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = tapped(jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g), c_tap)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h, jnp.concatenate([gates, c], axis=-1)


CELLS: dict[str, type[_Cell]] = {"tanh": TanhCell, "gru": GRUCell, "lstm": LSTMCell}
READOUTS = ("last", "trajectory")

HYPERPARAMETERS: dict[str, Hyper] = {
    "cell": Hyper("name", "gru", "recurrent cell", names=tuple(CELLS)),
    "layers": Hyper("int", 1, "stacked recurrent layers", low=1, high=8),
    "hidden": Hyper("int", 64, "hidden units of each layer (per direction)", low=1, high=4096, per="layers"),
    "bidirectional": Hyper("bool", False, "also read each sequence backwards"),
    "readout": Hyper("name", "last", "NTK state: the logits (last) or the hidden trajectory", names=READOUTS),
    "dropout": DROPOUT,
    "init": INIT,
    "init_scale": INIT_SCALE,
}


class RNN(FamilyModel):
    """(N, H, W, C) or (N, T, F) → logits (N, n_classes); see the module docstring."""

    def __init__(self, arch: Mapping[str, Any], input_shape: tuple[int, ...], n_classes: int, *,
                 rngs: nnx.Rngs):
        _, n_in = sequence_shape("rnn", input_shape)
        init = make_init(arch["init"], arch["init_scale"])
        cell = CELLS[arch["cell"]]
        directions = 2 if arch["bidirectional"] else 1
        layers = []
        for hidden in arch["hidden"]:
            layers.append(nnx.List([cell(n_in, hidden, init, rngs) for _ in range(directions)]))
            n_in = directions * hidden
        self.layers = nnx.List(layers)
        self.head = dense(n_in, n_classes, init, rngs)
        self.last_hidden = arch["hidden"][-1]
        self.dropout = float(arch["dropout"])
        self.separate_state = arch["readout"] == "trajectory"

    def trajectory(self, x: Array, ctx: Ctx) -> Array:
        """Hidden states of the last layer, (N, T, hidden · directions)."""
        h = ctx.block(as_sequence(x))
        for i, layer in enumerate(self.layers):
            if i:
                h = ctx.dropout(h, self.dropout)
            h = ctx.block(jnp.concatenate([cell.run(h, ctx, reverse=d == 1) for d, cell in enumerate(layer)],
                                          axis=-1))
        return h

    def __call__(self, x: Array, ctx: Ctx | None = None) -> Array:
        ctx = ctx or Ctx()
        hs = self.trajectory(x, ctx)
        last = hs[:, -1, : self.last_hidden]
        if hs.shape[-1] > self.last_hidden:  # bidirectional: the backward pass ends at t = 0
            last = jnp.concatenate([last, hs[:, 0, self.last_hidden :]], axis=-1)
        return self.head(ctx.dropout(last, self.dropout))

    def state(self, x: Array) -> Array:
        return self.trajectory(x, Ctx()) if self.separate_state else self(x)


build = family_builder("rnn", RNN, HYPERPARAMETERS)
