"""AZ-NAS (Lee & Ham, CVPR 2024, "AZ-NAS: Assembling Zero-Cost Proxies for Network Architecture Search").

Four per-candidate terms, checked against the authors' public code (cvlab-yonsei/AZ-NAS,
``NB201/ZeroShotProxy/compute_az_nas_score.py``, and ``ImageNet_AutoFormer/.../az_nas.py`` for token
features), all read with larger = better, and the population-level aggregation :func:`az_nas_rank_score`.

The terms read the candidate's block outputs h_0, …, h_B (``probe_fn``'s ``blocks``, each (N, *positions, C)):
the authors take NB201's stem output and every cell's output (ours: the same for ``nb201``), MobileNet
blocks' outputs, and a transformer's residual stream after every attention and MLP sub-layer (ours: the same
for ``transformer``). Deviation for the families without a stem (``mlp``, ``cnn``, ``rnn``): h_0 is the model
input, so that a one-block network still has one block map to score; its expressivity is the same constant
for every candidate on one batch, so it shifts ``az_expressivity`` without changing its ranking.

* ``az_expressivity`` = Σ_b H(h_b), with H the entropy of the normalised eigenvalues s/Σs of the channel
  covariance Σ = F̃ᵀF̃/M of F (M = N·positions rows, C channels) centred over rows: H = −Σ_i p_i log(p_i + 1e-8).
  (Computed from the smaller of F̃ᵀF̃ and F̃F̃ᵀ, whose nonzero eigenvalues agree.)
* ``az_progressivity`` = min_b [H(h_b) − H(h_{b−1})].
* ``az_trainability`` = mean over block maps b = 1..B of 2 − σ_b − 1/(σ_b + 1e-6), σ_b the largest singular
  value of A_b = G_inᵀ G_out / M_out, where G_out (Rademacher, the shape of h_b) is pushed back through block b
  alone (``Taps.blocks``) to G_in = (∂h_b/∂h_{b−1})ᵀ G_out; rows are positions × batch. When block b shrinks the
  grid by s per axis, G_in's s × s neighbourhoods (s for 1-D sequences) are stacked into channels (PyTorch's
  ``pixel_unshuffle``); our SAME-padded odd sizes are first zero-padded at the end to a multiple of s (the
  authors' grids always divide). A block
  that is the identity (G_in = G_out) scores −∞, as the authors'. One Rademacher draw, as the authors: the
  standard error is not estimated (reported 0).
* ``az_complexity`` = the counted forward FLOPs of one example (the authors take FLOPs from the benchmark API).

Non-finite expressivity, progressivity or trainability values become −∞, as in the authors' code. Deviation:
the candidate's own initialisation on the scoring batch (the authors re-initialise with Kaiming-normal
fan-in weights and feed Gaussian noise), like every other proxy here. ``az_nas`` itself is a rank aggregate over
a population of candidates and is not a per-candidate proxy: see :func:`az_nas_rank_score`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.stats
from threadpoolctl import threadpool_limits

from ntksearch.models.base import Taps
from ntksearch.ntk.estimators import host_rng
from ntksearch.ntk.operator import Array, Params
from ntksearch.proxies.registry import Proxy, ProxyInputs, ProxyValue, register_group

__all__ = ["AZ_NAS_TERMS", "az_nas_rank_score", "az_terms", "block_entropy", "trainability_term"]

AZ_NAS_TERMS = ("az_expressivity", "az_progressivity", "az_trainability", "az_complexity")


def _rows(h: Array) -> Array:
    """(N, *positions, C) → (N·positions, C)."""
    return h.reshape(-1, h.shape[-1])


def _centred_gram(h: Array) -> Array:
    """The smaller of F̃ᵀF̃/M (C × C) and F̃F̃ᵀ/M (M × M) for F = rows of h, centred over rows."""
    rows = _rows(h)
    rows = rows - rows.mean(axis=0)
    return (rows.T @ rows if rows.shape[1] <= rows.shape[0] else rows @ rows.T) / rows.shape[0]


def _stack_neighbourhoods(g: Array, grid: tuple[int, ...]) -> Array:
    """(N, *positions, C) → (N, *grid, C·Π s_k), s_k = ⌈positions_k / grid_k⌉ (``pixel_unshuffle``, any rank).

    Each axis is first zero-padded at its end to s_k · grid_k (SAME padding adds its odd pixel at the end).
    """
    n, c, rank = g.shape[0], g.shape[-1], len(grid)
    strides = [math.ceil(size / out) for size, out in zip(g.shape[1:-1], grid, strict=True)]
    g = jnp.pad(g, [(0, 0), *((0, s * out - size) for s, out, size in zip(strides, grid, g.shape[1:-1],
                                                                       strict=True)), (0, 0)])
    g = g.reshape(n, *[d for out, s in zip(grid, strides, strict=True) for d in (out, s)], c)
    order = [0, *range(1, 2 * rank, 2), 2 * rank + 1, *range(2, 2 * rank + 1, 2)]
    return g.transpose(order).reshape(n, *grid, c * math.prod(strides))


def _block_cross(g_in: Array, g_out: Array) -> Array:
    """A = G_inᵀ G_out / M over matching rows (positions × batch), G_in's grid folded to G_out's first."""
    if g_in.shape[1:-1] != g_out.shape[1:-1]:
        if g_in.ndim != g_out.ndim:
            raise ValueError(f"block map {g_in.shape} → {g_out.shape}: a grid may shrink, not change its rank")
        g_in = _stack_neighbourhoods(g_in, g_out.shape[1:-1])
    rows_out = _rows(g_out)
    return _rows(g_in).T @ rows_out / rows_out.shape[0]


@partial(jax.jit, static_argnums=0)
def _block_statistics(probe_fn, params: Params, x: Array, probes: list[Array]
                      ) -> tuple[list[Array], list[Array], list[Array]]:
    """Per-block Grams, per-block-map cross matrices A_b and identity flags; ``probes`` = G_out of blocks 1..B."""
    shapes = jax.eval_shape(probe_fn, params, x).blocks
    zeros = [jnp.zeros(s.shape, s.dtype) for s in shapes]

    def pairing(taps: list[Array]) -> tuple[Array, list[Array]]:
        blocks = probe_fn(params, x, Taps(blocks=taps)).blocks
        return sum((jnp.vdot(g, h) for g, h in zip(probes, blocks[1:], strict=True)), jnp.zeros(())), blocks

    pulled, blocks = jax.grad(pairing, has_aux=True)(zeros)
    crosses = [_block_cross(g_in, g_out) for g_in, g_out in zip(pulled[:-1], probes, strict=True)]
    identity = [jnp.array_equal(g_in, g_out) if g_in.shape == g_out.shape else jnp.array(False)
                for g_in, g_out in zip(pulled[:-1], probes, strict=True)]
    return [_centred_gram(h) for h in blocks], crosses, identity


def _rademacher_probes(probe_fn, params: Params, x: Array, key: Array) -> list[np.ndarray]:
    """±1 arrays shaped like blocks 1..B, drawn on the host (XLA's threefry on large shapes compiles slowly)."""
    rng = host_rng(key)
    shapes = jax.eval_shape(probe_fn, params, x).blocks[1:]
    return [(2 * rng.integers(0, 2, size=s.shape, dtype=np.int8) - 1).astype(s.dtype) for s in shapes]


def block_entropy(gram: np.ndarray) -> float:
    """−Σ p log(p + 1e-8), p = s/Σs, s the eigenvalues of a (covariance) Gram matrix."""
    s = scipy.linalg.eigvalsh(np.asarray(gram, np.float64))
    p = s / s.sum()
    return float(-np.sum(p * np.log(p + 1e-8)))


def trainability_term(cross: np.ndarray) -> float:
    """2 − σ − 1/(σ + 1e-6), σ the largest singular value of ``cross``."""
    a = np.asarray(cross, np.float64)
    small = a.T @ a if a.shape[1] <= a.shape[0] else a @ a.T
    top = scipy.linalg.eigvalsh(small, subset_by_index=[len(small) - 1, len(small) - 1])[0]
    sigma = math.sqrt(max(top, 0.0))
    return -sigma - 1.0 / (sigma + 1e-6) + 2.0


def az_terms(grams: list[np.ndarray], crosses: list[np.ndarray], identity: list[bool]) -> dict[str, float]:
    """Expressivity, progressivity and trainability from per-block Grams and per-block-map cross matrices."""
    entropies = np.array([block_entropy(g) for g in grams])
    steps = [-math.inf if same else trainability_term(c) for c, same in zip(crosses, identity, strict=True)]
    values = {
        "az_expressivity": float(np.sum(entropies)),
        "az_progressivity": float(np.min(np.diff(entropies))) if len(entropies) > 1 else math.nan,
        "az_trainability": float(np.mean(steps)) if steps else math.nan,
    }
    return {name: v if not math.isnan(v) else -math.inf for name, v in values.items()}


def az_group(inputs: ProxyInputs, done: Mapping[str, ProxyValue]) -> dict[str, ProxyValue]:
    del done
    probes = _rademacher_probes(inputs.probe_fn, inputs.params, inputs.x, jax.random.fold_in(inputs.key, 5))
    grams, crosses, identity = jax.device_get(_block_statistics(inputs.probe_fn, inputs.params, inputs.x, probes))
    with threadpool_limits(1, user_api="blas"):  # small host matrices; threaded BLAS beside XLA only thrashes
        terms = az_terms(grams, crosses, [bool(same) for same in identity])
    return {name: ProxyValue(value) for name, value in terms.items()}


def az_complexity_group(inputs: ProxyInputs, done: Mapping[str, ProxyValue]) -> dict[str, ProxyValue]:
    del inputs
    return {"az_complexity": done["flops"]}


def az_nas_rank_score(table: Mapping[str, object]) -> np.ndarray:
    """AZ-NAS's aggregate over a population of K candidates: Σ_terms log(rank_term / K). Larger is better.

    Args:
      table: the four :data:`AZ_NAS_TERMS` as columns of K values each (a DataFrame or a dict of arrays).
        Ranks are average ranks (ties share them, as ``scipy.stats.rankdata``), 1 = smallest; nan counts as
        −∞ (the lowest rank), as the authors turn an undefined term into −∞.

    Returns:
      (K,) the aggregate, in (−∞, 0], 0 for a candidate first by every term.
    """
    columns = [np.asarray(table[name], np.float64) for name in AZ_NAS_TERMS]
    total = np.zeros(len(columns[0]))
    for values in columns:
        ranks = scipy.stats.rankdata(np.where(np.isnan(values), -np.inf, values))
        total += np.log(ranks / len(values))
    return total


register_group("az_nas", az_group, [
    Proxy("az_expressivity", "az_nas", "Σ_blocks entropy of the feature covariance spectrum (AZ-NAS)", +1,
          requires=("probe_fn",)),
    Proxy("az_progressivity", "az_nas", "min_blocks increase of that entropy from block to block (AZ-NAS)", +1,
          requires=("probe_fn",)),
    Proxy("az_trainability", "az_nas", "mean_blocks 2 − σ − 1/σ, σ: spectral norm of a block's Jacobian (AZ-NAS)",
          +1, requires=("probe_fn",)),
])
register_group("az_complexity", az_complexity_group, [
    Proxy("az_complexity", "az_complexity", "counted forward FLOPs of one example (AZ-NAS complexity)", +1),
], after=("size",))
