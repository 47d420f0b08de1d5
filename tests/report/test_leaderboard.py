"""Leaderboards from synthetic studies: ranking, failures, rank aggregate, Pareto fronts, every export format."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from ntksearch.models import nb201_arch_string
from ntksearch.proxies import az_nas_rank_score
from ntksearch.report import FORMATS, export_leaderboard, leaderboard_frame, markdown_table, pareto_ranks
from ntksearch.report.html import _log_if_scale, leaderboard_html

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _trial(number: int, values, proxies: dict[str, float], **extra) -> optuna.trial.FrozenTrial:
    attrs = {"proxies": proxies, "stderr": {k: 0.01 for k in proxies}, "seconds": {"build": 0.1, "ntk": 1.0},
             "n_params": 100 * (number + 1), "flops": 1000, "arch": json.dumps({"depth": number})}
    return optuna.create_trial(values=values, params={"x": float(number)},
                               distributions={"x": FloatDistribution(0, 10)}, user_attrs=attrs, **extra)


def single_objective_study() -> optuna.Study:
    study = optuna.create_study(direction="maximize", study_name="demo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["default_score"])
    proxies = [{"ntk_trace": 3.0, "ntk_condition": 2.0}, {"ntk_trace": 1.0, "ntk_condition": 1.0},
               {"ntk_trace": 2.0, "ntk_condition": 3.0}]
    for i, (value, p) in enumerate(zip([0.5, 2.0, 1.0], proxies, strict=True)):
        study.add_trial(_trial(i, [value], p))
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "build failed: boom"}))
    study.add_trial(optuna.create_trial(state=TrialState.FAIL))  # interrupted, then retried as trial 5
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, system_attrs={"failed_trial": 4,
                                                                                "retry_history": [4]}))
    for number, accuracy in ((1, 0.9), (2, 0.7), (0, 0.8)):
        study.set_user_attr(f"confirm:{number}", {"val_accuracy": accuracy, "val_loss": 1.0, "diverged": False,
                                                  "seconds": 2.0, "learning_rate": 0.1, "selected": "top"})
    return study


def test_single_objective_ranking() -> None:
    frame = leaderboard_frame(single_objective_study())
    assert list(frame["trial"]) == [1, 2, 0, 5, 3, 4]
    assert list(frame["rank"].iloc[:3]) == [1, 2, 3] and frame["rank"].iloc[3:].isna().all()
    assert list(frame["state"]) == ["COMPLETE"] * 3 + ["WAITING", "FAIL", "FAIL"]
    assert list(frame.columns[:7]) == ["rank", "trial", "state", "fail_reason", "objective:default_score",
                                       "rank_aggregate", "val_accuracy"]
    assert frame.loc[frame["trial"] == 3, "fail_reason"].item() == "build failed: boom"
    assert frame.loc[frame["trial"] == 4, "fail_reason"].item() == (
        "interrupted: its process was killed or died; retried as trial 5")
    assert list(frame["val_accuracy"].iloc[:3]) == [0.9, 0.7, 0.8]
    for column in ("param:x", "arch", "n_params", "flops", "ntk_trace", "ntk_trace_stderr", "seconds:build",
                   "seconds:ntk", "duration_s", "confirm_lr"):
        assert column in frame
    assert frame.attrs == {"objectives": ["objective:default_score"], "directions": ["maximize"], "study": "demo"}


def test_rank_aggregate_uses_registry_signs() -> None:
    frame = leaderboard_frame(single_objective_study()).set_index("trial")
    # ntk_trace (sign +1) ranks trials 0, 2, 1; ntk_condition (sign −1) ranks 1, 0, 2; n_params (+1) 2, 1, 0
    assert frame.loc[[0, 1, 2], "rank_aggregate"].tolist() == pytest.approx([(1 + 2 + 3) / 3, (3 + 1 + 2) / 3,
                                                                             (2 + 3 + 1) / 3])


def test_az_nas_column_aggregates_the_recorded_az_terms() -> None:
    study = optuna.create_study(direction="maximize")
    terms = {"az_expressivity": [1.0, 3.0, 2.0], "az_progressivity": [0.2, 0.1, 0.3],
             "az_trainability": [-1.0, -2.0, -0.5], "az_complexity": [5.0, 6.0, 7.0]}
    for i in range(3):
        study.add_trial(_trial(i, [float(i)], {name: values[i] for name, values in terms.items()}))
    study.add_trial(optuna.create_trial(state=TrialState.FAIL))
    frame = leaderboard_frame(study).set_index("trial")
    expected = az_nas_rank_score(terms)
    assert frame.loc[[0, 1, 2], "az_nas"].tolist() == pytest.approx(expected.tolist())
    assert np.isnan(frame.loc[3, "az_nas"])
    columns = list(frame.columns)
    assert columns[columns.index("objective:value") + 1:][:2] == ["rank_aggregate", "az_nas"]
    assert "az_nas" not in leaderboard_frame(single_objective_study())


def test_multi_objective_pareto_front() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, values in enumerate([[0.9, 10.0], [0.8, 5.0], [0.7, 6.0], [0.6, 1.0]]):
        study.add_trial(_trial(i, values, {"ntk_trace": float(i + 1)}))
    frame = leaderboard_frame(study)
    assert frame.attrs["objectives"] == ["objective:value0", "objective:value1"]
    assert list(frame["trial"]) == [0, 1, 3, 2]
    assert list(frame["pareto_front"]) == [1, 1, 1, 2]
    assert list(frame.columns[:6]) == ["rank", "trial", "state", "objective:value0", "objective:value1",
                                       "pareto_front"]  # nothing failed: no fail_reason column
    assert not {"val_accuracy", "confirm_lr", "confirm_error", "fail_reason"} & set(frame.columns)  # no confirmation


def test_param_columns_only_for_what_arch_does_not_show() -> None:
    study = optuna.create_study()
    arch = {"depth": 2, "width": [8, 16], "init_scale": 1.5}
    params = {"depth": 2, "width_0": 8, "width_1": 16, "init_scale": 1.5, "learning_rate": 0.01}
    study.add_trial(optuna.create_trial(
        value=1.0, params=params, distributions={k: FloatDistribution(0, 100) for k in params},
        user_attrs={"arch": json.dumps(arch)}))
    nb201 = {"edge_1_0": "skip_connect", "edge_2_0": "none", "edge_2_1": "nor_conv_1x1", "edge_3_0": "none",
             "edge_3_1": "avg_pool_3x3", "edge_3_2": "nor_conv_3x3"}
    study.add_trial(optuna.create_trial(
        value=0.5, params={"C": 16, **nb201}, user_attrs={"nb201_arch": nb201_arch_string(nb201)},
        distributions={"C": CategoricalDistribution([8, 16]),
                       **{k: CategoricalDistribution([v]) for k, v in nb201.items()}}))
    frame = leaderboard_frame(study)
    assert [c for c in frame.columns if c.startswith("param:")] == ["param:C", "param:learning_rate"]


def test_html_shows_failed_ranks_empty() -> None:
    page = leaderboard_html(leaderboard_frame(single_objective_study()))
    assert "&lt;NA&gt;" not in page and "<NA>" not in page


def test_scale_quantities_get_log_axes() -> None:
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    _log_if_scale(ax, "x", np.array([1e-3, 2.0, 50.0, np.nan]))  # four decades of positive values
    _log_if_scale(ax, "y", np.array([0.2, 0.9, 0.5]))  # accuracies
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "linear")
    _log_if_scale(ax, "y", np.array([-1.0, 300.0]))  # a sign change: no log axis
    assert ax.get_yscale() == "linear"


def test_export_removes_a_stale_quality_table(tmp_path: Path) -> None:
    (tmp_path / "proxy_quality.csv").write_text("from an earlier run")
    study = optuna.create_study()
    study.add_trial(_trial(0, [1.0], {"ntk_trace": 1.0}))
    assert "quality" not in export_leaderboard(study, tmp_path)  # no confirmation: no quality table
    assert not (tmp_path / "proxy_quality.csv").exists()


def test_pareto_ranks() -> None:
    values = np.array([[1, 4], [2, 2], [4, 1], [3, 3], [4, 4], [2, 2]])
    assert pareto_ranks(values).tolist() == [1, 1, 1, 2, 3, 1]
    assert pareto_ranks(np.zeros((0, 2))).tolist() == []


def test_empty_study() -> None:
    frame = leaderboard_frame(optuna.create_study())
    assert len(frame) == 0 and "rank" in frame


@pytest.mark.parametrize("multi", [False, True])
def test_export_every_format(tmp_path: Path, multi: bool) -> None:
    if multi:
        study = optuna.create_study(directions=["maximize", "minimize"])
        for i, values in enumerate([[0.9, 10.0], [0.8, 5.0], [0.7, 6.0]]):
            study.add_trial(_trial(i, values, {"ntk_trace": float(i + 1)}))
    else:
        study = single_objective_study()
    paths = export_leaderboard(study, tmp_path)
    assert set(paths) == set(FORMATS) | ({"quality"} if not multi else set())
    frame = leaderboard_frame(study)
    for read in (pd.read_csv(paths["csv"]), pd.read_parquet(paths["parquet"]), pd.read_json(paths["json"])):
        assert list(read.columns) == list(frame.columns) and list(read["trial"]) == list(frame["trial"])
    markdown = paths["md"].read_text()
    assert "| rank | trial | state |" in markdown
    page = paths["html"].read_text()
    assert page.count("<svg") >= (2 if multi else 3)
    assert ("Pareto front" in page) == multi
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=[\"']?https?:", page)
    assert "<script" not in page
    if not multi:
        quality = pd.read_csv(paths["quality"])
        assert "ntk_trace" in set(quality["column"]) and "Proxy quality" in markdown


def test_export_rejects_unknown_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        export_leaderboard(single_objective_study(), tmp_path, formats=["xlsx"])


def test_markdown_table() -> None:
    frame = pd.DataFrame({"a": [1.23456, np.nan], "b": ["x|y", None]})
    assert markdown_table(frame) == "| a | b |\n|---|---|\n| 1.235 | x\\|y |\n|  |  |\n"
