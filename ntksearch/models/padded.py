"""The padders of the families, and :func:`bucket_candidate` (see :mod:`ntksearch.models.buckets`)."""

from __future__ import annotations

from collections.abc import Callable

from ntksearch.models.base import BuiltModel
from ntksearch.models.buckets import DEFAULT_GRID, Bucketed, BucketGrid
from ntksearch.models.padded_mlp import pad_mlp
from ntksearch.models.padded_rnn import pad_rnn

__all__ = ["PADDERS", "bucket_candidate"]

Padder = Callable[[BuiltModel, BucketGrid], Bucketed | None]

PADDERS: dict[str, Padder] = {"mlp": pad_mlp, "rnn": pad_rnn}


def bucket_candidate(built: BuiltModel, grid: BucketGrid = DEFAULT_GRID) -> Bucketed | None:
    """The candidate ``built`` inside its bucket's padded program, or None when its family or one of its
    architecture choices has no padded form, or its NTK state is not its logits (it is then scored on its own).
    """
    padder = PADDERS.get(built.family)
    return None if padder is None or built.state_fn != built.apply_fn else padder(built, grid)
