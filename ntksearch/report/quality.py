"""Proxy quality: how well a proxy ranks the trained accuracy of candidates.

:func:`rank_quality` gives, for scores x and accuracies y (N pairs):

* Spearman's ρ and Kendall's τ-b (``scipy.stats``), with their sign (no absolute values);
* the **top-10% hit rate**: the fraction of the k = ⌈N/10⌉ most accurate candidates that are among the k best
  by the proxy read in its expected direction (chance level: k/N ≈ 0.1);
* **ρ within the top 10%**: Spearman's ρ over the k most accurate candidates only (how well the proxy orders
  the good ones, where the parameter count is known to fail);

each with a seeded percentile-bootstrap confidence interval (candidates resampled with replacement; resamples
where a statistic is undefined are dropped). :func:`proxy_quality` applies it to every score column of a
leaderboard; ``expected_sign`` is the direction the registry (or the objective) expects, so a proxy that
works against its expected direction shows as such.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.stats

from ntksearch.proxies import PROXIES

__all__ = ["STATISTICS", "proxy_quality", "rank_quality", "score_columns"]

MIN_PAIRS = 3
TOP_FRACTION = 0.1
_DIGITS = 12  # rounding that removes floating-point noise (5e-17 for 0)
STATISTICS = ("spearman", "kendall", "top10_hit", "top10_spearman")
QUALITY_COLUMNS = ["column", "expected_sign", "n"] + [f"{stat}{end}" for stat in STATISTICS
                                                      for end in ("", "_low", "_high")]


def rank_quality(x: np.ndarray, y: np.ndarray, *, sign: int = 1, n_resamples: int = 2000,
                 confidence: float = 0.95, rng: np.random.Generator | None = None) -> dict[str, float]:
    """Every statistic of :data:`STATISTICS` (see the module docstring) with ``<stat>_low``/``<stat>_high``.

    Args:
      x: (N,) proxy values; y: (N,) accuracies (finite). sign: the proxy's expected direction (0 counts as +1)
        for the top-10% hit rate; correlations are reported with their own sign.
      n_resamples, confidence, rng: the percentile bootstrap.
    """
    rng = rng or np.random.default_rng(0)
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))
    out: dict[str, float] = {}
    with warnings.catch_warnings():  # constant inputs: undefined statistics are nan
        warnings.simplefilter("ignore")
        for name, fn in (("spearman", _spearman), ("kendall", _kendall), ("top10_hit", _top_hit),
                         ("top10_spearman", _top_spearman)):
            kwargs = {"sign": sign} if name == "top10_hit" else {}
            out[name] = float(fn(x, y, **kwargs))
            out[f"{name}_low"], out[f"{name}_high"] = _interval(fn(x[idx], y[idx], **kwargs), confidence)
    return {k: round(v, _DIGITS) for k, v in out.items()}


def proxy_quality(frame: pd.DataFrame, *, target: str = "val_accuracy", n_resamples: int = 2000,
                  confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Rank correlations between each score column of ``frame`` and ``target``, with bootstrap CIs.

    Args:
      frame: a leaderboard (:func:`ntksearch.report.leaderboard_frame`); its ``attrs`` name the objective
        columns and their directions.
      target: the column to predict. n_resamples, confidence, seed: the bootstrap.

    Returns:
      One row per score column with at least 3 pairs, sorted by Spearman ρ (descending). Pairs with a NaN are
      left out; an infinite proxy value (a diverged linearised loss) is kept and ranks at its end:
      ``column, expected_sign, n`` and each statistic of :data:`STATISTICS` with ``_low``/``_high``.
    """
    if target not in frame:
        return pd.DataFrame(columns=QUALITY_COLUMNS)
    rows = []
    rng = np.random.default_rng(seed)
    for column, sign in score_columns(frame).items():
        pairs = frame[[column, target]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        pairs = pairs[~np.isnan(pairs).any(axis=1)]
        if len(pairs) < MIN_PAIRS:
            continue
        stats = rank_quality(pairs[:, 0], pairs[:, 1], sign=sign, n_resamples=n_resamples, confidence=confidence,
                             rng=rng)
        rows.append({"column": column, "expected_sign": sign, "n": len(pairs), **stats})
    out = pd.DataFrame(rows, columns=QUALITY_COLUMNS)
    return out.sort_values("spearman", ascending=False, na_position="last", ignore_index=True)


def score_columns(frame: pd.DataFrame) -> dict[str, int]:
    """Column → expected sign: objectives (their direction), ``rank_aggregate`` (−1), ``az_nas`` (+1), proxies."""
    columns = {name: 1 if direction == "maximize" else -1 for name, direction in
               zip(frame.attrs.get("objectives", []), frame.attrs.get("directions", []), strict=True)}
    if "rank_aggregate" in frame:
        columns["rank_aggregate"] = -1
    if "az_nas" in frame:
        columns["az_nas"] = 1
    columns.update({name: proxy.sign for name, proxy in PROXIES.items() if name in frame})
    return columns


def _spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ along the last axis: Pearson correlation of average ranks."""
    rx, ry = scipy.stats.rankdata(x, axis=-1), scipy.stats.rankdata(y, axis=-1)
    return scipy.stats.pearsonr(rx, ry, axis=-1).statistic


def _kendall(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall τ-b along the last axis."""
    return scipy.stats.kendalltau(x, y, axis=-1).statistic


def _top_k(y: np.ndarray) -> np.ndarray:
    """Indices of the k = ⌈N·TOP_FRACTION⌉ largest entries along the last axis (ties: first come)."""
    k = max(1, int(np.ceil(y.shape[-1] * TOP_FRACTION)))
    return np.argsort(-y, axis=-1, kind="stable")[..., :k]


def _top_hit(x: np.ndarray, y: np.ndarray, *, sign: int) -> np.ndarray:
    """Fraction of the true top-k that the proxy (read in direction ``sign``) also puts in its top k."""
    by_y, by_x = _top_k(y), _top_k(x if sign >= 0 else -x)
    hits = (by_x[..., :, None] == by_y[..., None, :]).any(axis=-1).sum(axis=-1)
    return hits / by_y.shape[-1]


def _top_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ over the true top-k only (undefined, nan, below 3 candidates)."""
    top = _top_k(y)
    if top.shape[-1] < MIN_PAIRS:
        return np.full(x.shape[:-1], np.nan)
    return _spearman(np.take_along_axis(x, top, axis=-1), np.take_along_axis(y, top, axis=-1))


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)
