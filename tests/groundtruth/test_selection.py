"""The default score's selection rule (experiments/groundtruth/selection.py, tables.py, evaluate.py) on synthetic
tables with a known answer."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ntksearch.proxies.score import TieBrokenScore, fit_linear_score

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments" / "groundtruth"))
selection = importlib.import_module("selection")
tables = importlib.import_module("tables")

SIGNS = {"n_params": 1, "ntk_complexity": -1, "noise": 1}


def _task(name: str, seed: int, n: int = 60, size_weight: float = 1.0) -> pd.DataFrame:
    """Accuracy rises with log n_params and falls with log complexity, plus a little noise; ``noise`` is noise.

    Each task has its own accuracy offset and its own spread of sizes: only within-task orderings carry
    information, as in the real tables."""
    rng = np.random.default_rng(seed)
    log_n = rng.uniform(8, 14, n)
    log_c = rng.normal(0, 1, n)
    acc = 0.3 * seed + size_weight * 0.05 * log_n - 0.1 * log_c + rng.normal(0, 0.01, n)
    return pd.DataFrame({"task": name, "family": "mlp", "arch_id": [f"mlp-{i:04d}" for i in range(n)], "variant": "",
                         "accuracy": acc, "val_accuracy": acc + rng.normal(0, 0.01, n), "n_params": np.exp(log_n),
                         "ntk_complexity": np.exp(log_c), "noise": rng.normal(0, 1, n)})


def _frames(size_weights: tuple[float, ...] = (1.0, 1.0, 1.0)) -> dict[str, pd.DataFrame]:
    return {f"t{i}": _task(f"t{i}", i, size_weight=w) for i, w in enumerate(size_weights)}


def test_candidates_follow_the_rule() -> None:
    cands = {c.name: c for c in selection.candidate_list(SIGNS)}
    assert cands["ntk_complexity"].signs == (-1,) and cands["ntk_complexity"].fitted == 0
    assert all(c.fitted <= 3 for c in cands.values())
    assert cands["size+linearised"].fitted == 3 and cands["size+complexity"].fitted == 1
    assert not cands["az_nas"].eligible and cands["size+complexity"].eligible
    assert selection.transform_of("n_params") == "log" and selection.transform_of("zico") == "identity"


def test_the_informative_fitted_score_wins_on_every_held_out_task() -> None:
    frames = _frames()
    cands = selection.candidate_list(SIGNS)
    winner, table = selection.choose(cands, frames)
    assert winner.name == "size+complexity"
    row = table[table.candidate == winner.name].iloc[0]
    assert row.worst > 0.05 and all(row[f"margin:{t}"] > 0 for t in frames)
    n_params = table[table.candidate == "n_params"].iloc[0]
    assert n_params.worst == pytest.approx(0.0)  # the baseline against itself
    assert table[table.candidate == "noise"].iloc[0].worst < 0
    # a candidate whose proxy is absent has undefined margins and ranks last
    assert table.iloc[-1].worst == -math.inf
    nest = selection.nested(cands, frames)
    assert list(nest.task) == list(frames) and (nest.chosen == "size+complexity").all() and (nest.margin > 0).all()


def test_the_worst_case_keeps_the_parameter_count_when_tasks_disagree() -> None:
    # the size/complexity trade-off differs between tasks: the weight fit on two tasks fails on the third
    frames = _frames((1.0, 0.5, 2.0))
    winner, table = selection.choose(selection.candidate_list(SIGNS), frames)
    assert winner.name == "n_params"
    fitted = table[table.candidate == "size+complexity"].iloc[0]
    assert fitted["mean"] > 0.1 > 0 > fitted.worst  # better on average, worse on one held-out task


def test_fits_see_only_the_training_tasks() -> None:
    frames = _frames()
    cand = next(c for c in selection.candidate_list(SIGNS) if c.name == "size+complexity")
    score = selection.fit(cand, [frames["t0"], frames["t1"]])
    weights = {t.proxy: t.weight / t.std for t in score.terms}
    assert weights["n_params"] > 0 > weights["ntk_complexity"]
    # the held-out task's accuracies never enter: scrambling them leaves its scores unchanged
    scrambled = frames["t2"].assign(accuracy=np.random.default_rng(5).permutation(frames["t2"].accuracy),
                                    val_accuracy=0.0)
    np.testing.assert_array_equal(selection.candidate_scores(cand, [frames["t0"], frames["t1"]], frames["t2"]),
                                  selection.candidate_scores(cand, [frames["t0"], frames["t1"]], scrambled))


def test_grouped_fit_ignores_offsets_between_groups() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    groups = np.repeat([0, 1], 100)
    target = -x + 10.0 * groups  # within a group accuracy falls with x; group 1 is easier overall
    shifted = x + 50.0 * groups  # ... and has much larger x: pooled, x and accuracy correlate positively
    pooled = fit_linear_score({"p": shifted}, target, [("p", "identity")], method="ridge", alpha=1e-6)
    grouped = fit_linear_score({"p": shifted}, target, [("p", "identity")], method="ridge", alpha=1e-6,
                               groups=groups)
    assert pooled.terms[0].weight > 0 > grouped.terms[0].weight


def test_rank_aggregates_and_within_architecture_statistics() -> None:
    frame = pd.DataFrame({"arch_id": ["a"] * 4 + ["b"] * 4, "accuracy": [1, 2, 3, 4, 4, 3, 2, 1.0],
                          "x": [1, 2, 3, 4, 1, 2, 3, 4.0]})
    w = selection.within_architecture(frame["x"].to_numpy(), frame)
    assert w == {"archs": 2, "rho": 0.0, "best_first": 0.5}
    cand = selection.Candidate("agg", "rank", ("p", "q"), (1, -1), "log_rank")
    test = pd.DataFrame({"p": [1.0, 2.0, 3.0], "q": [3.0, 2.0, 1.0]})
    np.testing.assert_allclose(selection.candidate_scores(cand, [], test), 2 * np.log(np.array([1, 2, 3]) / 3))


def test_tie_broken_score_reorders_only_equal_sizes() -> None:
    score = TieBrokenScore("n_params", "log", "ntk_complexity", "log", -1)
    assert score({"n_params": 1000, "ntk_complexity": 1e6}) > score({"n_params": 999, "ntk_complexity": 1e-6})
    assert score({"n_params": 1000, "ntk_complexity": 0.5}) > score({"n_params": 1000, "ntk_complexity": 2.0})
    assert math.isfinite(score({"n_params": 10, "ntk_complexity": float("nan")}))


def test_load_task_averages_seeds_and_joins_variants(tmp_path: Path) -> None:
    gt = pd.DataFrame({"arch_id": ["mlp-0000"] * 4, "family": "mlp", "seed": [0, 1, 0, 1],
                       "variant": ["lr=1", "lr=1", "lr=2", "lr=2"], "test_accuracy": [0.5, 0.7, 0.2, 0.4],
                       "val_accuracy": [0.1, 0.3, 0.2, 0.2], "error": ""})
    gt.to_csv(tmp_path / "digits_hp.csv", index=False)
    pd.DataFrame({"arch_id": ["mlp-0000"] * 2, "variant": ["lr=1", "lr=2"], "family": "mlp", "dataset": "digits",
                  "error": "", "n_params": [10, 10], "lin_val_accuracy": [0.6, 0.3]}).to_csv(
        tmp_path / "proxies_digits_hp.csv", index=False)
    frame = tables.load_task("digits_hp", tmp_path)
    assert list(frame.variant) == ["lr=1", "lr=2"] and list(frame.seeds) == [2, 2]
    np.testing.assert_allclose(frame.accuracy, [0.6, 0.3])
    np.testing.assert_allclose(frame.lin_val_accuracy, [0.6, 0.3])
    assert tables.noise_ceiling("digits_hp", tmp_path)["all"] == pytest.approx(1.0)
    assert tables.load_task("adding", tmp_path) is None
    # a retrained task reads the proxies of the task whose architectures it retrains
    gt.assign(variant="").drop_duplicates(["arch_id", "seed"]).to_csv(tmp_path / "fashion_mnist_sgd.csv", index=False)
    pd.DataFrame({"arch_id": ["mlp-0000"], "family": "mlp", "error": "", "n_params": [10]}).to_csv(
        tmp_path / "proxies_fashion_mnist.csv", index=False)
    assert len(tables.load_task("fashion_mnist_sgd", tmp_path)) == 1


def test_evaluate_writes_the_report(tmp_path: Path) -> None:
    evaluate = importlib.import_module("evaluate")
    for name, frame in zip(("fashion_mnist", "digits", "adding"), _frames().values(), strict=True):
        rows = frame.assign(seed=0, error="", test_accuracy=frame.accuracy)
        pd.concat([rows, rows.assign(seed=1)]).to_csv(tmp_path / f"{name}.csv", index=False)
        proxies = frame.drop(columns=["task", "accuracy", "val_accuracy"]).assign(error="", dataset=name)
        proxies.to_csv(tmp_path / f"proxies_{name}.csv", index=False)
    out = tmp_path / "RESULTS.md"
    evaluate.main(["--dir", str(tmp_path), "--out", str(out), "--resamples", "20"])
    text = out.read_text()
    assert "**Incomplete:**" in text  # three of the six tasks are missing
    assert "| size+complexity | linear | 1 |" in text and "**Winner:** `size+complexity`" in text
    assert "Shipped default: size+complexity" in text and "nested leave-one-task-out" in text
