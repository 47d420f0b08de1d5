"""The default score: one float per candidate, higher meaning better expected accuracy after training.

A :class:`LinearScore` is a fixed linear model on transformed proxies,

    score = Σ_k w_k · (t_k(proxy_k) − μ_k) / σ_k,

with t_k ∈ {identity, log}, and (μ_k, σ_k, w_k) fixed constants. Fixed constants make the score a stationary
objective (a trial's score never depends on the other trials), so Optuna can optimise it and scores from
different runs compare. The constants of :data:`DEFAULT_SCORE` and how they were chosen are documented with
it; ``experiments/groundtruth/`` holds the validation that produced them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ntksearch.ntk.operator import ApplyFn, Array, Params
from ntksearch.proxies.registry import NTKOptions, ProxyInputs, compute_proxies

__all__ = ["DEFAULT_SCORE", "LinearScore", "ScoreTerm", "score"]

TRANSFORMS = {"identity": lambda v: v, "log": lambda v: math.log(v) if v > 0 else -math.inf}


@dataclass(frozen=True)
class ScoreTerm:
    """One term w · (t(proxy) − mean) / std of a :class:`LinearScore`."""

    proxy: str
    transform: str
    mean: float
    std: float
    weight: float


@dataclass(frozen=True)
class LinearScore:
    """A fixed linear combination of standardised, transformed proxies (see the module docstring)."""

    terms: tuple[ScoreTerm, ...]

    @property
    def proxies(self) -> tuple[str, ...]:
        """The proxies the score reads."""
        return tuple(t.proxy for t in self.terms)

    def __call__(self, values: Mapping[str, float]) -> float:
        total = 0.0
        for t in self.terms:
            total += t.weight * (TRANSFORMS[t.transform](float(values[t.proxy])) - t.mean) / t.std
        return total


# Provisional constants; replaced by the ground-truth-validated fit (see experiments/groundtruth/).
DEFAULT_SCORE = LinearScore((
    ScoreTerm("ntk_effective_rank", "log", 0.0, 1.0, 1.0),
    ScoreTerm("ntk_label_alignment_centred", "identity", 0.0, 1.0, 1.0),
))


def score(apply_fn: ApplyFn, params: Params, x: Array, y: Array, *, key: Array,
          ntk: NTKOptions | None = None) -> float:
    """The default score of any model ``apply_fn(params, x) -> logits`` on a batch with one-hot targets y.

    Uses only proxies that need nothing but ``apply_fn`` (no activation patterns). Higher is better.
    """
    inputs = ProxyInputs(apply_fn, params, x, y, key, ntk=ntk or NTKOptions())
    values = compute_proxies(DEFAULT_SCORE.proxies, inputs).values
    return DEFAULT_SCORE({name: v.value for name, v in values.items()})
