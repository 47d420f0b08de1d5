"""Scoring candidates ahead in threads or processes, reproducibly: :func:`optimize_ahead`.

A cold search spends most of its time tracing and compiling each new candidate's programs.
``optimize_ahead(study, objective, threads=k)`` keeps k candidates in flight: the calling thread asks Optuna for
trials and samples their points **in trial order**, k workers build and score them
(:meth:`~ntksearch.search.ProxyObjective.evaluate`), and the calling thread stores and tells the results **in
trial order**, then runs the callbacks. So one candidate compiles while another runs.

The workers are threads (``threads=k``) or processes (``processes=k``). XLA compiles and runs outside Python's
global interpreter lock, but tracing a model, building it and the estimators' host-side steps hold it, so
threads overlap only part of a candidate's time; worker processes overlap all of it, at the price of starting
k Python processes (a few seconds, once per call) that each hold a copy of the objective (pickled:
the scoring batches, the space, the options) and compile their own programs: a shape bucket's program compiles
once per worker process that meets it (once in all with threads), unless the persistent compilation cache, shared
on disk, already holds it. Worker processes are spawned, ignore Ctrl-C (the calling process handles it),
inherit the environment and the calling process's JAX settings (float64, the compilation cache), do not
preallocate accelerator memory (several share a device), and bound their own compiled programs
(:class:`~ntksearch.search.compiled.ClearCompiledPrograms`); they return :meth:`Evaluation.detached
<ntksearch.search.Evaluation.detached>` evaluations (the model's size, not the model). As with any spawned
process, a script that calls ``optimize_ahead(processes=k)`` needs the ``if __name__ == "__main__":`` guard
(the workers import the script's main module); ``ntksearch run`` has it.

Reproducible: trial n is sampled right after trial n − k is told, so the sampler sees exactly trials 0 … n − k,
whatever the timing, and draws its random numbers in trial order; each candidate is scored against the shape
buckets of exactly those trials (``evaluate(met=...)``), and its values depend only on its point, its number
and them. A search is therefore a function of (seed, k), the same with threads and with processes, and k = 1
samples as Optuna's sequential ``study.optimize`` does. (``study.optimize(n_jobs=k)`` instead reseeds the
sampler for every trial and samples in whichever order the threads ask: not reproducible.)

What ``study.optimize`` does besides, and this loop does not: heartbeats of running trials, so if the process
dies its trials stay RUNNING until ``ntksearch run --resume`` recovers them (as it does for any ``run``);
workers sharing a study keep ``study.optimize`` (:func:`~ntksearch.search.run_search` with ``join``). And
``study.stop()``: give ``n_trials`` or ``timeout`` instead.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import jax
import optuna
from optuna.trial import FrozenTrial, TrialState

from ntksearch.search import attrs
from ntksearch.search.compiled import ClearCompiledPrograms
from ntksearch.search.proxy_objective import Evaluation, ProxyObjective
from ntksearch.spaces import Point

__all__ = ["WorkerProcessDied", "optimize_ahead"]

Callback = Callable[[optuna.Study, FrozenTrial], None]


class WorkerProcessDied(RuntimeError):
    """A worker process of :func:`optimize_ahead` ended without returning its candidate's evaluation."""


# the JAX settings a worker process takes over from the calling process
FORWARDED_JAX_CONFIG = ("jax_enable_x64", "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                        "jax_persistent_cache_min_entry_size_bytes", "jax_default_matmul_precision")


def optimize_ahead(study: optuna.Study, objective: ProxyObjective, *, threads: int = 1, processes: int = 1,
                   n_trials: int | None = None, timeout: float | None = None, callbacks: Sequence[Callback] = (),
                   started: list[int] | None = None) -> None:
    """Run trials of ``study`` on ``objective`` with k candidates in flight (see the module docstring).

    Args:
      threads: k, scored in threads of this process. processes: k, scored in worker processes instead (at most
        one of the two above 1).
      n_trials: trials to run (None: no limit). timeout: seconds after which no new trial starts (None: none).
      callbacks: called as ``callback(study, frozen_trial)`` after each trial is told, in trial order.
      started: the number of every trial asked is appended to it.

    Raises:
      Whatever scoring a candidate raised (a bug: the trial is failed, as are the trials in flight) or a callback
      raised. WorkerProcessDied: a worker process ended abruptly (killed, out of memory); the trials in flight
      are failed. KeyboardInterrupt leaves the trials in flight RUNNING, for the caller to record
      (:func:`~ntksearch.search.study.record_interruption`); it returns once their workers finish.
    """
    if threads < 1 or processes < 1:
        raise ValueError(f"threads and processes must be ≥ 1, got threads={threads}, processes={processes}")
    if threads > 1 and processes > 1:
        raise ValueError(f"score in threads or in processes, not both (threads={threads}, processes={processes})")
    in_flight_max = max(threads, processes)
    start = time.monotonic()
    asked = 0
    in_flight: deque[tuple[optuna.Trial, Future[Evaluation]]] = deque()

    def more() -> bool:
        return (n_trials is None or asked < n_trials) and (timeout is None or time.monotonic() - start < timeout)

    pool, evaluate = _workers(objective, threads, processes)
    with pool:
        try:
            while True:
                while len(in_flight) < in_flight_max and more():
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
                    in_flight.append((trial, _submit(pool, evaluate, point, trial.number, objective.buckets_met)))
                if not in_flight:
                    return
                trial, future = in_flight[0]
                values = objective.store(trial, future.result())
                in_flight.popleft()
                frozen = study.tell(trial, values)
                for callback in callbacks:
                    callback(study, frozen)
        except BrokenProcessPool as exc:
            numbers = _fail_in_flight(study, in_flight, "its worker process died (killed, or out of memory?)")
            raise WorkerProcessDied(f"a worker process of the search died (killed, or out of memory?) while trials "
                                    f"{numbers} were in flight; they are recorded as failed, and `ntksearch run "
                                    "--resume` continues the search") from exc
        except Exception:
            _fail_in_flight(study, in_flight)
            raise


def _submit(pool: Executor, evaluate: Evaluate, *args: Any) -> Future[Evaluation]:
    """``pool.submit(evaluate, *args)``; a process pool broken since the last trial gives a failed future, so
    that the trial fails with those in flight."""
    try:
        return pool.submit(evaluate, *args)
    except BrokenProcessPool as exc:
        future: Future[Evaluation] = Future()
        future.set_exception(exc)
        return future


def _fail_in_flight(study: optuna.Study, in_flight: Sequence[tuple[optuna.Trial, Future[Evaluation]]],
                    reason: str | None = None) -> list[int]:
    """Fail the trials in flight (with ``reason`` as their ``fail_reason``); their numbers."""
    for trial, future in in_flight:
        future.cancel()
        if reason is not None:
            trial.set_user_attr(attrs.FAIL_REASON, reason)
        study.tell(trial, state=TrialState.FAIL)
    return [trial.number for trial, _ in in_flight]


Evaluate = Callable[[Point, int, frozenset[Any]], Evaluation]  # (point, number, met) -> evaluation


def _workers(objective: ProxyObjective, threads: int, processes: int) -> tuple[Executor, Evaluate]:
    """The pool that scores candidates, and the function it runs."""
    if processes > 1:
        settings = {name: getattr(jax.config, name) for name in FORWARDED_JAX_CONFIG}
        return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker_process,
                                   initargs=(objective, settings)), _evaluate_in_worker_process

    def evaluate(point: Point, number: int, met: frozenset[Any]) -> Evaluation:
        return objective.evaluate(point, number, met=met)

    return ThreadPoolExecutor(threads, thread_name_prefix="ntksearch-score"), evaluate


# A worker process's copy of the objective and the bound on its compiled programs (set once by
# _start_worker_process, the pool's initializer, in the worker process only).
_worker_objective: tuple[ProxyObjective, ClearCompiledPrograms] | None = None


def _start_worker_process(objective: ProxyObjective, settings: dict[str, Any]) -> None:
    """Initialise a worker process (see the module docstring)."""
    global _worker_objective
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    for name, value in settings.items():
        jax.config.update(name, value)
    _worker_objective = (objective, ClearCompiledPrograms(objective))


def _evaluate_in_worker_process(point: Point, number: int, met: frozenset[Any]) -> Evaluation:
    """Score one candidate in a worker process; the detached evaluation goes back to the calling process."""
    assert _worker_objective is not None, "not a worker process of optimize_ahead"
    objective, bound = _worker_objective
    evaluation = objective.evaluate(point, number, met=met)
    bound.add(evaluation.programs)
    return evaluation.detached()
