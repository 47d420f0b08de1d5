"""The sampler registry: name → a factory of a seeded Optuna sampler, with the options a config may set.

Every sampler is seeded from the experiment's ``seed``, so a run is reproducible. ``grid`` walks the space's
grid (:meth:`ntksearch.spaces.SearchSpace.grid`, discrete spaces only). ``gp`` needs PyTorch and ``cmaes``
the ``cmaes`` package; when one is missing, validation says so and how to install it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from ntksearch.spaces import SearchSpace
from ntksearch.validation import Node

__all__ = ["SAMPLERS", "SamplerFactory", "make_sampler", "parse_sampler_options"]

Check = Callable[[Node], Any]

_COUNT: Check = lambda node: node.integer(minimum=0)
_POSITIVE_INT: Check = lambda node: node.integer(minimum=1)
_FLAG: Check = lambda node: node.boolean()
_PROBABILITY: Check = lambda node: node.number(minimum=0.0, maximum=1.0)
_POSITIVE: Check = lambda node: node.number(minimum=0.0, exclusive_minimum=True)


@dataclass(frozen=True)
class SamplerFactory:
    """How to make one kind of sampler.

    Attributes:
      cls: the Optuna sampler class, called as ``cls(seed=seed, **space_args, **options)``.
      options: the keyword options a config may set, each with its validation.
      requires: ``(module, install hint)`` of an optional package the sampler needs.
      space_args: arguments derived from the search space (the grid of ``GridSampler``).
    """

    cls: Callable[..., optuna.samplers.BaseSampler]
    options: Mapping[str, Check] = field(default_factory=dict)
    requires: tuple[str, str] | None = None
    space_args: Callable[[SearchSpace], dict[str, Any]] = lambda space: {}

    def __call__(self, *, seed: int, space: SearchSpace, options: Mapping[str, Any]
                 ) -> optuna.samplers.BaseSampler:
        return self.cls(seed=seed, **self.space_args(space), **options)

    def missing(self) -> str | None:
        """Why the sampler cannot run here (a missing package and how to install it), or ``None``."""
        if self.requires is None or importlib.util.find_spec(self.requires[0]) is not None:
            return None
        return f"needs the {self.requires[0]} package, which is not installed ({self.requires[1]})"


SAMPLERS: dict[str, SamplerFactory] = {
    "tpe": SamplerFactory(optuna.samplers.TPESampler, {
        "n_startup_trials": _COUNT, "n_ei_candidates": _POSITIVE_INT, "multivariate": _FLAG, "group": _FLAG,
        "constant_liar": _FLAG, "consider_endpoints": _FLAG, "prior_weight": _POSITIVE}),
    "nsga2": SamplerFactory(optuna.samplers.NSGAIISampler, {
        "population_size": _POSITIVE_INT, "mutation_prob": _PROBABILITY, "crossover_prob": _PROBABILITY,
        "swapping_prob": _PROBABILITY}),
    "random": SamplerFactory(optuna.samplers.RandomSampler),
    "grid": SamplerFactory(optuna.samplers.GridSampler, space_args=lambda space: {"search_space": space.grid()}),
    "gp": SamplerFactory(optuna.samplers.GPSampler, {
        "n_startup_trials": _COUNT, "deterministic_objective": _FLAG}, requires=("torch", "pip install torch")),
    "cmaes": SamplerFactory(optuna.samplers.CmaEsSampler, {
        "sigma0": _POSITIVE, "n_startup_trials": _COUNT, "popsize": _POSITIVE_INT, "restart_strategy":
        lambda node: node.string(choices=("ipop", "bipop")), "inc_popsize": _POSITIVE_INT,
        "use_separable_cma": _FLAG, "with_margin": _FLAG, "lr_adapt": _FLAG}, requires=("cmaes", "pip install cmaes")),
}


def parse_sampler_options(name: str, node: Node, keys: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the ``keys`` of mapping ``node`` (except ``name``) as options of sampler ``name``."""
    allowed = SAMPLERS[name].options
    node.mapping(required={"name"}, optional=allowed)
    return {key: allowed[key](node[key]) for key in keys if key != "name"}


def make_sampler(name: str, options: Mapping[str, Any] | None = None, *, seed: int, space: SearchSpace
                 ) -> optuna.samplers.BaseSampler:
    """A seeded sampler ``name`` of :data:`SAMPLERS` with validated ``options``."""
    return SAMPLERS[name](seed=seed, space=space, options=dict(options or {}))
