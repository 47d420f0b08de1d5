"""Shared test helpers for built models."""

from __future__ import annotations

import jax
from flax import nnx

from ntksearch.models import BuiltModel


def flax_param_count(built: BuiltModel) -> int:
    """Flax's own parameter count: the size of the nnx.Param state of the merged module."""
    model = nnx.merge(built.apply_fn.graphdef, built.params)
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
