"""Searches with and without shape buckets: same seed, same leaderboard (apart from timings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from ntksearch.data import load_dataset
from ntksearch.models.buckets import DEFAULT_GRID
from ntksearch.proxies import DEFAULT_SCORE
from ntksearch.report.leaderboard import leaderboard_frame
from ntksearch.search import ProxyObjective
from ntksearch.spaces import load_space
from tests.search.helpers import write_space

SPACE = {
    "family": "mlp",
    "hyperparameters": {
        "depth": {"type": "int", "low": 1, "high": 2},
        "width": {"type": "categorical", "choices": [12, 16], "per_layer": True},  # one bucket width: 16
        "activation": "tanh",
        "norm": {"type": "categorical", "choices": ["none", "layer"]},
        "residual": True,
        "init_scale": {"type": "float", "low": 0.5, "high": 2.0, "log": True},
    },
    "train": {"learning_rate": "auto", "optimizer": "sgd", "batch_size": 32, "epochs": 1},
}


def _search(space, digits, buckets) -> tuple[pd.DataFrame, int]:
    objective = ProxyObjective(space, digits, proxies=["grad_norm", "zico"], seed=0, batch_size=16,
                               buckets=buckets)
    study = optuna.create_study(directions=objective.directions,
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3))
    study.optimize(objective, n_trials=7)
    return leaderboard_frame(study), objective.bucketed_candidates


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_leaderboards_agree_with_and_without_buckets(tmp_path: Path, digits) -> None:
    space = load_space(write_space(tmp_path, SPACE))
    (with_buckets, in_buckets), (without, none) = _search(space, digits, DEFAULT_GRID), _search(space, digits, None)
    assert in_buckets >= 3 and none == 0  # later candidates of a bucket run in its padded program
    columns = [c for c in with_buckets.columns if not c.startswith("seconds") and c != "duration_s"]
    numbers = [c for c in columns if pd.api.types.is_float_dtype(with_buckets[c])]
    others = [c for c in columns if c not in numbers]
    assert {"rank", "arch", "trial", "zico", "grad_norm", *DEFAULT_SCORE.proxies} <= set(columns)
    pd.testing.assert_frame_equal(with_buckets[others], without[others])
    np.testing.assert_allclose(with_buckets[numbers].to_numpy(float), without[numbers].to_numpy(float),
                               rtol=1e-4, atol=1e-6)

