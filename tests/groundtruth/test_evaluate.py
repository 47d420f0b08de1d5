"""The ground-truth evaluation (experiments/groundtruth/evaluate.py) on synthetic tables with a known answer."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ntksearch.proxies import PROXIES

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
evaluate = importlib.import_module("groundtruth.evaluate")


def _write_tables(folder: Path, dataset: str, seed: int, per_family: int = 16) -> None:
    """Ground truth whose accuracy rises with the NTK effective rank (and nothing else), plus a proxy table."""
    rng = np.random.default_rng(seed)
    gt_rows, px_rows = [], []
    for family in evaluate.FAMILIES:
        for i in range(per_family):
            arch_id = f"{family}-{i:04d}"
            eff_rank = float(rng.uniform(1.0, 50.0))
            acc = 0.5 + 0.4 * np.log(eff_rank) / np.log(50.0)
            for s in (0, 1):
                gt_rows.append({"arch_id": arch_id, "family": family, "seed": s, "error": "",
                                "test_accuracy": acc + rng.normal(0, 0.01), "val_accuracy": acc + rng.normal(0, 0.01)})
            px = {name: float(rng.uniform(0.5, 2.0)) for name in PROXIES}
            px["ntk_effective_rank"] = eff_rank
            px_rows.append({"dataset": dataset, "family": family, "arch_id": arch_id, "error": "", **px})
    pd.DataFrame(gt_rows).to_csv(folder / f"{dataset}.csv", index=False)
    pd.DataFrame(px_rows).to_csv(folder / f"proxies_{dataset}.csv", index=False)


def test_load_averages_seeds_and_joins_proxies(tmp_path: Path) -> None:
    _write_tables(tmp_path, "digits", seed=0)
    frame = evaluate.load(tmp_path, "digits")
    assert len(frame) == 3 * 16
    assert (frame.seeds == 2).all()
    assert set(frame.family) == set(evaluate.FAMILIES)
    assert evaluate.load(tmp_path, "fashion_mnist") is None


def test_held_out_folds_and_the_informative_proxy(tmp_path: Path) -> None:
    for i, dataset in enumerate(evaluate.DATASETS):
        _write_tables(tmp_path, dataset, seed=i)
    frames = {d: evaluate.load(tmp_path, d) for d in evaluate.DATASETS}
    names = [name for name, _, _ in evaluate.folds(frames)]
    assert len(names) == 3 * 2 + 2  # leave one family out per dataset, and each dataset held out once
    table = evaluate.held_out(frames, n_resamples=20)
    by = table.groupby("candidate")["spearman"].mean()
    assert by["ntk_effective_rank"] > 0.9  # the one proxy that drives accuracy ranks it on every fold
    assert abs(by["n_params"]) < 0.3  # an uninformative proxy does not
    assert by["ntk_rank_align/ridge"] > 0.8  # a fitted score containing it recovers it on held-out rows


def test_main_writes_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    for i, dataset in enumerate(evaluate.DATASETS):
        _write_tables(tmp_path, dataset, seed=i)
    out = tmp_path / "RESULTS.md"
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--dir", str(tmp_path), "--out", str(out), "--resamples", "20"])
    evaluate.main()
    text = out.read_text()
    assert "## fashion_mnist: 48 architectures" in text and "## digits: 48 architectures" in text
    assert "**(chosen)**" in text
    assert "LinearScore(terms=(ScoreTerm(proxy='ntk_effective_rank', transform='log'" in text  # the final fit
    assert capsys.readouterr().out.startswith("# Proxy quality")
