"""The leaderboard of a study as a pandas DataFrame: one row per trial, best first, failures last.

Columns, in order:

* ``rank`` (1 = best; empty for unfinished and failed trials), ``trial``, ``state``, ``fail_reason`` (when
  a trial failed: why, or how it was interrupted and whether it was retried);
* ``objective:<name>`` for each objective; ``pareto_front`` (1 = non-dominated) for several objectives;
* ``rank_aggregate``: the mean over the recorded proxies with a registry sign of each proxy's rank among the
  completed trials (1 = best by that proxy; missing values rank last). An offline score only: it changes
  when trials are added, which is why searches do not optimise it (:mod:`ntksearch.search.targets`);
* ``az_nas`` (only when the four AZ-NAS terms were recorded): AZ-NAS's log-rank aggregate of those terms over
  the completed trials (:func:`ntksearch.proxies.az_nas_rank_score`; larger is better), offline for the same
  reason;
* confirmation, for the fields some trial has: ``val_accuracy``, ``val_loss``, ``diverged``, ``confirm_lr``,
  ``confirm_seconds``, ``confirm_selected`` (top/random), ``confirm_error``;
* ``arch`` (the NAS-Bench-201 string for nb201, else the architecture JSON), ``param:<name>`` for every
  sampled hyperparameter ``arch`` does not show already (the training ones: learning rate, optimizer...),
  ``n_params``, ``flops``;
* every recorded proxy ``<name>`` with ``<name>_stderr``;
* ``seconds:build`` and ``seconds:<proxy group>``, ``duration_s`` (the whole trial).

Completed trials are ordered by the objective (several objectives: by Pareto front, then the first
objective); running or waiting trials follow, failed ones come last. ``frame.attrs`` holds ``objectives``
(the objective columns), ``directions`` and ``study``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ntksearch.models import nb201_edges
from ntksearch.proxies import AZ_NAS_TERMS, PROXIES, az_nas_rank_score
from ntksearch.search import attrs

__all__ = ["leaderboard_frame", "objective_columns", "pareto_ranks"]

_CONFIRM_COLUMNS = {"val_accuracy": "val_accuracy", "val_loss": "val_loss", "diverged": "diverged",
                    "learning_rate": "confirm_lr", "seconds": "confirm_seconds", "selected": "confirm_selected",
                    "error": "confirm_error"}
_STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.RUNNING: 1, TrialState.WAITING: 1, TrialState.PRUNED: 2,
                TrialState.FAIL: 3}


def objective_columns(study: optuna.Study) -> list[str]:
    """``objective:<metric name>`` per objective (``objective:value<i>`` when the study has no metric names)."""
    names = study.metric_names or (["value"] if len(study.directions) == 1 else
                                   [f"value{i}" for i in range(len(study.directions))])
    return [f"objective:{name}" for name in names]


def leaderboard_frame(study: optuna.Study) -> pd.DataFrame:
    """The ranked leaderboard of ``study`` (see the module docstring for the columns)."""
    trials = study.get_trials(deepcopy=False)
    objectives = objective_columns(study)
    directions = ["maximize" if d == StudyDirection.MAXIMIZE else "minimize" for d in study.directions]
    confirmed = attrs.confirmations(study.user_attrs)
    retried_as = attrs.retry_links(trials)
    by_ctrl_c = attrs.interruptions(study.user_attrs)
    frame = pd.DataFrame([_row(t, objectives, confirmed.get(t.number), retried_as.get(t.number), t.number in by_ctrl_c)
                          for t in trials])
    frame = frame.reindex(columns=_column_order(frame, objectives))
    complete = (frame["state"] == TrialState.COMPLETE.name).to_numpy() if len(frame) else np.zeros(0, bool)
    after_objectives = frame.columns.get_loc(objectives[-1]) + 1
    if len(directions) > 1:
        frame.insert(after_objectives, "pareto_front", pd.array([pd.NA] * len(frame), dtype="Int64"))
        oriented = _oriented(frame.loc[complete, objectives], directions)
        frame.loc[complete, "pareto_front"] = pareto_ranks(oriented)
    position = after_objectives + (len(directions) > 1)
    frame.insert(position, "rank_aggregate", _rank_aggregate(frame, complete))
    if all(term in frame for term in AZ_NAS_TERMS):
        frame.insert(position + 1, "az_nas", _az_nas(frame, complete))
    frame = frame.iloc[_order(frame, complete, objectives, directions)].reset_index(drop=True)
    ranks = np.where(frame["state"] == TrialState.COMPLETE.name, np.arange(1, len(frame) + 1), 0)
    frame.insert(0, "rank", pd.array([r if r else pd.NA for r in ranks], dtype="Int64"))
    empty = [c for c in ("fail_reason", *_CONFIRM_COLUMNS.values()) if frame[c].isna().all()]
    frame = frame.drop(columns=empty)
    frame.attrs.update(objectives=objectives, directions=directions, study=study.study_name)
    return frame


def pareto_ranks(values: np.ndarray) -> np.ndarray:
    """Non-dominated sorting of ``values`` (n, m), all to be minimised: front index per row, 1 = Pareto front."""
    values = np.asarray(values, float)
    ranks = np.zeros(len(values), int)
    remaining = np.arange(len(values))
    front = 1
    while remaining.size:
        v = values[remaining]
        dominated = ((v[None, :, :] <= v[:, None, :]).all(-1) & (v[None, :, :] < v[:, None, :]).any(-1)).any(1)
        ranks[remaining[~dominated]] = front
        remaining = remaining[dominated]
        front += 1
    return ranks


def _row(trial: FrozenTrial, objectives: list[str], confirmed: dict[str, Any] | None, retry: int | None,
         ctrl_c: bool) -> dict[str, Any]:
    user = trial.user_attrs
    row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name}
    row.update(zip(objectives, trial.values or [np.nan] * len(objectives), strict=True))
    for key, column in _CONFIRM_COLUMNS.items():
        row[column] = (confirmed or {}).get(key)
    row["arch"] = user.get(attrs.NB201_ARCH, user.get(attrs.ARCH))
    shown = _shown_hyperparameters(user)
    row.update({f"param:{name}": value for name, value in trial.params.items() if not _is_shown(name, shown)})
    row[attrs.N_PARAMS], row[attrs.FLOPS] = user.get(attrs.N_PARAMS), user.get(attrs.FLOPS)
    for name, value in user.get(attrs.PROXIES, {}).items():
        row[name] = value
        row[f"{name}_stderr"] = user.get(attrs.STDERR, {}).get(name)
    row.update({f"seconds:{name}": s for name, s in user.get(attrs.SECONDS, {}).items()})
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        row["duration_s"] = (trial.datetime_complete - trial.datetime_start).total_seconds()
    row["fail_reason"] = user.get(attrs.FAIL_REASON)
    if trial.state == TrialState.FAIL and row["fail_reason"] is None:
        what = "interrupted by Ctrl-C (SIGINT)" if ctrl_c else "interrupted: its process was killed or died"
        then = "not retried yet (run --resume retries it)" if retry is None else f"retried as trial {retry}"
        row["fail_reason"] = f"{what}; {then}"
    return row


def _shown_hyperparameters(user: dict[str, Any]) -> set[str]:
    """The hyperparameter names the ``arch`` column shows (per-layer ones under their base name)."""
    if attrs.NB201_ARCH in user:
        return set(nb201_edges(user[attrs.NB201_ARCH]))
    try:
        arch = json.loads(user.get(attrs.ARCH) or "{}")
    except ValueError:
        return set()
    return set(arch) if isinstance(arch, dict) else set()


def _is_shown(param: str, shown: set[str]) -> bool:
    """``param`` is a shown hyperparameter, or the i-th layer's value of one (``width_0``)."""
    base, _, index = param.rpartition("_")
    return param in shown or (index.isdigit() and base in shown)


def _column_order(frame: pd.DataFrame, objectives: list[str]) -> list[str]:
    fixed_head = ["trial", "state", "fail_reason", *objectives, *_CONFIRM_COLUMNS.values(), "arch"]
    params = sorted(c for c in frame.columns if c.startswith("param:"))
    head = fixed_head + params + [attrs.N_PARAMS, attrs.FLOPS]
    proxies = [c for name in PROXIES for c in (name, f"{name}_stderr") if c in frame.columns and c not in head]
    seconds = sorted(c for c in frame.columns if c.startswith("seconds:"))
    rest = [c for c in frame.columns if c not in head and c not in proxies and c not in seconds
            and c != "duration_s"]
    return head + proxies + rest + seconds + ["duration_s"]


def _oriented(values: pd.DataFrame, directions: list[str]) -> np.ndarray:
    """Objective values flipped so that smaller is better."""
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return values.to_numpy(float) * signs


def _rank_aggregate(frame: pd.DataFrame, complete: np.ndarray) -> pd.Series:
    ranked = [name for name, proxy in PROXIES.items() if proxy.sign != 0 and name in frame]
    out = pd.Series(np.nan, index=frame.index)
    if ranked and complete.any():
        oriented = frame.loc[complete, ranked].apply(pd.to_numeric, errors="coerce")
        oriented = oriented * [PROXIES[name].sign for name in ranked]
        oriented = oriented.where(np.isfinite(oriented))
        out[complete] = oriented.rank(ascending=False, method="average", na_option="bottom").mean(axis=1)
    return out


def _az_nas(frame: pd.DataFrame, complete: np.ndarray) -> pd.Series:
    out = pd.Series(np.nan, index=frame.index)
    if complete.any():
        terms = frame.loc[complete, list(AZ_NAS_TERMS)].apply(pd.to_numeric, errors="coerce")
        out[complete] = az_nas_rank_score(terms)
    return out


def _order(frame: pd.DataFrame, complete: np.ndarray, objectives: list[str], directions: list[str]) -> np.ndarray:
    """Row order: completed best first, then running/waiting/pruned, failed last; ties by trial number."""
    state = frame["state"].map({s.name: o for s, o in _STATE_ORDER.items()}).to_numpy()
    first = _oriented(frame[objectives[:1]], directions[:1])[:, 0]
    first = np.where(complete, first, np.inf)
    front = frame["pareto_front"].to_numpy(float, na_value=np.inf) if "pareto_front" in frame else np.zeros(len(frame))
    return np.lexsort((frame["trial"].to_numpy(), first, front, state))
