"""A plain-text progress line for searches: an Optuna callback that prints, no terminal control needed."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from ntksearch.search import attrs

__all__ = ["ProgressLine", "best_summary"]


class ProgressLine:
    """Print ``[finished/total] rate cand/s | complete C failed F | best ...`` after trials, and each failure.

    Args:
      total: the study's target number of finished trials (``None``: unknown).
      stream: where to print (default: the current ``sys.stdout``).
      every: at most one line per ``every`` seconds (the line of the last trial always prints).
    Counts are over the whole study (every process); the rate is this process's candidates per second.
    """

    def __init__(self, total: int | None, *, stream: TextIO | None = None, every: float = 1.0):
        self.total = total
        self.stream = stream
        self.every = every
        self.start = time.perf_counter()
        self.last = -float("inf")
        self.done = 0
        self._lock = threading.Lock()  # trials of several threads (``threads:``) finish at once

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with self._lock:
            self._print(study, trial)

    def _print(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.done += 1
        stream = self.stream or sys.stdout
        if trial.state == TrialState.FAIL:
            stream.write(f"trial {trial.number} failed: {trial.user_attrs.get(attrs.FAIL_REASON, 'no reason')}\n")
        now = time.perf_counter()
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        finished = len(trials)
        if now - self.last < self.every and finished != self.total:
            return
        self.last = now
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        total = "?" if self.total is None else self.total
        rate = self.done / max(now - self.start, 1e-9)
        stream.write(f"[{finished}/{total}] {rate:.2f} cand/s | complete {complete} failed "
                     f"{finished - complete} | {best_summary(study)}\n")
        stream.flush()


def best_summary(study: optuna.Study) -> str:
    """``best default_score=1.23 (trial 7)``, or the Pareto front size for several objectives."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return "no completed trial yet"
    if len(study.directions) > 1:
        return f"Pareto front: {len(study.best_trials)} trials"
    best = study.best_trial
    name = (study.metric_names or ["objective"])[0]
    return f"best {name}={best.value:.6g} (trial {best.number})"
