r"""What a search optimises: one or several *targets*, each a function of the proxies of one candidate.

Three kinds of target, all **stationary** (a candidate's value depends on that candidate only, never on the
other trials, so Optuna's samplers can model it and values from different runs compare):

* :class:`ProxyTarget`: one proxy, maximised or minimised (default: the registry ``sign``);
* :class:`WeightedLog`: ``Σᵢ wᵢ · signᵢ · log(proxyᵢ)`` with positive weights wᵢ and the registry signs,
  maximised: a weighted geometric mean of the proxies oriented so that larger means better;
* :class:`ScoreTarget`: a fixed score (:class:`~ntksearch.proxies.LinearScore` or a size-anchored
  :class:`~ntksearch.proxies.score.TieBrokenScore`), by default
  :data:`ntksearch.proxies.DEFAULT_SCORE`, maximised.

Rank aggregation (the mean of per-proxy ranks) is deliberately *not* offered as an online target: a trial's
rank changes every time a later trial arrives, so the value Optuna stored for it goes stale, the sampler's
model is fitted to numbers that no longer mean what they meant, and two runs' values do not compare. It is
computed offline over the finished trials, as the leaderboard's ``rank_aggregate`` column.

Several targets make a multi-objective study whose result is a Pareto front.

Specifications are the YAML forms of an experiment's ``objective`` key (see :mod:`ntksearch.search.config`)
or the same values in Python; :func:`parse_objective` validates them with
:class:`~ntksearch.validation.Node`, so every error names the file, the key path and the allowed values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ntksearch.proxies import DEFAULT_SCORE, PROXIES, LinearScore, TieBrokenScore
from ntksearch.validation import ConfigError, Node

__all__ = [
    "COMBINATIONS",
    "DIRECTIONS",
    "Objective",
    "ProxyTarget",
    "ScoreTarget",
    "Target",
    "WeightedLog",
    "as_objective",
    "parse_objective",
]

DIRECTIONS = ("maximize", "minimize")
COMBINATIONS = ("default_score", "weighted_log")


class Target(Protocol):
    """One objective: a name, an Optuna direction, the proxies it reads and its value from their values."""

    @property
    def name(self) -> str: ...

    @property
    def direction(self) -> str: ...

    @property
    def proxies(self) -> tuple[str, ...]: ...

    def __call__(self, values: Mapping[str, float]) -> float: ...


@dataclass(frozen=True)
class ProxyTarget:
    """One proxy's value, to maximise or minimise."""

    proxy: str
    direction: str

    @property
    def name(self) -> str:
        return self.proxy

    @property
    def proxies(self) -> tuple[str, ...]:
        return (self.proxy,)

    def __call__(self, values: Mapping[str, float]) -> float:
        return float(values[self.proxy])


@dataclass(frozen=True)
class WeightedLog:
    """``Σᵢ wᵢ · signᵢ · log(proxyᵢ)``, maximised; a proxy ≤ 0 gives ``nan`` (the trial then fails)."""

    weights: tuple[tuple[str, float], ...]

    name = "weighted_log"
    direction = "maximize"

    @property
    def proxies(self) -> tuple[str, ...]:
        return tuple(proxy for proxy, _ in self.weights)

    def __call__(self, values: Mapping[str, float]) -> float:
        total = 0.0
        for proxy, weight in self.weights:
            value = float(values[proxy])
            if not value > 0:
                return math.nan
            total += weight * PROXIES[proxy].sign * math.log(value)
        return total


@dataclass(frozen=True)
class ScoreTarget:
    """A fixed linear score of transformed proxies (higher is better)."""

    score: LinearScore | TieBrokenScore = DEFAULT_SCORE

    name = "default_score"
    direction = "maximize"

    @property
    def proxies(self) -> tuple[str, ...]:
        return self.score.proxies

    def __call__(self, values: Mapping[str, float]) -> float:
        return float(self.score(values))


@dataclass(frozen=True)
class Objective:
    """The targets of a study, in order (one: single-objective; several: a Pareto front)."""

    targets: tuple[Target, ...]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    @property
    def directions(self) -> list[str]:
        """For ``optuna.create_study(directions=...)``."""
        return [t.direction for t in self.targets]

    @property
    def proxies(self) -> tuple[str, ...]:
        """Every proxy some target reads, without repeats."""
        return tuple(dict.fromkeys(p for t in self.targets for p in t.proxies))

    def __call__(self, values: Mapping[str, float]) -> tuple[float, ...]:
        return tuple(t(values) for t in self.targets)

    def describe(self) -> str:
        """``default_score (maximize)``, ``ntk_effective_rank (maximize), n_params (minimize)``."""
        return ", ".join(f"{t.name} ({t.direction})" for t in self.targets)


def parse_objective(node: Node | None) -> Objective:
    """Validate an ``objective`` specification (``None``: the default score).

    Forms: ``default_score``; a proxy name; ``{proxy: NAME, direction: maximize|minimize}``;
    ``{combine: weighted_log, proxies: {NAME: WEIGHT, ...}}``; ``{combine: default_score}``; or a list of
    these (several objectives: a Pareto front).
    """
    if node is None:
        return Objective((ScoreTarget(),))
    nodes = node.items() if isinstance(node.value, list) else [node]
    if not nodes:
        raise node.error("expected at least one objective")
    targets = tuple(_target(item) for item in nodes)
    seen: set[str] = set()
    for item, target in zip(nodes, targets, strict=True):
        if target.name in seen:
            raise item.error(f"objective {target.name!r} appears twice")
        seen.add(target.name)
    return Objective(targets)


def as_objective(spec: Any = None) -> Objective:
    """An :class:`Objective` from what a Python caller passes: an ``Objective``, one target, a list of
    targets, or any YAML form of :func:`parse_objective` (a proxy name, ``"default_score"``, a dict, a list).
    """
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, ProxyTarget | WeightedLog | ScoreTarget):
        return Objective((spec,))
    if isinstance(spec, Sequence) and not isinstance(spec, str) and spec and all(
            isinstance(s, ProxyTarget | WeightedLog | ScoreTarget) for s in spec):
        return Objective(tuple(spec))
    return parse_objective(None if spec is None else Node(spec, None, "objective"))


def _target(node: Node) -> Target:
    if isinstance(node.value, str):
        if node.value == "default_score":
            return ScoreTarget()
        proxy = node.string(choices=[*PROXIES, "default_score"])
        return ProxyTarget(proxy, _default_direction(node, proxy))
    if not isinstance(node.value, Mapping):
        raise node.error("expected a proxy name, default_score, {proxy: ..., direction: ...} or "
                         "{combine: ..., proxies: ...}")
    if "combine" in node:
        return _combination(node)
    keys = node.mapping(required={"proxy"}, optional={"direction"})
    proxy = node["proxy"].string(choices=PROXIES)
    if "direction" in keys:
        return ProxyTarget(proxy, node["direction"].string(choices=DIRECTIONS))
    return ProxyTarget(proxy, _default_direction(node["proxy"], proxy))


def _combination(node: Node) -> Target:
    combine = node["combine"].string(choices=COMBINATIONS)
    if combine == "default_score":
        node.mapping(required={"combine"})
        return ScoreTarget()
    node.mapping(required={"combine", "proxies"})
    weights_node = node["proxies"]
    weights = weights_node.mapping(optional=PROXIES)
    if not weights:
        raise weights_node.error("expected at least one proxy: weight")
    oriented = [name for name, proxy in PROXIES.items() if proxy.sign != 0]
    for name in weights:
        if PROXIES[name].sign == 0:
            raise weights_node[name].error(
                f"{name} has no registry direction (sign 0), so weighted_log cannot orient it; "
                f"use one of: {', '.join(sorted(oriented))}")
    return WeightedLog(tuple((name, weights_node[name].number(minimum=0.0, exclusive_minimum=True))
                             for name in weights))


def _default_direction(node: Node, proxy: str) -> str:
    sign = PROXIES[proxy].sign
    if sign == 0:
        raise ConfigError(node.file, node.path,
                          f"{proxy} has no default direction (registry sign 0); write "
                          f"{{proxy: {proxy}, direction: maximize}} or direction: minimize")
    return "maximize" if sign > 0 else "minimize"
