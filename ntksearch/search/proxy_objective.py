"""Zero-cost proxies as an Optuna objective: :class:`ProxyObjective`.

Use it in your own study in a few lines::

    from ntksearch.data import load_dataset
    from ntksearch.search import ProxyObjective
    from ntksearch.spaces import load_space

    objective = ProxyObjective(load_space("search_spaces/mlp.yaml"), load_dataset("digits"), seed=0)
    study = objective.create_study()  # the objective's directions and a TPE sampler seeded with seed
    study.optimize(objective, n_trials=20)
    print(study.best_trial.params, study.best_trial.user_attrs["proxies"])

Each trial samples a point of the space, builds the candidate, computes its proxies on one fixed scoring
batch and returns the objective value(s). Only the objective's proxies are computed unless ``proxies=`` asks
for more (``proxies=None``: every proxy the family supports, several times slower: each proxy group compiles
per new architecture). Everything is stored as trial user attributes
(:mod:`ntksearch.search.attrs`). A candidate that cannot be built (the builder raises
:class:`~ntksearch.models.BuildError` or a point ``ConfigError``), whose outputs are not finite
(``NonFiniteModelError``) or whose objective is not finite returns ``nan``: Optuna marks the trial FAIL (no
``catch=`` needed), its ``fail_reason`` says why, and the search goes on; any other exception is a bug and
propagates. Recorded proxies outside the objective may be non-finite without failing the trial (a
baseline's degenerate value should not discard a candidate); they are listed in ``non_finite``.

Randomness is reproducible: candidate ``n`` of a search with ``seed`` uses the keys of
:func:`candidate_keys` (initialisation, proxies, training), so it can be rebuilt exactly from its stored params.
``seed`` also fixes the scoring batch and, through :meth:`ProxyObjective.create_study`, the sampler: a study of
your own made with ``optuna.create_study`` is reproducible only if you seed its sampler too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import optuna

from ntksearch.data import Dataset, scoring_batch
from ntksearch.models import BuildError, BuiltModel, nb201_arch_string
from ntksearch.models.buckets import BucketGrid
from ntksearch.ntk import NonFiniteModelError
from ntksearch.proxies import (
    PROXIES,
    LinearisedOptions,
    NTKOptions,
    ProxyInputs,
    ProxyResult,
    ProxyValue,
    compute_proxies,
)
from ntksearch.proxies.linearised import options_for_training
from ntksearch.search import attrs
from ntksearch.search.bucketed import plan_scoring, search_grid
from ntksearch.search.targets import Objective, as_objective
from ntksearch.spaces import Point, SearchSpace
from ntksearch.validation import ConfigError

__all__ = ["CandidateKeys", "CandidateSize", "Evaluation", "ProxyObjective", "candidate_keys"]

DEFAULT_BATCH_SIZE = 64


class CandidateKeys(NamedTuple):
    """The PRNG keys of one candidate: parameter initialisation, randomised proxies, confirmation training."""

    init: jax.Array
    proxies: jax.Array
    train: jax.Array


def candidate_keys(seed: int, number: int) -> CandidateKeys:
    """Keys of candidate (trial) ``number`` of a search seeded with ``seed``: fold_in(key(seed), number)."""
    base = jax.random.fold_in(jax.random.key(seed), number)
    return CandidateKeys(*(jax.random.fold_in(base, i) for i in range(3)))


class CandidateSize(NamedTuple):
    """What a trial records of a built model (:meth:`Evaluation.detached` keeps it instead of the model)."""

    family: str
    n_params: int
    flops: int


@dataclasses.dataclass(frozen=True, eq=False)
class Evaluation:
    """One scored candidate.

    Attributes:
      point: the sampled point. built: the model (``None`` when it failed to build; only its
        :class:`CandidateSize` in a :meth:`detached` evaluation).
      proxies: computed proxies (empty on failure before scoring).
      seconds: ``build`` and per-proxy-group wall-clock seconds.
      values: the objective values, ``None`` when the candidate failed.
      fail_reason: why it failed, else ``None``.
      programs: the programs (``apply_fn`` objects) its scoring compiled or reused.
      new_buckets: the shape buckets it met first, when scored against a given set of met buckets
        (``evaluate(met=...)``); :meth:`ProxyObjective.store` records them.
    """

    point: Point
    built: BuiltModel | CandidateSize | None
    proxies: dict[str, ProxyValue]
    seconds: dict[str, float]
    values: tuple[float, ...] | None
    fail_reason: str | None = None
    programs: tuple[Any, ...] = ()
    new_buckets: frozenset[Any] = frozenset()

    def detached(self) -> Evaluation:
        """This evaluation without references to compiled code, so that it can be pickled to another process:
        the model replaced by its :class:`CandidateSize`, no programs."""
        size = None if self.built is None else CandidateSize(self.built.family, self.built.n_params, self.built.flops)
        return dataclasses.replace(self, built=size, programs=())

    def user_attrs(self) -> dict[str, Any]:
        """What a trial stores (:mod:`ntksearch.search.attrs`)."""
        out: dict[str, Any] = {attrs.ARCH: json.dumps(self.point.arch), attrs.SECONDS: self.seconds}
        if self.proxies:
            out[attrs.PROXIES] = {name: v.value for name, v in self.proxies.items()}
            out[attrs.STDERR] = {name: v.stderr for name, v in self.proxies.items()}
        if self.built is not None:
            out[attrs.N_PARAMS] = self.built.n_params
            out[attrs.FLOPS] = self.built.flops
            if self.built.family == "nb201":
                out[attrs.NB201_ARCH] = nb201_arch_string(self.point.arch)
        bad = [name for name, v in self.proxies.items() if not math.isfinite(v.value)]
        if bad and self.values is not None:
            out[attrs.NON_FINITE] = bad
        if self.fail_reason is not None:
            out[attrs.FAIL_REASON] = self.fail_reason
        return out


class ProxyObjective:
    """An Optuna objective scoring candidates of a search space at initialisation (see the module docstring).

    Args:
      space: the search space (:func:`ntksearch.spaces.load_space`).
      data: a :class:`~ntksearch.data.Dataset` (a class-balanced scoring batch of ``batch_size`` examples is
        drawn from its training split with ``seed``, and a held-out batch of ``linearised.val_batch_size``
        examples, at most the whole split, from its validation split) or a fixed batch ``(x (N, ...),
        y_onehot (N, C))`` (no held-out batch: the held-out linearised proxies are unavailable).
      proxies: proxies to record besides the objective's (default: none, only what the objective needs);
        ``None``: every registered proxy the candidate's family supports. Each proxy group compiles once per
        new architecture (seconds on a CPU): recording everything makes a search several times slower.
      objective: what to optimise (:func:`ntksearch.search.targets.as_objective`: ``None`` for the default
        score, a proxy name, a list for a Pareto front, ...).
      seed: seeds every candidate's keys (:func:`candidate_keys`), the scoring batch and the sampler of
        :meth:`create_study`.
      ntk: NTK estimation options.
      linearised: the linearised proxies' setting; with ``from_training``, each candidate's own training
        hyperparameters replace its learning rate, momentum and steps (:mod:`ntksearch.proxies.linearised`).
      train_size: examples of the candidates' confirmation training (default: the dataset's training split),
        which give the linearised proxies their number of steps. epochs: confirmation's override of ``epochs``.
      batch_size: scoring batch size when ``data`` is a dataset.
      max_cached_architectures: deprecated and ignored: the objective never clears JAX's (process-wide) caches;
        a long study passes :class:`~ntksearch.search.compiled.ClearCompiledPrograms` as a callback instead, as
        :func:`~ntksearch.search.run_search` does.
      buckets: the shape grid candidates are padded to (:mod:`ntksearch.models.buckets`), so that candidates
        of one bucket share compiled programs; the proxies that are exact on a padded program run there, the
        others on the candidate itself (:mod:`ntksearch.search.bucketed`). On the per-layer grid a bucket's first
        candidate is scored on its own, later ones in the bucket's program. ``"auto"`` (default): the grid
        :func:`~ntksearch.search.bucketed.search_grid` picks for the space and the proxies computed; None:
        every candidate on its own. Scores agree with and without buckets up to float rounding.

    Attributes:
      directions: Optuna directions, for ``optuna.create_study(directions=...)``.
      bucketed_candidates: how many candidates were scored in their bucket's padded program.
      last_programs: the programs (``apply_fn`` objects: the candidate's, its bucket's) the last evaluation
        of the calling thread compiled or reused, for :class:`~ntksearch.search.compiled.ClearCompiledPrograms`.
      objective: the parsed :class:`~ntksearch.search.targets.Objective`.
      x, y: the scoring batch. x_val, y_val: the held-out batch (one-hot), or None.

    Thread-safe, so that one candidate compiles while another runs:
    :func:`~ntksearch.search.pipeline.optimize_ahead` (``threads:`` of a run) scores candidates in threads with
    :meth:`evaluate` and stores them with :meth:`store` in trial order; ``study.optimize(objective, n_jobs=k)``
    (a worker's threads) works too. Picklable, so that ``optimize_ahead`` can score in worker processes
    (``processes:`` of a run), each with its own copy. Each candidate's values depend only on its point, its
    trial number and the shape buckets met before it.
    """

    def __init__(self, space: SearchSpace, data: Dataset | tuple[np.ndarray, np.ndarray], *,
                 proxies: Iterable[str] | None = (), objective: Any = None, seed: int = 0,
                 ntk: NTKOptions | None = None, linearised: LinearisedOptions | None = None,
                 train_size: int | None = None, epochs: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 max_cached_architectures: int | None = None, buckets: BucketGrid | str | None = "auto"):
        if max_cached_architectures is not None:
            warnings.warn("ProxyObjective(max_cached_architectures=...) is ignored: the objective no longer clears "
                          "JAX's caches; pass ntksearch.search.ClearCompiledPrograms(objective, max_programs) to "
                          "study.optimize(callbacks=[...])", DeprecationWarning, stacklevel=2)
        self.space = space
        self._buckets_met: set[Any] = set()
        self._buckets_lock = threading.Lock()
        self._thread = threading.local()
        self.bucketed_candidates = 0
        self.objective: Objective = as_objective(objective)
        self.seed = seed
        self.ntk = ntk or NTKOptions()
        self.linearised = linearised or LinearisedOptions()
        self.train_size, self.epochs = train_size, epochs
        self.x_val = self.y_val = None
        if isinstance(data, Dataset):
            self.x, self.y = scoring_batch(data, batch_size, seed=seed)
            if len(data.y_val):
                size = min(self.linearised.val_batch_size, len(data.y_val))
                self.x_val, self.y_val = scoring_batch(data, size, seed=seed, split="val")
            self.train_size = len(data.y_train) if train_size is None else train_size
        else:
            self.x, self.y = (np.asarray(a, np.float32) for a in data)
        self.record = None if proxies is None else tuple(proxies)
        unknown = sorted(set(self.record or ()) - set(PROXIES))
        if unknown:
            raise ValueError(f"unknown proxies {', '.join(unknown)}; registered: {', '.join(sorted(PROXIES))}")
        held_out = [name for name in (*self.objective.proxies, *(self.record or ()))
                    if "x_val" in PROXIES[name].requires and self.x_val is None]
        if held_out:
            raise ValueError(f"proxies {', '.join(held_out)} need a held-out batch: pass a Dataset with a "
                             "non-empty validation split")
        if isinstance(buckets, str) and buckets != "auto":
            raise ValueError(f"buckets must be a BucketGrid, None or 'auto', got {buckets!r}")
        computed = list(PROXIES) if self.record is None else [*self.objective.proxies, *self.record]
        self.buckets = (search_grid(space, computed, structured=self.linearised.structured) if buckets == "auto"
                        else buckets)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for :func:`~ntksearch.search.pipeline.optimize_ahead`'s worker processes): the lock and the
        per-thread state stay behind."""
        state = dict(self.__dict__)
        del state["_buckets_lock"], state["_thread"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _buckets_lock=threading.Lock(), _thread=threading.local())

    @property
    def last_programs(self) -> tuple[Any, ...]:
        return getattr(self._thread, "programs", ())

    @property
    def directions(self) -> list[str]:
        return self.objective.directions

    def create_study(self, **kwargs: Any) -> optuna.Study:
        """``optuna.create_study(**kwargs)`` with this objective's directions and, unless ``sampler=`` is given,
        a TPE sampler seeded with ``seed``, so that the study is reproducible from ``seed`` alone."""
        kwargs.setdefault("sampler", optuna.samplers.TPESampler(seed=self.seed))
        return optuna.create_study(directions=self.directions, **kwargs)

    def proxy_names(self, inputs: ProxyInputs) -> list[str]:
        """The objective's proxies, then the recorded ones (all those ``inputs`` support when not restricted)."""
        recorded: Sequence[str] = self.record if self.record is not None else [
            name for name, proxy in PROXIES.items() if all(getattr(inputs, r) is not None for r in proxy.requires)]
        return list(dict.fromkeys([*self.objective.proxies, *recorded]))

    def linearised_options(self, point: Point) -> LinearisedOptions:
        """The linearised proxies' setting for ``point`` (its training hyperparameters, with ``from_training``)."""
        if not self.linearised.from_training:
            return self.linearised
        train = point.train if self.epochs is None else {**point.train, "epochs": self.epochs}
        return options_for_training(train, self.linearised, n_classes=self.y.shape[-1], train_size=self.train_size)

    @property
    def buckets_met(self) -> frozenset[Any]:
        """The shape buckets (padded programs) met so far: a bucket's later candidates are scored in it."""
        with self._buckets_lock:
            return frozenset(self._buckets_met)

    def evaluate(self, point: Point, number: int, *, met: frozenset[Any] | None = None) -> Evaluation:
        """Build and score ``point`` as candidate ``number`` (its keys: :func:`candidate_keys`).

        ``met``: score against these met buckets (a snapshot of :attr:`buckets_met`) and leave the objective's
        own unchanged until :meth:`store` (so that which candidates are scored in their bucket does not depend
        on the timing of threads); default: the objective's, updated at once.
        """
        self._thread.programs, self._thread.new_buckets = (), frozenset()
        evaluation = self._evaluate(point, number, met)
        return dataclasses.replace(evaluation, programs=self.last_programs, new_buckets=self._thread.new_buckets)

    def _evaluate(self, point: Point, number: int, met: frozenset[Any] | None) -> Evaluation:
        keys = candidate_keys(self.seed, number)
        start = time.perf_counter()
        try:
            built = self.space.build(point, input_shape=tuple(self.x.shape[1:]), n_classes=self.y.shape[-1],
                                     key=keys.init)
        except (BuildError, ConfigError) as exc:  # anything else is a bug: it propagates
            return Evaluation(point, None, {}, {"build": time.perf_counter() - start}, None,
                              f"build failed: {exc}")
        seconds = {"build": time.perf_counter() - start}
        inputs = ProxyInputs.from_model(built, self.x, self.y, key=keys.proxies, ntk=self.ntk, x_val=self.x_val,
                                        y_val=self.y_val, linearised=self.linearised_options(point))
        try:
            result = self._compute(built, inputs, met)
        except NonFiniteModelError as exc:
            return Evaluation(point, built, {}, seconds, None, f"non-finite model: {exc}")
        seconds.update(result.seconds)
        values = self.objective({name: v.value for name, v in result.values.items()})
        bad = [f"{n} = {v}" for n, v in zip(self.objective.names, values, strict=True) if not math.isfinite(v)]
        if bad:
            inputs_bad = [f"{n} = {result.values[n].value}" for n in self.objective.proxies
                          if not math.isfinite(result.values[n].value)]
            reason = f"non-finite objective: {', '.join(bad)}" + (
                f" (proxies {', '.join(inputs_bad)})" if inputs_bad else "")
            return Evaluation(point, built, result.values, seconds, None, reason)
        return Evaluation(point, built, result.values, seconds, values)

    def _compute(self, built: BuiltModel, inputs: ProxyInputs, met: frozenset[Any] | None) -> ProxyResult:
        """The candidate's proxies, in its bucket where exact (:func:`~ntksearch.search.bucketed.plan_scoring`).

        The held-out batch reaches the proxies only when one of them reads it: the linearised group otherwise
        compiles and runs its held-out products (a second program per architecture) for nothing.
        """
        names = self.proxy_names(inputs)
        if not any("x_val" in PROXIES[name].requires for name in names):
            inputs = dataclasses.replace(inputs, x_val=None, y_val=None)
        values: dict[str, ProxyValue] = {}
        seconds: dict[str, float] = {}
        if met is None:
            with self._buckets_lock:
                plan = plan_scoring(names, inputs, built, self.buckets, met=self._buckets_met)
        else:
            seen = set(met)
            plan = plan_scoring(names, inputs, built, self.buckets, met=seen)
            self._thread.new_buckets = frozenset(seen - met)
        with self._buckets_lock:
            self.bucketed_candidates += plan[0][1] is not inputs
        self._thread.programs = tuple(part_inputs.apply_fn for _, part_inputs in plan)
        for part_names, part_inputs in plan:
            part = compute_proxies(part_names, part_inputs)
            values.update(part.values)
            for group, s in part.seconds.items():
                seconds[group] = seconds.get(group, 0.0) + s
        return ProxyResult({name: values[name] for name in names}, seconds)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        """Sample, score and store one candidate; ``nan`` (one per objective) marks it failed."""
        return self.store(trial, self.evaluate(self.space.sample(trial), trial.number))

    def store(self, trial: optuna.Trial, evaluation: Evaluation) -> float | tuple[float, ...]:
        """Store ``evaluation`` in ``trial``'s user attributes and return its objective value(s) for Optuna
        (``nan`` marks it failed). Its programs become this thread's :attr:`last_programs`, wherever it was
        scored (:func:`ntksearch.search.pipeline.optimize_ahead` scores in other threads)."""
        self._thread.programs = evaluation.programs
        with self._buckets_lock:
            self._buckets_met.update(evaluation.new_buckets)
        for key, value in evaluation.user_attrs().items():
            trial.set_user_attr(key, value)
        trial.set_user_attr(attrs.WORKER, f"{socket.gethostname()}:{os.getpid()}")
        values = evaluation.values or (math.nan,) * len(self.objective.targets)
        return values[0] if len(values) == 1 else values
