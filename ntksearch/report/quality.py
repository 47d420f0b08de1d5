"""Proxy quality: how well each proxy ranks the confirmed (trained) accuracy of the candidates.

For every proxy column of a leaderboard (and the objective and ``rank_aggregate`` columns), over the
candidates with a confirmation result and a finite proxy value: Spearman's ρ and Kendall's τ-b with
``scipy.stats``, each with a seeded percentile-bootstrap confidence interval (candidates resampled with
replacement; resamples where a rank statistic is undefined are dropped). Correlations keep their sign (no
absolute values); ``expected_sign`` is the direction the registry (or the objective) expects, so a proxy
that works against its expected direction shows as such.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.stats

from ntksearch.proxies import PROXIES

__all__ = ["proxy_quality"]

MIN_PAIRS = 3
_DIGITS = 12  # rounding that removes floating-point noise (5e-17 for 0)
QUALITY_COLUMNS = ["column", "expected_sign", "n", "spearman", "spearman_low", "spearman_high", "kendall",
                   "kendall_low", "kendall_high"]


def proxy_quality(frame: pd.DataFrame, *, target: str = "val_accuracy", n_resamples: int = 2000,
                  confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Rank correlations between each score column of ``frame`` and ``target``, with bootstrap CIs.

    Args:
      frame: a leaderboard (:func:`ntksearch.report.leaderboard_frame`); its ``attrs`` name the objective
        columns and their directions.
      target: the column to predict. n_resamples, confidence, seed: the bootstrap.

    Returns:
      One row per score column with at least 3 finite pairs, sorted by Spearman ρ (descending):
      ``column, expected_sign, n, spearman, spearman_low, spearman_high, kendall, kendall_low, kendall_high``.
    """
    if target not in frame:
        return pd.DataFrame(columns=QUALITY_COLUMNS)
    rows = []
    rng = np.random.default_rng(seed)
    for column, sign in score_columns(frame).items():
        pairs = frame[[column, target]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        pairs = pairs[np.isfinite(pairs).all(axis=1)]
        if len(pairs) < MIN_PAIRS:
            continue
        x, y = pairs.T
        idx = rng.integers(0, len(x), size=(n_resamples, len(x)))
        with warnings.catch_warnings():  # constant inputs: undefined statistics are nan
            warnings.simplefilter("ignore")
            rho, tau = _spearman(x, y), _kendall(x, y)
            rho_ci = _interval(_spearman(x[idx], y[idx]), confidence)
            tau_ci = _interval(_kendall(x[idx], y[idx]), confidence)
        rows.append([column, sign, len(x), *np.round([rho, *rho_ci, tau, *tau_ci], _DIGITS)])
    out = pd.DataFrame(rows, columns=QUALITY_COLUMNS)
    return out.sort_values("spearman", ascending=False, na_position="last", ignore_index=True)


def score_columns(frame: pd.DataFrame) -> dict[str, int]:
    """Column → expected sign: objectives (their direction), ``rank_aggregate`` (−1), registry proxies."""
    columns = {name: 1 if direction == "maximize" else -1 for name, direction in
               zip(frame.attrs.get("objectives", []), frame.attrs.get("directions", []), strict=True)}
    if "rank_aggregate" in frame:
        columns["rank_aggregate"] = -1
    columns.update({name: proxy.sign for name, proxy in PROXIES.items() if name in frame})
    return columns


def _spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ along the last axis: Pearson correlation of average ranks."""
    rx, ry = scipy.stats.rankdata(x, axis=-1), scipy.stats.rankdata(y, axis=-1)
    return scipy.stats.pearsonr(rx, ry, axis=-1).statistic


def _kendall(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall τ-b along the last axis."""
    return scipy.stats.kendalltau(x, y, axis=-1).statistic


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)
