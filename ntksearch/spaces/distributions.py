"""The value sets a search-space parameter can take, sampled through a duck-typed Optuna trial.

Each distribution knows how to ask a trial for a value (``trial.suggest_categorical/int/float`` with Optuna's
conventions), whether a stored value belongs to it (to rebuild a point from ``trial.params``) and, when it is
discrete, its values in order (for enumeration and ``GridSampler``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Categorical",
    "Distribution",
    "Fixed",
    "FloatRange",
    "IntRange",
    "NotEnumerableError",
    "Trial",
    "divides",
    "same_value",
]

_GRID_TOLERANCE = 1e-8  # as Optuna's FloatDistribution with a step


class Trial(Protocol):
    """The part of ``optuna.trial.Trial`` a search space uses."""

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...


class NotEnumerableError(ValueError):
    """A continuous distribution was asked for its values."""


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps booleans, numbers and strings apart (``True != 1`` here)."""
    kind = lambda v: (isinstance(v, bool), isinstance(v, str), v is None)
    return kind(a) == kind(b) and a == b


@dataclass(frozen=True)
class Fixed:
    """One value, never suggested to the trial."""

    value: Any

    def values(self) -> tuple[Any, ...]:
        return (self.value,)

    def contains(self, value: Any) -> bool:
        return same_value(value, self.value)

    def describe(self) -> str:
        return f"fixed at {self.value!r}"


@dataclass(frozen=True)
class Categorical:
    """``trial.suggest_categorical(name, choices)``."""

    choices: tuple[Any, ...]

    def suggest(self, trial: Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def values(self) -> tuple[Any, ...]:
        return self.choices

    def contains(self, value: Any) -> bool:
        return any(same_value(value, c) for c in self.choices)

    def describe(self) -> str:
        return f"one of: {', '.join(repr(c) for c in self.choices)}"


@dataclass(frozen=True)
class IntRange:
    """``trial.suggest_int(name, low, high, step=step, log=log)``: low, low + step, ..., high."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def suggest(self, trial: Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def values(self) -> tuple[int, ...]:
        return tuple(range(self.low, self.high + 1, self.step))

    def contains(self, value: Any) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high
                and (value - self.low) % self.step == 0)

    def describe(self) -> str:
        return f"an integer in [{self.low}, {self.high}]" + (f" with step {self.step}" if self.step != 1 else "")


@dataclass(frozen=True)
class FloatRange:
    """``trial.suggest_float(name, low, high, step=step, log=log)``; discrete when ``step`` is set."""

    low: float
    high: float
    step: float | None = None
    log: bool = False

    def suggest(self, trial: Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def values(self) -> tuple[float, ...]:
        if self.step is None:
            raise NotEnumerableError(f"{self.describe()} is continuous; give it a step or categorical choices")
        n = round((self.high - self.low) / self.step)
        return tuple(self.low + k * self.step for k in range(n + 1))

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or not self.low <= value <= self.high:
            return False
        if self.step is None:
            return True
        k = (value - self.low) / self.step
        return abs(k - round(k)) < _GRID_TOLERANCE

    def describe(self) -> str:
        extra = f" with step {self.step}" if self.step is not None else " (log scale)" if self.log else ""
        return f"a number in [{self.low}, {self.high}]{extra}"


Distribution = Fixed | Categorical | IntRange | FloatRange


def divides(step: float, span: float) -> bool:
    """Whether ``span`` is a whole number of ``step`` (to Optuna's tolerance for floats)."""
    k = span / step
    return abs(k - round(k)) < _GRID_TOLERANCE * max(1.0, abs(k)) and math.isfinite(k)
