"""ProxyObjective: the user-study snippet, stored attributes, failures, several objectives, reproducibility."""

from __future__ import annotations

import json
import math
import re
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import ntksearch.search.proxy_objective as objective_module
from ntksearch.data import load_dataset, scoring_batch
from ntksearch.models import nb201_arch_string
from ntksearch.proxies import DEFAULT_SCORE, PROXIES, ProxyResult, ProxyValue
from ntksearch.proxies.linearised import schedule_steps
from ntksearch.search import Objective, ProxyObjective, ProxyTarget, ScoreTarget, WeightedLog, as_objective
from ntksearch.spaces import load_space
from ntksearch.validation import ConfigError
from tests.search.helpers import write_space

BATCH = 16


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def tiny(tmp_path: Path):
    return load_space(write_space(tmp_path))


def docstring_snippet() -> str:
    """The code block of ntksearch.search.proxy_objective's docstring."""
    lines = []
    for line in objective_module.__doc__.split("::\n", 1)[1].splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def test_user_study_snippet_from_the_docstring(tmp_path: Path) -> None:
    """The ≤5-line snippet of ntksearch.search.proxy_objective, run as written on a tiny space."""
    snippet = docstring_snippet()
    usage = [line for line in snippet.splitlines() if line and not line.startswith(("import", "from"))]
    assert len(usage) <= 5
    snippet = snippet.replace('"search_spaces/mlp.yaml"', repr(str(write_space(tmp_path)))).replace(
        "n_trials=20", "n_trials=2")
    namespace: dict = {}
    exec(compile(snippet, "snippet", "exec"), namespace)
    study = namespace["study"]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    stored = study.best_trial.user_attrs["proxies"]
    assert set(stored) == set(DEFAULT_SCORE.proxies)  # by default only the objective's proxies
    assert study.best_value == pytest.approx(DEFAULT_SCORE(stored))
    again: dict = {}
    exec(compile(snippet, "snippet", "exec"), again)  # seed=0 alone makes the study reproducible
    assert [(t.params, t.values) for t in again["study"].trials] == [(t.params, t.values) for t in study.trials]


def test_recording_every_proxy_on_request(tiny, digits) -> None:
    objective = ProxyObjective(tiny, digits, proxies=None, batch_size=BATCH)
    study = objective.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=1)
    assert set(study.trials[0].user_attrs["proxies"]) == set(PROXIES)  # every proxy the family supports


def test_trial_attributes(tiny, digits) -> None:
    objective = ProxyObjective(tiny, digits, proxies=["n_params", "grad_norm"], seed=0, batch_size=BATCH)
    study = optuna.create_study(directions=objective.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=2)
    for trial in study.trials:
        attrs = trial.user_attrs
        assert trial.state == TrialState.COMPLETE and "fail_reason" not in attrs
        assert list(attrs["proxies"]) == list(dict.fromkeys([*DEFAULT_SCORE.proxies, "n_params", "grad_norm"]))
        assert set(attrs["stderr"]) == set(attrs["proxies"]) and attrs["stderr"]["n_params"] == 0
        groups = {PROXIES[name].group for name in attrs["proxies"]}
        assert groups == {"size", "linearised", "gradient"}  # the default score's groups and grad_norm's
        assert set(attrs["seconds"]) == {"build", *groups}
        assert attrs["n_params"] == attrs["proxies"]["n_params"] == 16 * 64 + 16 + 16 * 10 + 10
        assert attrs["flops"] > 0
        arch = json.loads(attrs["arch"])
        assert arch["depth"] == 1 and arch["width"] == [16] and arch["init_scale"] == trial.params["init_scale"]
        assert trial.value == pytest.approx(DEFAULT_SCORE(attrs["proxies"]))


def test_candidates_are_reproducible_from_seed_and_number(tiny, digits) -> None:
    objective = ProxyObjective(tiny, digits, proxies=[], seed=0, batch_size=BATCH)
    point = tiny.point_from_params({"init_scale": 1.0})
    first, again, other = objective.evaluate(point, 3), objective.evaluate(point, 3), objective.evaluate(point, 4)
    assert first.values == again.values
    assert first.values != other.values  # another trial number: another initialisation
    assert ProxyObjective(tiny, digits, proxies=[], seed=1, batch_size=BATCH).evaluate(point, 3).values != first.values


def test_fixed_batch_instead_of_a_dataset(tiny, digits) -> None:
    x, y = scoring_batch(digits, BATCH, seed=0)
    from_batch = ProxyObjective(tiny, (x, y), proxies=[], seed=0)
    from_dataset = ProxyObjective(tiny, digits, proxies=[], seed=0, batch_size=BATCH)
    point = tiny.point_from_params({"init_scale": 1.2})
    assert from_batch.evaluate(point, 0).values == from_dataset.evaluate(point, 0).values


def test_non_finite_model_fails_the_trial_and_the_search_goes_on(tmp_path: Path, digits) -> None:
    space = {"family": "mlp", "hyperparameters": {"depth": 2, "width": 8,
                                                  "init_scale": {"type": "categorical", "choices": [1.0e30, 1.0]}}}
    objective = ProxyObjective(load_space(write_space(tmp_path, space)), digits, proxies=[], batch_size=BATCH)
    study = optuna.create_study(directions=objective.directions,
                                sampler=optuna.samplers.GridSampler({"init_scale": [1.0e30, 1.0]}, seed=0))
    study.optimize(objective, n_trials=2)  # no catch=: nan marks the trial FAIL
    failed, complete = sorted(study.trials, key=lambda t: t.state != TrialState.FAIL)
    assert failed.state == TrialState.FAIL and failed.params == {"init_scale": 1.0e30}
    assert failed.user_attrs["fail_reason"].startswith("non-finite model:")
    assert "arch" in failed.user_attrs and "n_params" in failed.user_attrs
    assert complete.state == TrialState.COMPLETE


def test_ntk_overflow_is_computed_or_fails_the_trial_never_a_silent_zero(tmp_path: Path, digits) -> None:
    """init_scale 30: tr K² beyond float32, the effective rank is still computed (≈ 25, it used to be 0);
    init_scale 3000: K itself is beyond float32, the trial fails and says so."""
    space = {"family": "mlp", "hyperparameters": {"depth": 6, "width": 128,
                                                  "init_scale": {"type": "categorical", "choices": [30.0, 3000.0]}}}
    objective = ProxyObjective(load_space(write_space(tmp_path, space)), digits, proxies=[], batch_size=BATCH,
                               objective="ntk_effective_rank")
    study = optuna.create_study(directions=objective.directions,
                                sampler=optuna.samplers.GridSampler({"init_scale": [30.0, 3000.0]}, seed=0))
    study.optimize(objective, n_trials=2)
    by_scale = {t.params["init_scale"]: t for t in study.trials}
    assert by_scale[30.0].state == TrialState.COMPLETE and by_scale[30.0].value > 5
    failed = by_scale[3000.0]
    assert failed.state == TrialState.FAIL
    assert "the NTK overflows float32" in failed.user_attrs["fail_reason"]


def test_build_failure_fails_the_trial(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path, {"family": "cnn", "hyperparameters": {"stages": 1}}))
    rng = np.random.default_rng(0)
    flat = (rng.random((8, 12), dtype=np.float32), np.eye(2, dtype=np.float32)[rng.integers(0, 2, 8)])
    objective = ProxyObjective(space, flat, proxies=[])
    study = optuna.create_study(directions=objective.directions)
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"].startswith("build failed:")
    assert "n_params" not in trial.user_attrs


def test_a_bug_while_building_propagates_instead_of_failing_the_trial(tiny, digits, monkeypatch) -> None:
    objective = ProxyObjective(tiny, digits, proxies=[], batch_size=BATCH)

    def buggy_build(*args, **kwargs):
        raise ValueError("a bug, not a candidate that cannot be built")

    monkeypatch.setattr(type(tiny), "build", buggy_build)  # spaces are frozen: patch the class
    with pytest.raises(ValueError, match="a bug"):
        objective.evaluate(tiny.point_from_params({"init_scale": 1.0}), 0)


def test_non_finite_objective_fails_but_a_non_finite_recorded_proxy_does_not(tiny, digits, monkeypatch) -> None:
    nan_proxy = {"value": "n_params"}

    def fake_compute(names, inputs):
        return ProxyResult({n: ProxyValue(math.nan if n == nan_proxy["value"] else 2.0) for n in names}, {"ntk": 0.0})

    monkeypatch.setattr(objective_module, "compute_proxies", fake_compute)
    objective = ProxyObjective(tiny, digits, proxies=["synflow"], batch_size=BATCH)
    study = optuna.create_study(directions=objective.directions)
    study.optimize(objective, n_trials=1)
    nan_proxy["value"] = "synflow"
    study.optimize(objective, n_trials=1)
    failed, complete = study.trials
    assert failed.state == TrialState.FAIL
    reason = failed.user_attrs["fail_reason"]
    assert reason.startswith("non-finite objective: default_score = ")
    assert reason.endswith("(proxies n_params = nan)")
    assert complete.state == TrialState.COMPLETE and complete.user_attrs["non_finite"] == ["synflow"]


def test_nb201_trials_store_the_arch_string(tmp_path: Path) -> None:
    space = load_space(Path(__file__).resolve().parents[2] / "search_spaces" / "nb201.yaml")
    rng = np.random.default_rng(0)
    batch = (rng.random((4, 8, 8, 1), dtype=np.float32), np.eye(10, dtype=np.float32)[np.arange(4)])
    objective = ProxyObjective(space, batch, proxies=[], objective={"proxy": "n_params", "direction": "minimize"})
    study = optuna.create_study(directions=objective.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    point = space.point_from_params(trial.params)
    assert trial.user_attrs["nb201_arch"] == nb201_arch_string(point.arch)
    assert re.fullmatch(r"\|.+~0\|\+\|.+~0\|.+~1\|\+\|.+~0\|.+~1\|.+~2\|", trial.user_attrs["nb201_arch"])


def test_multi_objective_study(tiny, digits) -> None:
    objective = ProxyObjective(tiny, digits, proxies=[], batch_size=BATCH, objective=[
        {"proxy": "ntk_effective_rank", "direction": "maximize"}, {"proxy": "n_params", "direction": "minimize"}])
    assert objective.directions == ["maximize", "minimize"]
    study = optuna.create_study(directions=objective.directions, sampler=optuna.samplers.NSGAIISampler(seed=0))
    study.optimize(objective, n_trials=3)
    assert all(t.state == TrialState.COMPLETE and len(t.values) == 2 for t in study.trials)
    for trial in study.trials:
        assert trial.values == [trial.user_attrs["proxies"]["ntk_effective_rank"], 1210.0]
    best = max(study.trials, key=lambda t: t.values[0])
    assert [t.number for t in study.best_trials] == [best.number]


def test_unknown_recorded_proxy(tiny, digits) -> None:
    with pytest.raises(ValueError, match="unknown proxies bogus"):
        ProxyObjective(tiny, digits, proxies=["bogus"], batch_size=BATCH)


# -- objective specifications (no model) ---------------------------------------------------------------------
def test_as_objective_forms() -> None:
    assert as_objective(None).targets == (ScoreTarget(),)
    assert as_objective("default_score").targets == (ScoreTarget(),)
    assert as_objective("ntk_condition").targets == (ProxyTarget("ntk_condition", "minimize"),)  # sign −1
    assert as_objective(ProxyTarget("ntk_trace", "minimize")).directions == ["minimize"]
    objective = as_objective(["ntk_trace", {"proxy": "flops", "direction": "minimize"}])
    assert objective.names == ["ntk_trace", "flops"] and objective.directions == ["maximize", "minimize"]
    assert as_objective(objective) is objective
    with pytest.raises(ConfigError, match="objective: 'nope' is not allowed"):
        as_objective("nope")


def test_weighted_log() -> None:
    target = as_objective({"combine": "weighted_log", "proxies": {"ntk_trace": 1.0, "ntk_condition": 2.0}})
    assert target.targets == (WeightedLog((("ntk_trace", 1.0), ("ntk_condition", 2.0))),)
    assert target({"ntk_trace": math.e, "ntk_condition": math.e ** 2}) == pytest.approx((1 - 4,))
    assert math.isnan(target({"ntk_trace": 0.0, "ntk_condition": 1.0})[0])
    assert Objective((WeightedLog((("ntk_trace", 1.0),)),)).proxies == ("ntk_trace",)


LINEARISED = ["lin_train_loss", "lin_val_loss", "lin_val_accuracy", "ntk_complexity"]


def test_linearised_scores_follow_the_learning_rate_and_the_init_scale(tmp_path: Path, digits) -> None:
    """Two candidates differing only in the (SGD) learning rate or the init scale score as the linearised dynamics
    predict: a larger stable step fits the training batch further; a larger init scale leaves larger random
    outputs f₀ that training on A does not remove on held-out data."""
    space = load_space(write_space(tmp_path, {
        "family": "mlp",
        "hyperparameters": {"depth": 1, "width": 16, "init_scale": {"type": "float", "low": 0.5, "high": 2.0}},
        "train": {"optimizer": "sgd", "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
                  "batch_size": 32, "epochs": 1}}))
    objective = ProxyObjective(space, digits, proxies=LINEARISED, objective="lin_val_accuracy", batch_size=BATCH)
    assert objective.x_val.shape == (256, 8, 8, 1) and objective.train_size == len(digits.y_train)

    def scores(**params: float) -> dict[str, float]:
        evaluation = objective.evaluate(space.point_from_params(params), 0)  # same trial: same initial key
        return {name: v.value for name, v in evaluation.proxies.items()}

    slow, fast = scores(init_scale=1.0, learning_rate=1e-3), scores(init_scale=1.0, learning_rate=1e-1)
    assert fast["lin_train_loss"] < 0.8 * slow["lin_train_loss"]
    # no learning rate in the complexity (equal up to rounding: a bucket's second candidate runs padded)
    assert fast["ntk_complexity"] == pytest.approx(slow["ntk_complexity"], rel=1e-6)
    small, large = scores(init_scale=0.5, learning_rate=1e-2), scores(init_scale=2.0, learning_rate=1e-2)
    assert large["lin_val_loss"] > 2 * small["lin_val_loss"]
    options = objective.linearised_options(space.point_from_params({"init_scale": 1.0, "learning_rate": 0.05}))
    assert options.learning_rate == pytest.approx(0.005) and options.steps == schedule_steps(
        {"batch_size": 32, "epochs": 1}, len(digits.y_train))


def test_held_out_proxies_need_a_dataset_with_a_validation_split(tiny, digits) -> None:
    x, y = scoring_batch(digits, BATCH, seed=0)
    with pytest.raises(ValueError, match="lin_val_loss need a held-out batch"):
        ProxyObjective(tiny, (x, y), proxies=["lin_val_loss"])
    objective = ProxyObjective(tiny, (x, y), proxies=["lin_train_loss"])  # the training-batch ones need none
    assert objective.x_val is None


@pytest.mark.parametrize(("recorded", "held_out"), [([], False), (["lin_val_accuracy"], True)])
def test_the_held_out_batch_reaches_the_proxies_only_when_one_reads_it(tiny, digits, monkeypatch, recorded,
                                                                        held_out) -> None:
    seen = []

    def fake_compute(names, inputs):
        seen.append(inputs.x_val is not None and inputs.y_val is not None)
        return ProxyResult({n: ProxyValue(2.0) for n in names}, {})

    monkeypatch.setattr(objective_module, "compute_proxies", fake_compute)
    objective = ProxyObjective(tiny, digits, proxies=recorded, batch_size=BATCH, buckets=None)
    assert objective.x_val is not None  # drawn either way; handed on only when needed
    optuna.create_study(directions=objective.directions).optimize(objective, n_trials=1)
    assert seen == [held_out]
