"""Search spaces loaded from YAML: sampling through a trial, rebuilding from stored params, enumeration.

The three ways of choosing a point share one walk over the hyperparameters in sampling order
(:meth:`SearchSpace._walk`): it skips those whose ``when`` conditions fail, expands per-layer ones to
``name_0 … name_{n-1}`` for the layer count already chosen, and asks a *draw* function for every value to be
chosen. Sampling draws from the trial, :meth:`SearchSpace.point_from_params` from a stored ``trial.params``
dict, and :meth:`SearchSpace.enumerate` from scripted choices, so all three give the same points.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jax

from ntksearch.models import HYPERPARAMETERS, BuiltModel, build_model
from ntksearch.models.hyper import Hyper, resolve_point
from ntksearch.spaces.distributions import Fixed, NotEnumerableError, Trial, same_value
from ntksearch.spaces.schema import TRAIN_HYPERPARAMETERS, ParamSpec, parse_space
from ntksearch.validation import ConfigError, Node, load_yaml

__all__ = ["Point", "SearchSpace", "load_space"]

Draw = Callable[[ParamSpec, str], Any]


@dataclass(frozen=True)
class Point:
    """One point of a space.

    Attributes:
      arch: every architecture hyperparameter of the family (defaults filled in, per-layer ones as lists):
        what :func:`ntksearch.models.build_model` takes.
      train: every training hyperparameter (``TrainHParams`` fields; ``learning_rate`` may be ``"auto"``).
      params: the suggested values only, flat and Optuna-named (``width_0``): what ``trial.params`` stores.
    """

    arch: dict[str, Any]
    train: dict[str, Any]
    params: dict[str, Any]


class _Branch(Exception):
    """Raised by the enumeration's draw at the first unscripted choice, carrying its options."""

    def __init__(self, options: tuple[Any, ...]):
        super().__init__()
        self.options = options


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space (see :mod:`ntksearch.spaces.schema` for the file format).

    Attributes:
      family: the model family (a key of ``ntksearch.models.FAMILIES``).
      path: the file it was loaded from (None for in-memory documents).
      description: the file's free-text description.
      specs: the hyperparameters the file sets, in sampling order.
    """

    family: str
    path: Path | None
    description: str
    specs: tuple[ParamSpec, ...]

    # -- choosing points -----------------------------------------------------------------------------------
    def sample(self, trial: Trial) -> Point:
        """Draw a point through ``trial.suggest_*`` (Optuna conventions; only existing layers are suggested)."""
        return self._walk(lambda spec, name: spec.dist.suggest(trial, name))

    def point_from_params(self, params: Mapping[str, Any]) -> Point:
        """Rebuild the exact point a trial with these ``trial.params`` sampled.

        Raises:
          ConfigError: a parameter the point needs is missing, one is unknown to it, or a value lies outside
            its distribution (key path ``params.<name>``).
        """
        used: set[str] = set()

        def draw(spec: ParamSpec, name: str) -> Any:
            if name not in params:
                raise self._error(f"params.{name}", f"missing; {spec.key_path} is {spec.dist.describe()}")
            value = params[name]
            if not spec.dist.contains(value):
                raise self._error(f"params.{name}", f"{value!r} is outside {spec.key_path}: {spec.dist.describe()}")
            used.add(name)
            return value

        point = self._walk(draw)
        unknown = sorted(set(params) - used)
        if unknown:
            raise self._error(f"params.{unknown[0]}",
                              f"unknown parameter for this point; it uses: {', '.join(point.params) or 'none'}")
        return point

    def enumerate(self) -> Iterator[Point]:
        """Every point of a discrete space, in lexicographic order of the choices.

        Raises:
          ConfigError: a hyperparameter is continuous (named by its key path).
        """
        self._check_enumerable()
        stack: list[tuple[Any, ...]] = [()]
        while stack:
            script = stack.pop()
            try:
                point = self._walk(_scripted(script))
            except _Branch as branch:
                stack.extend((*script, value) for value in reversed(branch.options))
                continue
            yield point

    def grid(self) -> dict[str, list[Any]]:
        """The space as ``optuna.samplers.GridSampler``'s ``search_space``: Optuna name → values.

        Per-layer hyperparameters appear for every layer up to the largest count, and conditional ones always,
        so the grid's product repeats points whose unused entries differ (GridSampler only ignores them);
        :meth:`enumerate` lists each point once.
        """
        self._check_enumerable()
        grid: dict[str, list[Any]] = {}
        for spec in self.specs:
            if isinstance(spec.dist, Fixed):
                continue
            values = list(spec.dist.values())
            if spec.per_layer:
                for i in range(max(self._possible(spec.hyper.per))):
                    grid[f"{spec.name}_{i}"] = values
            else:
                grid[spec.name] = values
        return grid

    def build(self, point: Point, *, input_shape: tuple[int, ...], n_classes: int, key: jax.Array
              ) -> BuiltModel:
        """``build_model(self.family, point.arch, ...)``."""
        return build_model(self.family, point.arch, input_shape=input_shape, n_classes=n_classes, key=key)

    # -- the walk ------------------------------------------------------------------------------------------
    def _walk(self, draw: Draw) -> Point:
        values: dict[str, Any] = {}
        params: dict[str, Any] = {}
        current = lambda name: values[name] if name in values else self._hypers[name].default
        for spec in self.specs:
            if not all(any(same_value(current(ref), v) for v in allowed) for ref, allowed in spec.when):
                continue
            if isinstance(spec.dist, Fixed):
                values[spec.name] = spec.dist.value
            elif spec.per_layer:
                names = [f"{spec.name}_{i}" for i in range(current(spec.hyper.per))]
                values[spec.name] = [draw(spec, name) for name in names]
                params.update(zip(names, values[spec.name], strict=True))
            else:
                values[spec.name] = params[spec.name] = draw(spec, spec.name)
        arch = {k: v for k, v in values.items() if k not in TRAIN_HYPERPARAMETERS}
        train = {k: v for k, v in values.items() if k in TRAIN_HYPERPARAMETERS}
        return Point(
            arch=resolve_point(self.family, HYPERPARAMETERS[self.family], arch),
            train=resolve_point("train", TRAIN_HYPERPARAMETERS, train),
            params=params,
        )

    @cached_property
    def _hypers(self) -> dict[str, Hyper]:
        return {**HYPERPARAMETERS[self.family], **TRAIN_HYPERPARAMETERS}

    def _possible(self, name: str) -> tuple[Any, ...]:
        """The values a hyperparameter takes in this space."""
        spec = next((s for s in self.specs if s.name == name), None)
        return spec.dist.values() if spec is not None else (self._hypers[name].default,)

    def _check_enumerable(self) -> None:
        for spec in self.specs:
            try:
                spec.dist.values()
            except NotEnumerableError as exc:
                raise self._error(spec.key_path, f"cannot enumerate: {exc}") from None

    def _error(self, key_path: str, message: str) -> ConfigError:
        return ConfigError(self.path, key_path, message)


def _scripted(script: tuple[Any, ...]) -> Draw:
    """A draw answering the first choices from ``script`` and branching at the next one."""
    position = iter(script)

    def draw(spec: ParamSpec, name: str) -> Any:
        value = next(position, _Branch)
        if value is _Branch:
            raise _Branch(spec.dist.values())
        return value

    return draw


def load_space(path: str | Path) -> SearchSpace:
    """Load and fully validate a search-space YAML file.

    Raises:
      ConfigError: any problem, naming the file, the key path, the bad value and what is allowed.
    """
    path = Path(path)
    family, description, specs = parse_space(Node(load_yaml(path), path))
    return SearchSpace(family, path, description, specs)
