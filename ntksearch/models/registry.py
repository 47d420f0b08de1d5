"""The family registry: name → builder, name → hyperparameter declarations, and :func:`build_model`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from ntksearch.models import cnn, mlp, nb201, rnn, transformer
from ntksearch.models.base import BuiltModel, FamilyBuilder
from ntksearch.models.hyper import Hyper

__all__ = ["FAMILIES", "HYPERPARAMETERS", "build_model"]

FAMILIES: dict[str, FamilyBuilder] = {
    "mlp": mlp.build,
    "cnn": cnn.build,
    "rnn": rnn.build,
    "nb201": nb201.build,
    "transformer": transformer.build,
}

HYPERPARAMETERS: dict[str, dict[str, Hyper]] = {
    "mlp": mlp.HYPERPARAMETERS,
    "cnn": cnn.HYPERPARAMETERS,
    "rnn": rnn.HYPERPARAMETERS,
    "nb201": nb201.HYPERPARAMETERS,
    "transformer": transformer.HYPERPARAMETERS,
}


def build_model(family: str, point: Mapping[str, Any], *, input_shape: tuple[int, ...], n_classes: int,
                key: jax.Array) -> BuiltModel:
    """Initialise a ``family`` model at an architecture point (``point.arch`` of a search space).

    Args:
      family: a key of :data:`FAMILIES`.
      point: hyperparameter name → value (missing ones take the family defaults; per-layer ones may be one
        value or a list with one value per layer).
      input_shape: one example's shape, e.g. (28, 28, 1) images or (T, F) sequences.
      n_classes: width of the logits.
      key: PRNG key of the initialisation; the parameters are a deterministic function of it.

    Raises:
      ValueError: unknown family. BuildError (a ValueError): hyperparameters that do not combine, or an input
        shape the family cannot read. ``ConfigError`` (a ValueError) for unknown hyperparameters or disallowed
        values.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of: {', '.join(FAMILIES)}")
    return FAMILIES[family](point, input_shape=input_shape, n_classes=n_classes, key=key)
