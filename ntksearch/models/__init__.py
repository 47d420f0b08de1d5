"""Model families: an architecture point → an initialised Flax NNX model as pure functions of its params."""

from ntksearch.models.base import BuiltModel, FamilyBuilder
from ntksearch.models.buckets import DEFAULT_GRID, Bucketed, BucketGrid, PaddedProgram
from ntksearch.models.flops import FlopCountError, count_flops
from ntksearch.models.hyper import Hyper
from ntksearch.models.layers import ACTIVATIONS, INITIALIZERS, NORMS, POOLS, BuildError
from ntksearch.models.nb201 import NB201_EDGES, NB201_OPS, nb201_arch_string, nb201_edges
from ntksearch.models.padded import PADDERS, bucket_candidate
from ntksearch.models.registry import FAMILIES, HYPERPARAMETERS, build_model
from ntksearch.models.rnn import CELLS

__all__ = [
    "ACTIVATIONS",
    "CELLS",
    "DEFAULT_GRID",
    "FAMILIES",
    "HYPERPARAMETERS",
    "INITIALIZERS",
    "NB201_EDGES",
    "NB201_OPS",
    "NORMS",
    "PADDERS",
    "POOLS",
    "BucketGrid",
    "Bucketed",
    "BuildError",
    "BuiltModel",
    "FamilyBuilder",
    "FlopCountError",
    "Hyper",
    "PaddedProgram",
    "bucket_candidate",
    "build_model",
    "count_flops",
    "nb201_arch_string",
    "nb201_edges",
]
