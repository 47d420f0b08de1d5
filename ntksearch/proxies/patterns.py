"""Published activation proxies: MeCo and SWAP (with its size regulariser), from one ``features_fn`` pass.

Both read the pre-activations entering every nonlinearity (``features_fn``, leading axis = batch, channels
last), computed once per candidate on the scoring batch and shared with no other group. Checked against the
authors' public code; the formula, the layers used, the sign and every deviation are stated per proxy.

``meco`` (Jiang et al., NeurIPS 2023, "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via Minimum
Eigenvalue of Correlation"; HamsterMimi/MeCo ``meco.py``). For each feature map of ONE example (the authors'
``data_output[0]``: the first example of the batch), seen as P positions × C channels, R is the C × C Pearson
correlation between channels across positions, undefined entries (constant channels) set to 0 as the authors
do; then::

    meco = Σ_layers λ_min(R_layer)

Larger is better. When C ≥ P, R has rank ≤ P − 1 < C and λ_min = 0 exactly: we return that 0 instead of the
authors' floating-point residue of an eigen-solver. Layers: the authors hook the output of every module
(conv, norm, ReLU, cells); we take each nonlinearity's input, once per layer (a conv's and its normalisation's
outputs have the same correlation matrix, since a per-channel affine map leaves a Pearson correlation
unchanged). Sequences (N, T, F) give T positions of F channels. Deviation forced by dense layers: a
vector feature (N, C) has no positions in one example (the authors' code gives such layers 0, which would make
``meco`` identically 0 for every MLP), so for vector features the N examples of the batch play the positions.

``swap`` (Peng et al., ICLR 2024, "SWAP-NAS: Sample-Wise Activation Patterns for Ultra-fast NAS", the
SWAP-Score; pym1024/SWAP ``src/metrics/swap.py``): over a batch of N inputs each unit (one channel at one
position of one activation) has a binary pattern (1 where its activation is positive) of length N::

    swap = number of distinct patterns among all units of all activations

Larger is better. The authors hook every ReLU with a 4-D (conv) input and take the sign of its output; we take
every recorded nonlinearity (so dense, recurrent and transformer layers count, as they must for the
mlp/rnn/transformer families) and binarise its input, ``pre > 0``: for ReLU that is the authors' sign of the
output, and for the other activations it is the same active/inactive split (a sigmoid gate's output is always
positive, so its sign would carry no pattern). The authors average over 32 re-initialisations with N(0, 1)
weights and N = 16 inputs; we score the candidate's own initialisation on the whole scoring batch, like
every other proxy here (for ReLU networks with zero biases the patterns do not depend on the weights' scale).

``swap_reg`` = swap · exp(−(P − μ)²/σ), P the parameter count in thousands (the authors' ``count_parameters``
divides by 1e3). The authors leave μ and σ as arguments, set per search space to steer the model size. We fix
them once for the shipped spaces, from their sizes and not from any accuracy: μ = :data:`SWAP_REG_MU` = 1,000
(one million parameters, the upper end of the shipped mlp space; every shipped cnn, rnn, nb201 and transformer
candidate lies below it) and σ = :data:`SWAP_REG_SIGMA` = μ², so the factor exp(−(P/μ − 1)²) is a bounded size
bonus rising from e⁻¹ ≈ 0.37 at 0 parameters to 1 at one million and falling back to e⁻¹ at two million.
:func:`swap_regulariser` takes other values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np
from threadpoolctl import threadpool_limits

from ntksearch.proxies.registry import Proxy, ProxyInputs, ProxyValue, register_group

__all__ = ["SWAP_REG_MU", "SWAP_REG_SIGMA", "meco_score", "min_correlation_eigenvalue", "swap_regulariser",
           "swap_score"]

SWAP_REG_MU = 1000.0  # thousands of parameters
SWAP_REG_SIGMA = SWAP_REG_MU**2


def min_correlation_eigenvalue(maps: np.ndarray) -> float:
    """λ_min of the channel correlation of ``maps`` (P positions, C channels); undefined entries are 0."""
    positions, channels = maps.shape
    if channels >= positions:
        return 0.0  # rank ≤ positions − 1 < channels
    centred = maps - maps.mean(axis=0)
    norms = np.linalg.norm(centred, axis=0)
    live = norms > 0
    unit = centred[:, live] / norms[live]
    corr = np.zeros((channels, channels))
    corr[np.ix_(live, live)] = unit.T @ unit
    return float(np.linalg.eigvalsh(corr)[0])


def meco_score(features: list[np.ndarray]) -> float:
    """Σ λ_min over features (N, *positions, C): the first example's maps; vector features use the batch."""
    total = 0.0
    for feature in features:
        maps = feature if feature.ndim == 2 else feature[0].reshape(-1, feature.shape[-1])
        total += min_correlation_eigenvalue(np.asarray(maps, np.float64))
    return total


def swap_score(features: list[np.ndarray]) -> int:
    """Number of distinct N-long activation patterns (pre > 0) among all units of ``features`` (N, ...)."""
    n = features[0].shape[0]
    codes = np.concatenate([np.asarray(f).reshape(n, -1) > 0 for f in features], axis=1)  # (N, units)
    packed = np.ascontiguousarray(np.packbits(codes, axis=0).T)  # (units, ⌈N/8⌉) bytes
    return len(np.unique(packed.view(np.dtype((np.void, packed.shape[1])))))


def swap_regulariser(n_params: float, *, mu: float = SWAP_REG_MU, sigma: float = SWAP_REG_SIGMA) -> float:
    """exp(−(P − μ)²/σ) with P = ``n_params`` / 1000 (μ, σ in the same thousands)."""
    return math.exp(-((n_params / 1e3 - mu) ** 2) / sigma)


def patterns_group(inputs: ProxyInputs, done: Mapping[str, ProxyValue]) -> dict[str, ProxyValue]:
    del done
    features = [np.asarray(f) for f in inputs.features_fn(inputs.params, inputs.x)]
    if not features:  # no nonlinearity: no activation to read
        return {name: ProxyValue(float("nan")) for name in ("meco", "swap", "swap_reg")}
    swap = swap_score(features)
    n_params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(inputs.params))
    with threadpool_limits(1, user_api="blas"):  # small host matrices; threaded BLAS beside XLA only thrashes
        meco = meco_score(features)
    return {
        "meco": ProxyValue(meco),
        "swap": ProxyValue(float(swap)),
        "swap_reg": ProxyValue(swap * swap_regulariser(n_params)),
    }


register_group("patterns", patterns_group, [
    Proxy("meco", "patterns", "Σ_layers λ_min of the channel correlation of one example's maps (Jiang et al. "
          "2023)", +1, requires=("features_fn",)),
    Proxy("swap", "patterns", "distinct sample-wise activation patterns over the batch (Peng et al. 2024)", +1,
          requires=("features_fn",)),
    Proxy("swap_reg", "patterns", "swap · exp(−(P/1e3 − μ)²/σ), μ = 1000, σ = μ² (Peng et al. 2024)", +1,
          requires=("features_fn",)),
])
