"""Declarations of the hyperparameters a model family (or training) accepts, and point resolution.

A family declares each hyperparameter once as a :class:`Hyper`: its kind, default, allowed values (numeric
bounds or registry names) and, for per-layer ones, the integer hyperparameter that counts the layers. The
declaration is the single source of truth for both the search-space validation (:mod:`ntksearch.spaces`) and
the point check in :func:`resolve_point`, so every error lists what is allowed from the declaration (and the
registries it was built from).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ntksearch.validation import ConfigError

__all__ = ["Hyper", "resolve_point"]


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter: what values it takes and its default.

    Attributes:
      kind: ``int``, ``float``, ``bool`` or ``name`` (a string from ``names``).
      default: the value used when a point does not set it.
      doc: one line for humans.
      low, high: inclusive numeric bounds (None: unbounded); ``low_open``/``high_open`` make them exclusive.
      names: allowed strings: the registry keys for ``name``; extra allowed strings (``auto``) for numbers.
      per: for per-layer hyperparameters, the integer hyperparameter giving the number of layers; the value
        is then a list with one entry per layer (a single value is broadcast).
      nullable: ``None`` (YAML ``null``) is allowed too, meaning "off".
    """

    kind: str
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    names: tuple[str, ...] = ()
    per: str | None = None
    nullable: bool = False

    def describe(self) -> str:
        """What is allowed, in words: ``an integer in [1, 64]``, ``one of: gelu, relu``..."""
        return self._describe_values() + (" or null" if self.nullable else "")

    def _describe_values(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "name":
            return f"one of: {', '.join(self.names)}"
        lo = "-inf" if self.low is None else _fmt(self.low)
        hi = "inf" if self.high is None else _fmt(self.high)
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        interval = f"{left}{lo}, {hi}{right}"
        noun = "an integer" if self.kind == "int" else "a number"
        extra = f" or one of: {', '.join(self.names)}" if self.names else ""
        return f"{noun} in {interval}{extra}"

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else a message naming the value and what is allowed."""
        return None if self._allows(value) else f"{value!r} is not allowed; expected {self.describe()}"

    def _allows(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, str):
            return value in self.names
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "name" or isinstance(value, bool):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if not isinstance(value, int | float) or not math.isfinite(value):
            return False
        return self.in_bounds(value)

    def in_bounds(self, value: float) -> bool:
        """Whether a number lies within ``[low, high]`` (with the open ends respected)."""
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))


def resolve_point(owner: str, hypers: Mapping[str, Hyper], point: Mapping[str, Any]) -> dict[str, Any]:
    """Complete and check a point: defaults filled in, per-layer values expanded to lists.

    Args:
      owner: what the point belongs to (``mlp``, ``train``), used in error messages.
      hypers: the declarations (a family's ``HYPERPARAMETERS``).
      point: hyperparameter name → value; per-layer values may be one value or a list of the layer count.

    Returns:
      A new dict with every declared hyperparameter, in declaration order.

    Raises:
      ConfigError: unknown names, disallowed values, or per-layer lists of the wrong length.
    """
    source = f"<{owner} point>"
    unknown = sorted(set(point) - set(hypers))
    if unknown:
        raise ConfigError(source, unknown[0],
                          f"unknown hyperparameter for {owner}; allowed: {', '.join(hypers)}")
    out = {name: point.get(name, hyper.default) for name, hyper in hypers.items()}
    for name, hyper in hypers.items():
        if hyper.per is None:
            _check(source, name, hyper, out[name])
    for name, hyper in hypers.items():
        if hyper.per is None:
            continue
        count = out[hyper.per]
        values = list(out[name]) if isinstance(out[name], list | tuple) else [out[name]] * count
        if len(values) != count:
            raise ConfigError(source, name,
                              f"expected {count} values (one per {hyper.per}), got {len(values)}")
        for i, value in enumerate(values):
            _check(source, f"{name}[{i}]", hyper, value)
        out[name] = values
    return out


def _check(source: str, key: str, hyper: Hyper, value: Any) -> None:
    message = hyper.problem(value)
    if message:
        raise ConfigError(source, key, message)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)
