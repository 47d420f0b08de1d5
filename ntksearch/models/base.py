"""The built-model contract shared by every family, and the generic builder that produces it.

A family is three things: its ``HYPERPARAMETERS`` (:class:`~ntksearch.models.hyper.Hyper` declarations), an
``nnx.Module`` subclass of :class:`FamilyModel` constructed as ``Model(arch, input_shape, n_classes,
rngs=...)``, and the builder :func:`family_builder` makes from the two. The builder resolves the point,
constructs the module eagerly (host-side initialisers, so no compilation, see :mod:`ntksearch.models.layers`),
splits it into a graph definition and the ``nnx.Param`` state, and wraps the graph definition in hashable
callables: two builds of the same architecture give *equal* ``apply_fn`` objects, so every ``jax.jit`` keyed on
them (the NTK core's) reuses its compiled code across candidates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ntksearch.models.flops import count_flops
from ntksearch.models.hyper import Hyper, resolve_point
from ntksearch.models.layers import Ctx

__all__ = [
    "BuiltModel",
    "FamilyBuilder",
    "FamilyModel",
    "FeaturesFn",
    "LogitsFn",
    "Probe",
    "ProbeFn",
    "StateFn",
    "Taps",
    "TrainLogitsFn",
    "family_builder",
]

Array = jax.Array
Params = Any


class FamilyModel(nnx.Module):
    """Base class of every family's module.

    Subclasses implement ``__call__(x, ctx=None) -> logits (N, n_classes)`` on a raw input batch
    ``(N, *input_shape)``; ``ctx`` (:class:`~ntksearch.models.layers.Ctx`) selects training mode, the
    collection of pre-activations and block outputs, and additive taps. ``state`` is what the NTK is computed
    on: the logits unless ``separate_state``.
    """

    separate_state: bool = False

    def state(self, x: Array) -> Array:
        """The NTK state for a batch; the logits by default."""
        return self(x)


class _GraphFn:
    """A pure function of ``(params, ...)`` defined by an nnx graph definition; hashable, equal by graph.

    Calls are jit-compiled with the object itself as the static argument, so an eager call compiles the
    whole model once per architecture and input shape (instead of op by op), and a call inside another
    transformation is simply inlined.
    """

    def __init__(self, graphdef: nnx.GraphDef):
        self.graphdef = graphdef
        self._hash = hash((type(self).__name__, graphdef))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (
            type(other) is type(self) and self._hash == other._hash and self.graphdef == other.graphdef
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(graph #{self._hash & 0xFFFFFFFF:08x})"

    def __call__(self, params: Params, *args: Array) -> Any:
        return _jitted_call(self, params, *args)

    def model(self, params: Params) -> FamilyModel:
        """The module with these parameters (``nnx.merge``)."""
        return nnx.merge(self.graphdef, params)

    def evaluate(self, params: Params, *args: Array) -> Any:
        """The uncompiled body of ``__call__``."""
        raise NotImplementedError


@partial(jax.jit, static_argnums=0)
def _jitted_call(fn: _GraphFn, params: Params, *args: Array) -> Any:
    return fn.evaluate(params, *args)


class LogitsFn(_GraphFn):
    """``apply_fn(params, x) -> logits (N, n_classes)``, evaluation mode (no dropout)."""

    def evaluate(self, params: Params, x: Array) -> Array:
        return self.model(params)(x)


class StateFn(_GraphFn):
    """``state_fn(params, x) -> state``, the family's NTK state (e.g. an RNN's hidden trajectory)."""

    def evaluate(self, params: Params, x: Array) -> Array:
        return self.model(params).state(x)


class TrainLogitsFn(_GraphFn):
    """``train_apply_fn(params, x, key) -> logits``, training mode (dropout drawn from ``key``)."""

    def evaluate(self, params: Params, x: Array, key: Array) -> Array:
        return self.model(params)(x, Ctx(key=key))


class Taps(NamedTuple):
    """Additive taps of a probe call (see :class:`~ntksearch.models.layers.Ctx`); None: no taps there.

    Attributes:
      features: one array per recorded pre-activation (its shape), added to it: the gradient with respect to
        a zero tap is the gradient with respect to that pre-activation.
      blocks: one array per block output (its shape); block output i continues as ``stop_gradient(h_i) +
        tap_i``, so the gradient with respect to tap i of a function of block output i+1 is the
        vector-Jacobian product of block i+1 alone.
    """

    features: list[Array] | None = None
    blocks: list[Array] | None = None


class Probe(NamedTuple):
    """What one probe call sees: the logits and the intermediate tensors, leading axis = batch.

    Attributes:
      logits: (N, n_classes).
      features: the pre-activation entering each nonlinearity, in call order (as ``features_fn``).
      blocks: the block outputs in call order, the first being a stem's output (nb201), the model input (mlp,
        cnn, rnn) or the first sub-layer's output (transformer); the family docstrings say which.
    """

    logits: Array
    features: list[Array]
    blocks: list[Array]


def _probe(model: FamilyModel, x: Array, taps: Taps) -> Probe:
    features: list[Array] = []
    blocks: list[Array] = []
    logits = model(x, Ctx(features=features, blocks=blocks, feature_taps=taps.features, block_taps=taps.blocks))
    return Probe(logits, features, blocks)


class FeaturesFn(_GraphFn):
    """``features_fn(params, x) -> [pre-activation (N, ...)]``, one entry per nonlinearity, in call order."""

    def evaluate(self, params: Params, x: Array) -> list[Array]:
        return _probe(self.model(params), x, Taps()).features


class ProbeFn(_GraphFn):
    """``probe_fn(params, x, taps=None) -> Probe``: logits, pre-activations and block outputs, with taps.

    Evaluation mode (no dropout); with zero taps the values equal ``apply_fn``'s and ``features_fn``'s.
    """

    def __call__(self, params: Params, x: Array, taps: Taps | None = None) -> Probe:
        return _jitted_call(self, params, x, taps or Taps())

    def evaluate(self, params: Params, x: Array, taps: Taps) -> Probe:
        return _probe(self.model(params), x, taps)


@dataclass(frozen=True)
class BuiltModel:
    """An initialised candidate: pure functions of ``params`` plus its size and cost (one example)."""

    family: str
    point: Mapping[str, Any]  # the resolved architecture point (defaults filled, per-layer lists)
    apply_fn: LogitsFn  # (params, x) -> logits (N, n_classes); deterministic
    params: Params  # the nnx.Param state (a pytree of arrays)
    train_apply_fn: TrainLogitsFn  # (params, x, key) -> logits, training mode
    features_fn: FeaturesFn  # (params, x) -> list of pre-activations, leading axis = batch
    probe_fn: ProbeFn  # (params, x, taps) -> Probe(logits, pre-activations, block outputs)
    state_fn: LogitsFn | StateFn  # what the NTK is computed on; is apply_fn except rnn readout trajectory
    n_params: int  # == the size of the nnx.Param state
    flops: int  # counted forward FLOPs of one example
    input_shape: tuple[int, ...]  # per example
    n_classes: int


FamilyBuilder = Callable[..., BuiltModel]  # (point, *, input_shape, n_classes, key) -> BuiltModel


def family_builder(family: str, model_cls: type[FamilyModel], hypers: Mapping[str, Hyper]) -> FamilyBuilder:
    """The ``FAMILIES`` entry of a family: ``build(point, *, input_shape, n_classes, key) -> BuiltModel``."""

    def build(point: Mapping[str, Any], *, input_shape: tuple[int, ...], n_classes: int, key: Array
              ) -> BuiltModel:
        arch = resolve_point(family, hypers, point)
        shape = tuple(int(s) for s in input_shape)
        model = model_cls(arch, shape, int(n_classes), rngs=nnx.Rngs(params=key))
        graphdef, params = nnx.split(model, nnx.Param)
        apply_fn = LogitsFn(graphdef)
        return BuiltModel(
            family=family,
            point=arch,
            apply_fn=apply_fn,
            params=params,
            train_apply_fn=TrainLogitsFn(graphdef),
            features_fn=FeaturesFn(graphdef),
            probe_fn=ProbeFn(graphdef),
            state_fn=StateFn(graphdef) if model.separate_state else apply_fn,
            n_params=sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)),
            flops=forward_flops(apply_fn, params, shape),
            input_shape=shape,
            n_classes=int(n_classes),
        )

    build.__name__ = build.__qualname__ = f"build_{family}"
    build.__doc__ = f"Build an initialised ``{family}`` model from an architecture point (see ``{family}.py``)."
    return build


def forward_flops(apply_fn: LogitsFn, params: Params, input_shape: tuple[int, ...]) -> int:
    """Counted FLOPs of ``apply_fn`` on one example, cached by architecture and shapes."""
    leaves, treedef = jax.tree.flatten(params)
    return _cached_flops(apply_fn, input_shape, treedef, tuple((leaf.shape, leaf.dtype) for leaf in leaves))


@lru_cache(maxsize=2048)
def _cached_flops(apply_fn: LogitsFn, input_shape: tuple[int, ...], treedef: Any,
                  leaf_types: tuple[tuple[tuple[int, ...], Any], ...]) -> int:
    params = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaf_types])
    return count_flops(apply_fn, params, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
