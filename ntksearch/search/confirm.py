"""Confirmation training: train the best candidates of a finished search (and some random ones) for real.

The ``top_k`` best completed trials (by the objective; for several objectives, the Pareto front ordered by
the first objective and capped at ``top_k``), plus ``random_k`` other completed trials drawn with the seed
(they make the proxy-quality correlations honest: the top alone is a range-restricted sample), are rebuilt
exactly from their stored params with their own initialisation key (:func:`candidate_keys`) and trained with
:func:`ntksearch.train.train_model` using their own training hyperparameters. ``learning_rate: auto`` becomes
``lr_fraction × max_stable_lr`` (the stored proxy, or computed on the scoring batch when it was not recorded).

Each result is stored in the study as ``study.user_attrs["confirm:<trial number>"]``: ``val_accuracy``,
``val_loss``, ``diverged``, ``seconds``, ``steps``, ``history`` (per-epoch curve), ``learning_rate``,
``epochs`` and ``selected`` (``top`` or ``random``); a candidate that cannot be trained stores ``error``.
Stored results are never recomputed, so confirming again after ``--resume`` trains only what is new.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ntksearch.data import Dataset, subsample
from ntksearch.proxies import ProxyInputs, compute_proxies
from ntksearch.search import attrs
from ntksearch.search.config import ConfirmSpec
from ntksearch.search.proxy_objective import ProxyObjective, candidate_keys
from ntksearch.train import TrainHParams, train_model

__all__ = ["confirm_candidates", "confirm_trial", "select_candidates"]


def select_candidates(study: optuna.Study, *, top_k: int, random_k: int, seed: int
                      ) -> list[tuple[FrozenTrial, str]]:
    """``(trial, "top" | "random")`` pairs: the best ``top_k`` then ``random_k`` other completed trials."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    first = study.directions[0]
    ranked = complete if len(study.directions) == 1 else study.best_trials
    ranked = sorted(ranked, key=lambda t: t.values[0], reverse=first == optuna.study.StudyDirection.MAXIMIZE)
    top = ranked[:top_k]
    chosen = {t.number for t in top}
    rest = [t for t in complete if t.number not in chosen]
    picks = np.random.default_rng(seed).permutation(len(rest))[:random_k]
    return [(t, "top") for t in top] + [(rest[i], "random") for i in sorted(picks)]


def confirm_trial(trial: FrozenTrial, objective: ProxyObjective, data: Dataset, spec: ConfirmSpec
                  ) -> dict[str, Any]:
    """Rebuild ``trial``'s candidate exactly and train it on ``data``; the result to store (module docstring)."""
    space = objective.space
    keys = candidate_keys(objective.seed, trial.number)
    point = space.point_from_params(trial.params)
    built = space.build(point, input_shape=tuple(objective.x.shape[1:]), n_classes=objective.y.shape[-1],
                        key=keys.init)
    train = dict(point.train)
    if spec.epochs is not None:
        train["epochs"] = spec.epochs
    if train["learning_rate"] == "auto":
        stable = trial.user_attrs.get(attrs.PROXIES, {}).get("max_stable_lr")
        if stable is None:
            inputs = ProxyInputs.from_model(built, objective.x, objective.y, key=keys.proxies, ntk=objective.ntk)
            stable = compute_proxies(["max_stable_lr"], inputs).values["max_stable_lr"].value
        if not (math.isfinite(stable) and stable > 0):
            return {"error": f"learning_rate auto: max_stable_lr is {stable}"}
        train["learning_rate"] = spec.lr_fraction * stable
    hparams = TrainHParams.from_dict(train)
    result = train_model(built, data, hparams, key=keys.train)
    return {"val_accuracy": result.val_accuracy, "val_loss": result.val_loss, "diverged": result.diverged,
            "seconds": result.seconds, "steps": result.steps, "history": result.history,
            "learning_rate": hparams.learning_rate, "epochs": hparams.epochs}


def confirm_candidates(study: optuna.Study, objective: ProxyObjective, dataset: Dataset, spec: ConfirmSpec, *,
                       log: Callable[[str], None] | None = None) -> dict[int, dict[str, Any]]:
    """Train the selected candidates not confirmed yet and store their results; returns every stored result.

    ``dataset`` is subsampled to ``spec.max_train``/``spec.max_val`` (stratified, seeded). ``log`` receives
    one line per trained candidate.
    """
    data = subsample(dataset, max_train=spec.max_train, max_val=spec.max_val, seed=objective.seed)
    done = attrs.confirmations(study.user_attrs)
    selected = select_candidates(study, top_k=spec.top_k, random_k=spec.random_k, seed=objective.seed)
    todo = [(t, why) for t, why in selected if t.number not in done]
    for i, (trial, why) in enumerate(todo, start=1):
        result = {**confirm_trial(trial, objective, data, spec), "selected": why}
        study.set_user_attr(attrs.confirm_key(trial.number), result)
        done[trial.number] = result
        if log is not None:
            outcome = result.get("error") or (f"val_accuracy {result['val_accuracy']:.4f}, lr "
                                              f"{result['learning_rate']:.3g}, {result['seconds']:.1f} s"
                                              + (", diverged" if result["diverged"] else ""))
            log(f"confirm [{i}/{len(todo)}] trial {trial.number} ({why}): {outcome}")
    return done
