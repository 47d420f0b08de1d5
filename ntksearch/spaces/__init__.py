"""Declarative search spaces: YAML files → validated :class:`SearchSpace` objects sampled through Optuna trials.

The file format is documented in :mod:`ntksearch.spaces.schema`.
"""

from ntksearch.spaces.distributions import Categorical, Fixed, FloatRange, IntRange, Trial
from ntksearch.spaces.schema import TRAIN_HYPERPARAMETERS, ParamSpec
from ntksearch.spaces.space import Point, SearchSpace, load_space

__all__ = [
    "TRAIN_HYPERPARAMETERS",
    "Categorical",
    "Fixed",
    "FloatRange",
    "IntRange",
    "ParamSpec",
    "Point",
    "SearchSpace",
    "Trial",
    "load_space",
]
