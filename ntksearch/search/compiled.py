"""Bounding JAX's caches of compiled programs in long searches: an Optuna callback.

Every new architecture a :class:`~ntksearch.search.ProxyObjective` scores compiles its own programs (NTK
kernels, linearised Lanczos, baselines), and JAX keeps them all. XLA:CPU maps memory for every compiled program
and never unmaps it while it is cached: a process scoring a few hundred new architectures otherwise exhausts
the kernel's limit on memory maps (65,530) and crashes inside the compiler. ``jax.clear_caches()`` drops them,
but it is process-wide (it also drops the programs of anything else the process compiled), so the objective
never calls it: whoever runs the study decides. :func:`ntksearch.search.run_search` (the CLI's loop) passes
:class:`ClearCompiledPrograms`; a long study of your own passes it too::

    objective = ProxyObjective(space, dataset)
    study = objective.create_study()
    study.optimize(objective, n_trials=1000, callbacks=[ClearCompiledPrograms(objective)])
"""

from __future__ import annotations

import threading
from typing import Any

import jax
import optuna
from optuna.trial import FrozenTrial

__all__ = ["ClearCompiledPrograms"]


class ClearCompiledPrograms:
    """Clear JAX's compilation caches once ``objective`` has scored more than ``max_programs`` distinct programs
    since they were last cleared.

    A program is a candidate's ``apply_fn`` (or its shape bucket's padded program): equal objects share compiled
    code, so repeats are free. The count is read after each trial from the objective's ``last_programs`` (those
    of the calling thread), so the callback must run in the process and the thread that evaluated the trial, as
    Optuna's callbacks do, also with ``n_jobs`` > 1. Clearing while another thread compiles or runs a program is
    safe: that thread keeps its program, and only later calls compile again.
    """

    def __init__(self, objective: Any, max_programs: int = 32):
        if max_programs < 1:
            raise ValueError(f"max_programs must be ≥ 1, got {max_programs}")
        self.objective = objective
        self.max_programs = max_programs
        self.programs: set[Any] = set()
        self.clears = 0
        self._lock = threading.Lock()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        del study, trial
        self.add(self.objective.last_programs)

    def add(self, programs: tuple[Any, ...]) -> None:
        """Count ``programs`` (those of one evaluation) and clear the caches if there are now too many."""
        with self._lock:
            self.programs.update(programs)
            if len(self.programs) > self.max_programs:
                jax.clear_caches()
                self.programs.clear()
                self.clears += 1
