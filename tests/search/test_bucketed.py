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
from ntksearch.search.bucketed import search_grid, uniform_grid
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
RNN_SPACE = {
    "family": "rnn",
    "hyperparameters": {
        "cell": {"type": "categorical", "choices": ["tanh", "gru"]},
        "layers": {"type": "int", "low": 1, "high": 2},
        "hidden": {"type": "categorical", "choices": [6, 8], "per_layer": True},
        "init_scale": {"type": "float", "low": 0.5, "high": 2.0, "log": True},
    },
    "train": SPACE["train"],
}
# residual skips chosen per candidate: a run-time menu of the few-buckets grid (static per-layer buckets)
SKIP_MENU = {**SPACE, "hyperparameters": {**SPACE["hyperparameters"],
                                         "residual": {"type": "categorical", "choices": [False, True]}}}


def _search(space, digits, buckets, proxies=("grad_norm", "zico")) -> tuple[pd.DataFrame, int]:
    objective = ProxyObjective(space, digits, proxies=list(proxies), seed=0, batch_size=16, buckets=buckets)
    study = optuna.create_study(directions=objective.directions,
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3))
    study.optimize(objective, n_trials=7)
    return leaderboard_frame(study), objective.bucketed_candidates


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("grid", ["per_layer", "uniform", "rnn_uniform"])
def test_leaderboards_agree_with_and_without_buckets(tmp_path: Path, digits, grid: str) -> None:
    """Per-layer grid with proxies run in and out of the padded program; the few-buckets grid (depth 1 padded to
    2 with a bypassed layer, the norm and the skips run-time menus) with the default score only, its kernel
    factored; an rnn search on its few-buckets grid (its kernel factored too)."""
    document = {"per_layer": SPACE, "uniform": SKIP_MENU, "rnn_uniform": RNN_SPACE}[grid]
    space = load_space(write_space(tmp_path, document))
    proxies = ("grad_norm", "zico") if grid == "per_layer" else ()
    buckets = DEFAULT_GRID if grid == "per_layer" else uniform_grid(space)
    (with_buckets, in_buckets), (without, none) = (_search(space, digits, buckets, proxies),
                                                   _search(space, digits, None, proxies))
    assert in_buckets >= 3 and none == 0  # later candidates of a bucket run in its padded program
    columns = [c for c in with_buckets.columns if not c.startswith("seconds") and c != "duration_s"]
    numbers = [c for c in columns if pd.api.types.is_float_dtype(with_buckets[c])]
    others = [c for c in columns if c not in numbers]
    assert {"rank", "arch", "trial", *proxies, *DEFAULT_SCORE.proxies} <= set(columns)
    pd.testing.assert_frame_equal(with_buckets[others], without[others])
    if grid == "rnn_uniform":
        # float32 factors, summed in another order in the padded program, can move the Lanczos run's stopping
        # step: the tie-breaker then agrees within its own error indicators, not to 1e-4 (sizes, scores and
        # ranks stay exact)
        tie = "ntk_complexity"
        bound = 3 * (with_buckets[f"{tie}_stderr"] + without[f"{tie}_stderr"])
        assert ((with_buckets[tie] - without[tie]).abs() <= bound).all()
        numbers = [c for c in numbers if not c.startswith(tie)]
    np.testing.assert_allclose(with_buckets[numbers].to_numpy(float), without[numbers].to_numpy(float),
                               rtol=1e-4, atol=1e-6)



def test_the_default_grid_depends_on_the_space_and_the_proxies(tmp_path: Path, digits) -> None:
    mlp = load_space(write_space(tmp_path, SKIP_MENU))
    uniform = search_grid(mlp, list(DEFAULT_SCORE.proxies), structured=True)
    assert uniform.uniform and uniform.depths == (2,)  # capped at the space's deepest
    assert uniform.widths == (16,)  # the widest choice: one width
    assert dict(uniform.menus) == {"norm": ("none", "layer"), "residual": (False, True)}  # activation fixed
    assert search_grid(mlp, list(DEFAULT_SCORE.proxies), structured=False) == DEFAULT_GRID  # AD products
    assert search_grid(mlp, [*DEFAULT_SCORE.proxies, "ntk_trace"], structured=True) == DEFAULT_GRID
    assert search_grid(mlp, [*DEFAULT_SCORE.proxies, "zico"], structured=True) == uniform  # zico: stand-alone
    rnn = load_space(write_space(tmp_path, {"family": "rnn", "hyperparameters": {"hidden": 8},
                                            "train": SPACE["train"]}, "rnn.yaml"))
    for structured in (True, False):  # the rnn grid was chosen with AD products: it does not depend on it
        assert search_grid(rnn, list(DEFAULT_SCORE.proxies), structured=structured) == uniform_grid(rnn)
    assert search_grid(rnn, [*DEFAULT_SCORE.proxies, "grad_norm"], structured=True) == DEFAULT_GRID
    assert ProxyObjective(mlp, digits, proxies=[], batch_size=16).buckets == uniform
    assert ProxyObjective(mlp, digits, proxies=None, batch_size=16).buckets == DEFAULT_GRID  # every proxy
    with pytest.raises(ValueError, match="buckets must be a BucketGrid, None or 'auto'"):
        ProxyObjective(mlp, digits, proxies=[], batch_size=16, buckets="uniform")


@pytest.mark.parametrize("name,width,depths,menus", [
    ("mlp", 512, (2, 4, 6), {"activation", "norm", "residual"}),
    ("rnn", 128, (2,), set()),
])
def test_the_few_buckets_grid_of_a_shipped_space_has_one_width(name: str, width: int, depths: tuple,
                                                               menus: set) -> None:
    grid = uniform_grid(load_space(Path(__file__).parents[2] / "search_spaces" / f"{name}.yaml"))
    assert grid.widths == (width,) and grid.depths == depths and set(dict(grid.menus)) == menus
