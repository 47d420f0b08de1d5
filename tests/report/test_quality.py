"""Proxy quality: rank correlations with confirmed accuracy, signed, with seeded bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from ntksearch.report import proxy_quality


def _frame(n: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    accuracy = rng.random(n)
    frame = pd.DataFrame({
        "val_accuracy": accuracy,
        "ntk_trace": accuracy * 3 + 1,                       # perfectly increasing
        "ntk_condition": -accuracy,                          # perfectly decreasing (registry sign −1)
        "ntk_effective_rank": accuracy + rng.normal(0, 0.3, n),
        "synflow": np.r_[accuracy[:2], [np.nan] * (n - 2)],  # too few finite pairs
        "objective:default_score": accuracy ** 2,
    })
    frame.attrs.update(objectives=["objective:default_score"], directions=["maximize"])
    return frame


def test_signed_correlations_with_intervals() -> None:
    quality = proxy_quality(_frame()).set_index("column")
    assert set(quality.index) == {"ntk_trace", "ntk_condition", "ntk_effective_rank", "objective:default_score"}
    assert quality.loc["ntk_trace", ["spearman", "spearman_low", "spearman_high", "kendall"]].tolist() == pytest.approx(
        [1, 1, 1, 1])
    assert quality.loc["ntk_condition", "spearman"] == -1 and quality.loc["ntk_condition", "kendall"] == -1
    assert quality.loc["ntk_condition", "expected_sign"] == -1 and quality.loc["ntk_trace", "expected_sign"] == 1
    noisy = quality.loc["ntk_effective_rank"]
    assert noisy["spearman_low"] < noisy["spearman"] < noisy["spearman_high"]
    assert noisy["kendall_low"] < noisy["kendall"] < noisy["kendall_high"]
    frame = _frame()
    assert noisy["spearman"] == pytest.approx(scipy.stats.spearmanr(frame.ntk_effective_rank, frame.val_accuracy)[0])
    assert noisy["kendall"] == pytest.approx(scipy.stats.kendalltau(frame.ntk_effective_rank, frame.val_accuracy)[0])
    assert list(quality["n"].unique()) == [30]


def test_bootstrap_is_seeded() -> None:
    frame = _frame()
    once, again, other = (proxy_quality(frame, seed=seed, n_resamples=200) for seed in (1, 1, 2))
    pd.testing.assert_frame_equal(once, again)
    assert not once.equals(other)


def test_without_confirmations() -> None:
    assert len(proxy_quality(_frame().drop(columns="val_accuracy"))) == 0
