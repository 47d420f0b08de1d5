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


def test_az_nas_column_is_read_larger_is_better() -> None:
    frame = _frame()
    frame["az_nas"] = -frame["val_accuracy"]  # a perfectly wrong aggregate shows as such
    row = proxy_quality(frame).set_index("column").loc["az_nas"]
    assert row["expected_sign"] == 1 and row["spearman"] == -1 and row["top10_hit"] == 0


def test_bootstrap_is_seeded() -> None:
    frame = _frame()
    once, again, other = (proxy_quality(frame, seed=seed, n_resamples=200) for seed in (1, 1, 2))
    pd.testing.assert_frame_equal(once, again)
    assert not once.equals(other)


def test_without_confirmations() -> None:
    assert len(proxy_quality(_frame().drop(columns="val_accuracy"))) == 0


def test_top10_statistics_by_hand() -> None:
    from ntksearch.report.quality import rank_quality

    y = np.arange(20.0)  # true top 10%: the two largest, indices 18 and 19
    x = y.copy()
    x[19] = -1.0  # the best candidate scored worst: only index 18 remains in the proxy's top 2 (+ index 17)
    stats = rank_quality(x, y, n_resamples=50)
    assert stats["top10_hit"] == 0.5
    assert np.isnan(stats["top10_spearman"])  # 2 candidates: undefined
    assert rank_quality(-y, y, sign=-1, n_resamples=50)["top10_hit"] == 1.0  # read in its expected direction
    assert rank_quality(-y, y, sign=1, n_resamples=50)["top10_hit"] == 0.0
    y40 = np.arange(40.0)
    x40 = y40.copy()
    x40[36:] = x40[36:][::-1]  # the top 4 reversed among themselves
    top = rank_quality(x40, y40, n_resamples=50)
    assert top["top10_hit"] == 1.0 and top["top10_spearman"] == -1.0
    assert top["spearman_low"] <= top["spearman"] <= top["spearman_high"]


def test_a_diverged_linearised_loss_ranks_last_instead_of_being_dropped() -> None:
    frame = _frame()
    frame["lin_val_accuracy"] = frame["val_accuracy"] / 2
    frame["lin_val_loss"] = 1 - frame["val_accuracy"]
    frame.loc[frame["val_accuracy"].idxmin(), "lin_val_loss"] = np.inf  # the worst candidate diverged
    quality = proxy_quality(frame).set_index("column")
    assert quality.loc["lin_val_accuracy", "expected_sign"] == 1 and quality.loc["lin_val_loss", "expected_sign"] == -1
    assert quality.loc["lin_val_loss", "n"] == 30 and quality.loc["lin_val_loss", "spearman"] == pytest.approx(-1)
    assert quality.loc["lin_val_loss", "top10_hit"] == 1
