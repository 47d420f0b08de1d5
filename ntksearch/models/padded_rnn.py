"""The ``rnn`` family's padded program (see :mod:`ntksearch.models.buckets`).

Bucket: sequence shape (T, F), classes C, the cell, the directions and the slot hidden sizes H_0…H_{L−1}
(static), from the grid: each layer's hidden size rounded up on its own, or (``uniform``) every slot at the
rounded-up largest and L the grid depth of ``layers``. Each gate block of h real units is embedded into
H_l units (the GRU's r|z|n and the LSTM's i|f|g|o blocks each keep their own offset), and every step's hidden
state (and LSTM cell state) is multiplied by the layer's unit mask m_l, so padded units stay 0 and no real
output depends on a padded parameter. Slots l ≥ ``layers`` (uniform buckets only) are bypassed; the head
reads the last step of the forward direction and the first of the backward one, as the stand-alone model.
Only the logits readout is padded (a ``trajectory`` state has the padded hidden size).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ntksearch.models.base import BuiltModel
from ntksearch.models.buckets import Bucketed, BucketGrid, PaddedProgram, runtime, unit_mask
from ntksearch.models.layers import as_sequence, sequence_shape
from ntksearch.models.rnn import CELLS

__all__ = ["PaddedRNN", "pad_rnn"]

Array = jax.Array


def _tanh_step(carry: Array, xw: Array, rec: dict[str, Array], mask: Array) -> Array:
    return jnp.tanh(xw + carry @ rec["kernel"]) * mask


def _gru_step(carry: Array, xw: Array, rec: dict[str, Array], mask: Array) -> Array:
    rx, zx, nx = jnp.split(xw, 3, axis=-1)
    rh, zh, nh = jnp.split(carry @ rec["kernel"] + rec["bias"], 3, axis=-1)
    r_pre, z_pre = rx + rh, zx + zh
    n_pre = nx + jax.nn.sigmoid(r_pre) * nh
    z = jax.nn.sigmoid(z_pre)
    return ((1.0 - z) * jnp.tanh(n_pre) + z * carry) * mask


def _lstm_step(carry: tuple[Array, Array], xw: Array, rec: dict[str, Array], mask: Array
               ) -> tuple[Array, Array]:
    c, h = carry
    i, f, g, o = jnp.split(xw + h @ rec["kernel"], 4, axis=-1)
    c = (jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)) * mask
    return c, jax.nn.sigmoid(o) * jnp.tanh(c) * mask


_STEPS = {"tanh": _tanh_step, "gru": _gru_step, "lstm": _lstm_step}


@dataclass(frozen=True)
class PaddedRNN(PaddedProgram):
    """(N, H, W, C) or (N, T, F) → logits (N, C) of every rnn candidate of one bucket; see the module docstring."""

    input_shape: tuple[int, ...]
    n_classes: int
    cell: str
    directions: int
    hidden: tuple[int, ...]  # H_l of every slot
    optional_from: int  # slots from this one on may be bypassed (uniform buckets: 1; else none may)

    def evaluate(self, params: dict[str, Any], x: Array) -> Array:
        data = runtime(params)
        h = as_sequence(x)
        for i, size in enumerate(self.hidden):
            out = jnp.concatenate([self._run(params["layers"][i][d], data["mask"][i], size, h, reverse=d == 1)
                                   for d in range(self.directions)], axis=-1)
            h = out if i < self.optional_from else jnp.where(data["on"][i] > 0.5, out, h)
        size = self.hidden[-1]
        last = h[:, -1, :size]
        if self.directions == 2:
            last = jnp.concatenate([last, h[:, 0, size:]], axis=-1)
        return last @ params["head"]["kernel"] + params["head"]["bias"]

    def _run(self, cell: dict[str, Any], mask: Array, size: int, xs: Array, *, reverse: bool) -> Array:
        """(N, T, F) → hidden states (N, T, size) in input time order."""
        xw = (xs @ cell["inp"]["kernel"] + cell["inp"]["bias"]).swapaxes(0, 1)
        zeros = jnp.zeros((xs.shape[0], size), xw.dtype)
        step = _STEPS[self.cell]

        def scan_step(carry: Any, xw_t: Array) -> tuple[Any, Array]:
            carry = step(carry, xw_t, cell["rec"], mask)
            return carry, carry[1] if self.cell == "lstm" else carry

        _, hs = jax.lax.scan(scan_step, (zeros, zeros) if self.cell == "lstm" else zeros, xw, reverse=reverse)
        return hs.swapaxes(0, 1)


def _embed_blocks(value: np.ndarray, row_blocks: tuple[int, int, int], col_blocks: tuple[int, int, int]
                  ) -> np.ndarray:
    """A (rows, cols) matrix (or (cols,) vector) of ``count`` row/column blocks of ``real`` entries each,
    written block by block into zeros of ``count`` blocks of ``padded`` entries: blocks = (count, real, padded)."""
    value = np.asarray(value)
    if value.ndim == 1:
        return _embed_blocks(value[None], (1, 1, 1), col_blocks)[0]

    (rn, rr, rp), (cn, cr, cp) = row_blocks, col_blocks
    out = np.zeros((rn * rp, cn * cp), value.dtype)
    for a, b in itertools.product(range(rn), range(cn)):
        out[a * rp: a * rp + rr, b * cp: b * cp + cr] = value[a * rr: (a + 1) * rr, b * cr: (b + 1) * cr]
    return out


def _cell_params(cell: Any, kind: str, rows: tuple[int, int, int], hidden: int, size: int, dtype: Any
                 ) -> dict[str, Any]:
    """One direction's padded parameters: the real ``cell`` state (None: a bypassed slot, zeros) with input
    row blocks ``rows`` = (count, real, padded) and gate blocks of ``hidden`` real units in ``size``."""
    gates = CELLS[kind].n_gates
    names = [("inp", "kernel", rows), ("inp", "bias", (1, 1, 1)), ("rec", "kernel", (1, hidden, size))]
    if kind == "gru":
        names.append(("rec", "bias", (1, 1, 1)))
    out: dict[str, Any] = {"inp": {}, "rec": {}}
    for module, name, row_blocks in names:
        shape = (row_blocks[0] * row_blocks[2], gates * size) if name == "kernel" else (gates * size,)
        out[module][name] = (np.zeros(shape, dtype) if cell is None
                             else _embed_blocks(cell[module][name][...], row_blocks, (gates, hidden, size)))
    return out


def pad_rnn(built: BuiltModel, grid: BucketGrid) -> Bucketed | None:
    """The rnn candidate ``built`` inside its bucket."""
    arch = built.point
    hidden, depth = list(arch["hidden"]), int(arch["layers"])
    directions = 2 if arch["bidirectional"] else 1
    slots = ([grid.width(max(hidden))] * grid.depth(depth) if grid.uniform else [grid.width(h) for h in hidden])
    program = PaddedRNN(built.input_shape, built.n_classes, arch["cell"], directions, tuple(slots),
                        1 if grid.uniform else len(slots))
    _, n_features = sequence_shape("rnn", built.input_shape)
    real = built.params
    dtype = np.asarray(real["head"]["kernel"][...]).dtype
    layers = []
    for i, size in enumerate(slots):
        # input rows: the features (one block), or the previous slot's directions × hidden blocks
        real_in = (1, n_features, n_features) if i == 0 else (
            directions, hidden[i - 1] if i - 1 < depth else 0, slots[i - 1])
        h = hidden[i] if i < depth else 0
        cells = [_cell_params(real["layers"][i][d] if i < depth else None, arch["cell"], real_in, h, size, dtype)
                 for d in range(directions)]
        layers.append(cells)
    head_rows = (directions, hidden[-1], slots[-1])
    params = {
        "layers": layers,
        "head": {"kernel": _embed_blocks(real["head"]["kernel"][...], head_rows, (1, built.n_classes, built.n_classes)),
                 "bias": np.asarray(real["head"]["bias"][...])},
        "runtime": {"mask": [unit_mask(hidden[i] if i < depth else 0, s, dtype) for i, s in enumerate(slots)],
                    "on": (np.arange(len(slots)) < depth).astype(dtype)},
    }
    return Bucketed(program, jax.tree.map(jnp.asarray, params))
