"""Confirmation training: selection, exact rebuilding, the auto learning rate, idempotent storage."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution

import ntksearch.search.confirm as confirm_module
from ntksearch.search import (
    ConfirmSpec,
    ProxyObjective,
    confirm_candidates,
    experiment_objective,
    load_experiment,
    run_search,
    select_candidates,
)
from tests.search.helpers import write_experiment


def _study(directions: list[str], values: list[list[float]]) -> optuna.Study:
    study = optuna.create_study(directions=directions)
    for i, v in enumerate(values):
        study.add_trial(optuna.create_trial(values=v, params={"x": float(i)},
                                            distributions={"x": FloatDistribution(0, 100)}))
    study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.FAIL))
    return study


def test_select_top_and_random() -> None:
    study = _study(["minimize"], [[5.0], [1.0], [3.0], [4.0], [2.0]])
    selected = select_candidates(study, top_k=2, random_k=2, seed=0)
    assert [(t.number, why) for t, why in selected[:2]] == [(1, "top"), (4, "top")]
    assert {why for _, why in selected[2:]} == {"random"} and len(selected) == 4
    assert {t.number for t, _ in selected[2:]} <= {0, 2, 3}
    assert select_candidates(study, top_k=2, random_k=2, seed=0) == selected  # seeded


def test_select_pareto_front_capped_by_the_first_objective() -> None:
    # maximise accuracy-like a, minimise size b: front = trials 0, 1, 3 (2 is dominated by 1)
    study = _study(["maximize", "minimize"], [[0.9, 10.0], [0.8, 5.0], [0.7, 6.0], [0.6, 1.0]])
    selected = select_candidates(study, top_k=2, random_k=5, seed=0)
    assert [(t.number, why) for t, why in selected] == [(0, "top"), (1, "top"), (2, "random"), (3, "random")]


def test_confirmation_rebuilds_exactly_and_is_idempotent(tmp_path: Path, monkeypatch) -> None:
    spec = ConfirmSpec(top_k=2, random_k=1, max_train=200, epochs=1, lr_fraction=0.5)
    experiment = load_experiment(write_experiment(tmp_path, trials=3, confirm=vars(spec)))
    study = run_search(experiment)
    objective = experiment_objective(experiment)
    lines: list[str] = []
    results = confirm_candidates(study, objective, experiment.dataset.load(), spec, log=lines.append)
    assert len(results) == 3 and len(lines) == 3 and lines[0].startswith("confirm [1/3] trial")
    stored = {k: v for k, v in study.user_attrs.items() if k.startswith("confirm:")}
    assert stored == {f"confirm:{n}": r for n, r in results.items()}
    assert sorted(r["selected"] for r in results.values()) == ["random", "top", "top"]

    with_lr = ProxyObjective(experiment.space, experiment.dataset.load(), proxies=["max_stable_lr"], seed=0,
                             batch_size=16)
    for number, result in results.items():
        trial = study.trials[number]
        assert 0 <= result["val_accuracy"] <= 1 and result["epochs"] == 1 and len(result["history"]) == 1
        rebuilt = with_lr.evaluate(experiment.space.point_from_params(trial.params), number)
        assert rebuilt.values == tuple(trial.values)  # the same candidate, exactly
        assert result["learning_rate"] == pytest.approx(0.5 * rebuilt.proxies["max_stable_lr"].value, rel=1e-6)

    def no_training(*args, **kwargs):
        raise AssertionError("a stored confirmation was recomputed")

    monkeypatch.setattr(confirm_module, "train_model", no_training)
    assert confirm_candidates(study, objective, experiment.dataset.load(), spec) == results
