"""Scoring candidates ahead in threads, reproducibly: :func:`optimize_ahead`.

A cold search spends most of its time compiling each new candidate's programs, and XLA compiles (and runs)
outside Python's global interpreter lock. ``optimize_ahead(study, objective, threads=k)`` keeps k candidates in
flight: the calling thread asks Optuna for trials and samples their points **in trial order**, k worker threads
build and score them (:meth:`~ntksearch.search.ProxyObjective.evaluate`), and the calling thread stores and
tells the results **in trial order**, then runs the callbacks. So one candidate compiles while another runs.

Reproducible: trial n is sampled right after trial n − k is told, so the sampler sees exactly trials 0 … n − k,
whatever the timing, and draws its random numbers in trial order; each candidate is scored against the shape
buckets of exactly those trials (``evaluate(met=...)``), and its values depend only on its point, its number
and them. A search is therefore a function of (seed, k), and k = 1 samples as Optuna's sequential
``study.optimize`` does. (``study.optimize(n_jobs=k)`` instead reseeds the sampler for every trial and samples
in whichever order the threads ask: not reproducible.)

What ``study.optimize`` does besides, and this loop does not: heartbeats of running trials, so if the process
dies its trials stay RUNNING until ``ntksearch run --resume`` recovers them (as it does for any ``run``);
workers sharing a study keep ``study.optimize`` (:func:`~ntksearch.search.run_search` with ``join``). And
``study.stop()``: give ``n_trials`` or ``timeout`` instead.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import optuna
from optuna.trial import FrozenTrial, TrialState

from ntksearch.search.proxy_objective import Evaluation, ProxyObjective

__all__ = ["optimize_ahead"]

Callback = Callable[[optuna.Study, FrozenTrial], None]


def optimize_ahead(study: optuna.Study, objective: ProxyObjective, *, threads: int, n_trials: int | None = None,
                   timeout: float | None = None, callbacks: Sequence[Callback] = (),
                   started: list[int] | None = None) -> None:
    """Run trials of ``study`` on ``objective`` with ``threads`` candidates in flight (see the module docstring).

    Args:
      n_trials: trials to run (None: no limit). timeout: seconds after which no new trial starts (None: none).
      callbacks: called as ``callback(study, frozen_trial)`` after each trial is told, in trial order.
      started: the number of every trial asked is appended to it.

    Raises:
      Whatever scoring a candidate raised (a bug: the trial is failed, as are the trials in flight) or a callback
      raised. KeyboardInterrupt leaves the trials in flight RUNNING, for the caller to record
      (:func:`~ntksearch.search.study.record_interruption`); it returns once their threads finish.
    """
    if threads < 1:
        raise ValueError(f"threads must be ≥ 1, got {threads}")
    start = time.monotonic()
    asked = 0
    in_flight: deque[tuple[optuna.Trial, Future[Evaluation]]] = deque()

    def more() -> bool:
        return (n_trials is None or asked < n_trials) and (timeout is None or time.monotonic() - start < timeout)

    with ThreadPoolExecutor(threads, thread_name_prefix="ntksearch-score") as pool:
        try:
            while True:
                while len(in_flight) < threads and more():
                    with warnings.catch_warnings():  # heartbeats are study.optimize's (see the module docstring)
                        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                        trial = study.ask()
                    asked += 1
                    if started is not None:
                        started.append(trial.number)
                    try:
                        point = objective.space.sample(trial)
                    except Exception:
                        study.tell(trial, state=TrialState.FAIL)
                        raise
                    in_flight.append((trial, pool.submit(objective.evaluate, point, trial.number,
                                                         met=objective.buckets_met)))
                if not in_flight:
                    return
                trial, future = in_flight[0]
                values = objective.store(trial, future.result())
                in_flight.popleft()
                frozen = study.tell(trial, values)
                for callback in callbacks:
                    callback(study, frozen)
        except Exception:
            for trial, future in in_flight:
                future.cancel()
                study.tell(trial, state=TrialState.FAIL)
            raise
