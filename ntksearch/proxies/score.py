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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

from ntksearch.ntk.operator import ApplyFn, Array, Params
from ntksearch.proxies.registry import NTKOptions, ProxyInputs, compute_proxies

__all__ = ["DEFAULT_SCORE", "FIT_METHODS", "LinearScore", "ScoreTerm", "fit_linear_score", "score"]

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


FIT_METHODS = ("vote", "ridge")


def fit_linear_score(values: Mapping[str, np.ndarray], target: np.ndarray, terms: Sequence[tuple[str, str]], *,
                     method: str = "vote", alpha: float = 1.0) -> LinearScore:
    """Fit a :class:`LinearScore` on ground truth: N candidates with proxy values and trained accuracies.

    Each term ``(proxy, transform)`` is standardised with the mean and standard deviation of the transformed
    values over these candidates. Weights:

    * ``vote``: ±1, the sign of the term's Spearman correlation with ``target`` here (an equal-weight vote of
      standardised proxies, as zero-cost-proxy ensembles do; robust to collinearity and to scale);
    * ``ridge``: ridge regression (penalty ``alpha`` on the N-normalised Gram matrix) of the normal scores of
      the target's ranks on the standardised terms (rank-based, so only the ordering of accuracies is fit).

    Args:
      values: proxy name → (N,) values (finite after the transform). target: (N,) accuracies.
    """
    if method not in FIT_METHODS:
        raise ValueError(f"unknown fit method {method!r}; allowed: {', '.join(FIT_METHODS)}")
    cols = []
    stats = []
    for proxy, transform in terms:
        t = np.array([TRANSFORMS[transform](float(v)) for v in values[proxy]])
        mean, std = float(np.mean(t)), float(np.std(t)) or 1.0
        cols.append((t - mean) / std)
        stats.append((proxy, transform, mean, std))
    features = np.stack(cols, axis=1)
    if method == "vote":
        weights = [float(np.sign(scipy.stats.spearmanr(f, target).statistic)) for f in features.T]
    else:
        ranks = scipy.stats.norm.ppf((scipy.stats.rankdata(target) - 0.5) / len(target))
        gram = features.T @ features / len(target) + alpha * np.eye(features.shape[1])
        weights = np.linalg.solve(gram, features.T @ ranks / len(target)).tolist()
    return LinearScore(tuple(ScoreTerm(p, t, m, s, w) for (p, t, m, s), w in zip(stats, weights, strict=True)))


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
