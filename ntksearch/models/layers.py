"""Building blocks shared by every family: registries, host-side initialisers, layers and the call context.

Registries (plain dicts, name → object; validation lists their keys):

* :data:`ACTIVATIONS`: elementwise nonlinearities.
* :data:`INITIALIZERS`: weight initialisation schemes (variance scaling, as in Flax/JAX, see below).
* :data:`NORMS`: normalisation layers, ``none``/``layer``/``group``/``batch`` (``batch`` normalises with the
  statistics of the current batch and keeps no running state, so models stay pure functions).
* :data:`POOLS`: spatial down-sampling by 2 along every spatial axis (``none``/``max``/``avg``; 2×2 windows on
  images, 2 steps on sequences).

**Initialisation runs on the host.** Eager JAX initialisation of a never-seen shape compiles one small XLA
program per random draw (≈0.4 s each on 2 CPU cores) and a jit-compiled constructor compiles one program per
architecture (≈1.5 s for a 3-layer MLP), both far more than the NTK maths of a candidate. The initialisers
below are Flax-compatible callables ``(key, shape, dtype) -> Array`` that draw with NumPy from a generator
seeded by the key's bits, so building a model of any new shape compiles nothing and is still a deterministic
function of the key. They are frozen dataclasses (hashable, equal by value).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ntksearch.models.hyper import Hyper

__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "NORMS",
    "POOLS",
    "BuildError",
    "Constant",
    "Ctx",
    "Identity",
    "Normal",
    "VarianceScaling",
    "as_sequence",
    "conv",
    "dense",
    "make_init",
    "make_norm",
    "tapped",
]

Array = jax.Array


class BuildError(ValueError):
    """A candidate cannot be built: its hyperparameters do not combine with each other or with the input
    shape (a search marks the trial failed and goes on; any other exception is a bug and propagates)."""


# -- activations -------------------------------------------------------------------------------------------

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "tanh": jnp.tanh,
    "swish": jax.nn.swish,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "softplus": jax.nn.softplus,
    "leaky_relu": jax.nn.leaky_relu,
}

# -- host-side initialisers --------------------------------------------------------------------------------

_TRUNC_STD = 0.87962566103423978  # std of a standard normal truncated to (-2, 2), as in jax.nn.initializers


def _host_rng(key: Array) -> np.random.Generator:
    """A NumPy generator seeded by all bits of a JAX PRNG key (raw uint32 or typed)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, dtype=np.uint32).ravel().tolist())


def _fans(shape: tuple[int, ...]) -> tuple[float, float]:
    """(fan_in, fan_out) of a kernel whose last two axes are (in, out), the rest a receptive field."""
    receptive = math.prod(shape[:-2])
    return float(shape[-2] * receptive), float(shape[-1] * receptive)


@dataclass(frozen=True)
class VarianceScaling:
    """``jax.nn.initializers.variance_scaling`` drawn on the host, times a std multiplier ``gain``.

    Draws have variance ``scale / fan`` (fan from ``mode``), then are multiplied by ``gain``; truncated
    normals are cut at ±2 std and rescaled to keep the variance, as in JAX.
    """

    scale: float
    mode: str  # fan_in | fan_out | fan_avg
    distribution: str  # truncated_normal | normal | uniform
    gain: float = 1.0

    def __call__(self, key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        fan_in, fan_out = _fans(tuple(shape))
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        std = math.sqrt(self.scale / fan)
        rng = _host_rng(key)
        if self.distribution == "uniform":
            limit = std * math.sqrt(3.0)
            draw = rng.uniform(-limit, limit, size=shape).astype(np.float32)
        elif self.distribution == "normal":
            draw = std * rng.standard_normal(size=shape, dtype=np.float32)
        else:
            draw = (std / _TRUNC_STD) * _truncated_normal(rng, tuple(shape))
        return jnp.asarray(self.gain * draw, dtype=dtype)


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal draws restricted to (-2, 2) by rejection (deterministic for a generator state)."""
    z = rng.standard_normal(size=shape, dtype=np.float32)
    bad = np.abs(z) >= 2.0
    while bad.any():
        z[bad] = rng.standard_normal(size=int(bad.sum()), dtype=np.float32)
        bad = np.abs(z) >= 2.0
    return z


@dataclass(frozen=True)
class Normal:
    """N(0, stddev²) drawn on the host (embeddings, class tokens)."""

    stddev: float

    def __call__(self, key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        return jnp.asarray(self.stddev * _host_rng(key).standard_normal(size=shape, dtype=np.float32), dtype)


@dataclass(frozen=True)
class Constant:
    """A constant fill (biases: 0, norm scales: 1); no random draw."""

    value: float

    def __call__(self, key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        return jnp.asarray(np.full(shape, self.value, dtype=np.float32), dtype)


INITIALIZERS: dict[str, VarianceScaling] = {
    "lecun_normal": VarianceScaling(1.0, "fan_in", "truncated_normal"),
    "lecun_uniform": VarianceScaling(1.0, "fan_in", "uniform"),
    "he_normal": VarianceScaling(2.0, "fan_in", "truncated_normal"),
    "he_uniform": VarianceScaling(2.0, "fan_in", "uniform"),
    "xavier_normal": VarianceScaling(1.0, "fan_avg", "truncated_normal"),
    "xavier_uniform": VarianceScaling(1.0, "fan_avg", "uniform"),
    "normal": VarianceScaling(1.0, "fan_in", "normal"),  # untruncated N(0, 1/fan_in): the NTK's standard init
}
ZEROS = Constant(0.0)
ONES = Constant(1.0)
EMBEDDING_INIT = Normal(0.02)


def make_init(scheme: str, scale: float) -> VarianceScaling:
    """The registry scheme with its std multiplied by ``scale``."""
    base = INITIALIZERS[scheme]
    return VarianceScaling(base.scale, base.mode, base.distribution, gain=float(scale))


# -- layers ------------------------------------------------------------------------------------------------


class Identity(nnx.Module):
    """x ↦ x (``norm: none``, skip connections)."""

    def __call__(self, x: Array) -> Array:
        return x


def dense(n_in: int, n_out: int, init: VarianceScaling, rngs: nnx.Rngs, *, use_bias: bool = True) -> nnx.Linear:
    """``nnx.Linear`` (…, n_in) → (…, n_out) with host initialisation (zero bias)."""
    return nnx.Linear(n_in, n_out, use_bias=use_bias, kernel_init=init, bias_init=ZEROS, rngs=rngs)


def conv(n_in: int, n_out: int, kernel: int, stride: int, init: VarianceScaling, rngs: nnx.Rngs, *,
         use_bias: bool = True, spatial: int = 2) -> nnx.Conv:
    """``nnx.Conv`` (N, H, W, n_in) → (N, ⌈H/stride⌉, ⌈W/stride⌉, n_out), SAME padding.

    ``spatial`` is the number of spatial axes: 2 for images (kernel × kernel), 1 for sequences (N, T, n_in)
    (a 1-D convolution over time). SAME padding keeps every spatial size ≥ 1 however many stride-2 layers
    follow each other (8×8 inputs bottom out at 1×1), so no sampled architecture collapses to an empty tensor.
    """
    return nnx.Conv(n_in, n_out, (kernel,) * spatial, (stride,) * spatial, padding="SAME", use_bias=use_bias,
                    kernel_init=init, bias_init=ZEROS, rngs=rngs)


def _layer_norm(features: int, ndim: int, groups: int, rngs: nnx.Rngs) -> nnx.Module:
    return nnx.LayerNorm(features, scale_init=ONES, bias_init=ZEROS, rngs=rngs)


def _group_norm(features: int, ndim: int, groups: int, rngs: nnx.Rngs) -> nnx.Module:
    return nnx.GroupNorm(features, num_groups=math.gcd(groups, features), scale_init=ONES, bias_init=ZEROS,
                         rngs=rngs)


def _batch_norm(features: int, ndim: int, groups: int, rngs: nnx.Rngs) -> nnx.Module:
    return nnx.LayerNorm(features, reduction_axes=tuple(range(ndim - 1)), scale_init=ONES, bias_init=ZEROS,
                         rngs=rngs)


def _no_norm(features: int, ndim: int, groups: int, rngs: nnx.Rngs) -> nnx.Module:
    return Identity()


NORMS: dict[str, Callable[[int, int, int, nnx.Rngs], nnx.Module]] = {
    "none": _no_norm,
    "layer": _layer_norm,
    "group": _group_norm,
    "batch": _batch_norm,
}


def make_norm(name: str, features: int, ndim: int, rngs: nnx.Rngs, *, groups: int = 1) -> nnx.Module:
    """A normalisation over the last (feature) axis of rank-``ndim`` inputs.

    ``layer``: per example over features; ``group``: per example over gcd(groups, features) groups (the gcd
    keeps any channel count valid); ``batch``: per feature over the batch and all other axes, from the current
    batch only (no running averages).
    """
    return NORMS[name](features, ndim, groups, rngs)


def _max_pool(x: Array) -> Array:
    window = (2,) * (x.ndim - 2)
    return nnx.max_pool(x, window, window, padding="SAME")


def _avg_pool(x: Array) -> Array:
    window = (2,) * (x.ndim - 2)
    return nnx.avg_pool(x, window, window, padding="SAME", count_include_pad=False)


def _no_pool(x: Array) -> Array:
    return x


POOLS: dict[str, Callable[[Array], Array]] = {"none": _no_pool, "max": _max_pool, "avg": _avg_pool}

# -- the call context --------------------------------------------------------------------------------------


class Ctx:
    """Per-call mode of a model: a dropout key, sinks for intermediate tensors, and additive taps.

    ``Ctx()`` is evaluation mode. Models route every nonlinearity through :meth:`act` (or :meth:`record`
    for the gates of recurrent cells), every dropout through :meth:`dropout`, and the output of every block
    through :meth:`block` (each family's docstring says what its blocks are: nb201 records its stem's output
    first, mlp/cnn/rnn the model input, the transformer the residual stream after every sub-layer).

    * ``features``: a list receiving each pre-activation entering a nonlinearity, in call order (NASWOT,
      SWAP, MeCo).
    * ``blocks``: a list receiving each block output, in call order (AZ-NAS).
    * ``feature_taps``: arrays added to the pre-activations, one per recorded feature, same order and shapes.
      They are zeros in practice: the forward pass is unchanged, and the gradient with respect to tap i is
      the gradient with respect to pre-activation i (Fisher).
    * ``block_taps``: with them, block output i continues as ``stop_gradient(h_i) + tap_i``; the gradient of a
      function of block output i+1 with respect to tap i is then the vector-Jacobian product of block i+1
      alone, for every i in one backward pass (AZ-NAS trainability).
    """

    def __init__(self, key: Array | None = None, features: list[Array] | None = None,
                 blocks: list[Array] | None = None, feature_taps: list[Array] | None = None,
                 block_taps: list[Array] | None = None):
        self.key = key
        self.features = features
        self.blocks = blocks
        self._feature_taps = iter(feature_taps) if feature_taps is not None else None
        self._block_taps = iter(block_taps) if block_taps is not None else None

    def keep(self, pre: Array) -> None:
        """Keep a pre-activation tensor (leading axis = batch) when features are being collected."""
        if self.features is not None:
            self.features.append(pre)

    def feature_tap(self) -> Array | None:
        """The tap of the next recorded feature (None without taps).

        A model that adds the tap itself (inside a scan) takes it here and records with :meth:`keep`.
        """
        return next(self._feature_taps) if self._feature_taps is not None else None

    def record(self, pre: Array) -> Array:
        """Keep a pre-activation tensor and return it with its tap added (unchanged without taps)."""
        self.keep(pre)
        return tapped(pre, self.feature_tap())

    def act(self, name: str, pre: Array) -> Array:
        """Apply the registry activation ``name``, recording its input."""
        return ACTIVATIONS[name](self.record(pre))

    def block(self, h: Array) -> Array:
        """Keep a block output (leading axis = batch); with block taps, cut its gradient path and add the tap."""
        if self.blocks is not None:
            self.blocks.append(h)
        if self._block_taps is None:
            return h
        return jax.lax.stop_gradient(h) + next(self._block_taps)

    def dropout(self, x: Array, rate: float) -> Array:
        """Inverted dropout in training mode (a key is set), identity otherwise."""
        if self.key is None or rate == 0.0:
            return x
        self.key, sub = jax.random.split(self.key)
        keep = jax.random.bernoulli(sub, 1.0 - rate, x.shape)
        return jnp.where(keep, x / (1.0 - rate), 0.0)


def tapped(x: Array, tap: Array | None) -> Array:
    """``x + tap``, or ``x`` when there is no tap."""
    return x if tap is None else x + tap


# -- inputs ------------------------------------------------------------------------------------------------


def as_sequence(x: Array) -> Array:
    """(N, H, W, C) images → (N, H, W·C) sequences read row by row; (N, T, F) sequences unchanged."""
    return x.reshape(*x.shape[:2], -1)


def sequence_shape(family: str, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(T, F) of a sequence model's input: images (H, W, C) → (H, W·C); sequences (T, F) as they are."""
    if len(input_shape) not in (2, 3):
        raise BuildError(f"{family} reads (H, W, C) images or (T, F) sequences; got input shape {input_shape}")
    return input_shape[0], math.prod(input_shape[1:])


# -- shared hyperparameter declarations --------------------------------------------------------------------

INIT = Hyper("name", "lecun_normal", "weight initialisation scheme", names=tuple(INITIALIZERS))
INIT_SCALE = Hyper("float", 1.0, "multiplier of the initial weights' std", low=0.0, low_open=True)
ACTIVATION = Hyper("name", "relu", "elementwise nonlinearity", names=tuple(ACTIVATIONS))
NORM = Hyper("name", "none", "normalisation layer", names=tuple(NORMS))
GROUPS = Hyper("int", 4, "groups of group normalisation (gcd with the channels)", low=1)
DROPOUT = Hyper("float", 0.0, "dropout rate (training mode only)", low=0.0, high=1.0, high_open=True)
RESIDUAL = Hyper("bool", False, "skip connections (projected when shapes differ)")
