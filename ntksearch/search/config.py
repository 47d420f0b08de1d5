r"""Experiment configs: one YAML file describing a whole search, loaded by :func:`load_experiment`.

Annotated example (``experiments/quickstart.yaml`` is a real one)::

    name: quickstart                  # required: names the study and the default output folder
                                      #   (letters, digits, _ . -)
    seed: 0                           # default 0: seeds the sampler, the scoring batch and every candidate's
                                      #   initialisation key (derived from seed and trial number)
    dataset: digits                   # digits | fashion_mnist | file, or a mapping with the loader's options:
    #   {name: fashion_mnist, max_train: 20000}      # root, max_train, max_val, max_test, seed
    #   {name: file, path: data/mine.npz}            # .npz or .csv: path, label_column, seed, val_fraction...
    space: ../search_spaces/mlp.yaml  # required: a search-space file (relative paths: to this file)
    scoring:                          # optional
      batch_size: 64                  # the fixed class-balanced scoring batch (default 64, at least 2)
      ntk: {method: auto, rtol: 0.05} # NTK estimation (ntksearch.proxies.NTKOptions): method, rtol,
                                      #   max_matvecs, lanczos_iters, lanczos_rtol
      linearised:                     # the linearised-training proxies (ntksearch.proxies.LinearisedOptions)
        learning_rate: auto           #   η: a number or auto (lr_fraction · 2N/λ_max); for sgd/momentum
        steps: 100                    #   candidates their own lr/C and schedule replace it (from_training)
        val_batch_size: 256           #   held-out batch from the validation split (class-balanced, seeded)
        ridge: 0.001                  #   ρ = ridge · tr K/(NC) of ntk_complexity
        # lr_fraction: 0.5, momentum: 0.0, max_matvecs: 128, rtol: 0.01, from_training: true
    objective: default_score         # default; the forms are below
    record: [ntk_trace, grad_norm]    # proxies stored besides the objective's: all (default: every registered
                                      #   proxy the family supports), objective (only the objective's), or a list;
                                      #   every proxy group costs compilation time per new architecture
    sampler: tpe                      # tpe | nsga2 | random | grid | gp | cmaes, or a mapping with options:
    #   {name: tpe, n_startup_trials: 10, multivariate: true}    # always seeded with `seed`
    trials: 60                        # total finished (COMPLETE + FAIL) trials of the study, over all runs and
                                      #   workers; at least one of trials and timeout (grid may omit both)
    timeout: 600                      # seconds per invocation
    threads: 1                        # candidates scored at once in this process, one thread each, so that one
                                      #   compiles while another runs (default 1; on a 2-core CPU 2-3
                                      #   threads gain 1.05-1.27x); reproducible from (seed, threads): trial
                                      #   n is sampled knowing trials 0 ... n - threads
    processes: 1                      # or: candidates scored at once in this many worker processes (default 1:
                                      #   none), which overlap tracing and Python work too (`run` only; at
                                      #   most one of threads and processes above 1); reproducible from (seed,
                                      #   processes), the same search as that many threads
    storage: sqlite:///runs/quickstart/study.db   # default sqlite:///<output>/study.db; also
    #   postgresql+psycopg2://user:pass@host/db or journal:<file>, or a mapping
    #   {url: ..., heartbeat_interval: 60, grace_period: 120, max_retry: 3}
    study: quickstart                 # study name in the storage (default: name)
    output: runs/quickstart           # default runs/<name> (relative to the working directory)
    confirm:                          # confirmation training after the search (false: none)
      top_k: 5                        # best candidates (multi-objective: the Pareto front, capped by the
                                      #   first objective)
      random_k: 3                     # plus random completed ones, for an unbiased proxy-quality estimate
      max_train: 2000                 # train on at most this many examples (stratified); null: all
      max_val: null                   # validate on at most this many
      epochs: 2                       # override the space's epochs (null: keep)
      lr_fraction: 0.5                # learning_rate: auto → lr_fraction × max_stable_lr of the candidate

**Objectives** (:mod:`ntksearch.search.targets`):

* ``default_score`` or ``{combine: default_score}``: :data:`ntksearch.proxies.DEFAULT_SCORE`, maximised;
* a proxy name, or ``{proxy: ntk_effective_rank, direction: maximize}`` (default direction: the proxy's
  registry sign);
* ``{combine: weighted_log, proxies: {ntk_effective_rank: 1.0, ntk_label_alignment: 0.5}}``:
  Σ wᵢ·signᵢ·log(proxyᵢ), maximised. A stationary combination: each value depends on one candidate only.
  Rank aggregation is not an objective (a trial's rank changes as trials arrive, so Optuna would model
  stale numbers); the leaderboard computes it offline (``rank_aggregate``);
* a list of the above: a multi-objective search for a Pareto front, e.g.
  ``[{proxy: ntk_effective_rank, direction: maximize}, {proxy: n_params, direction: minimize}]``.

Unknown keys are errors everywhere; every error is a :class:`~ntksearch.validation.ConfigError` naming the
file, the key path and what is allowed (names from the registries: datasets, proxies, samplers, families).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from ntksearch.data import DATASETS, Dataset, DatasetError, dataset_options, load_dataset
from ntksearch.ntk import QUANTITIES
from ntksearch.ntk.plan import plan_estimate
from ntksearch.proxies import PROXIES, LinearisedOptions, NTKOptions
from ntksearch.search.proxy_objective import DEFAULT_BATCH_SIZE
from ntksearch.search.samplers import SAMPLERS, make_sampler, parse_sampler_options
from ntksearch.search.storage import StorageSpec, storage_problem
from ntksearch.search.targets import Objective, parse_objective
from ntksearch.settings import check_value, kinds_of, parse_settings, setting
from ntksearch.spaces import SearchSpace, load_space
from ntksearch.validation import ConfigError, Node, is_file, load_yaml

__all__ = [
    "ConfirmSpec",
    "DatasetSpec",
    "Experiment",
    "SamplerSpec",
    "ScoringSpec",
    "load_experiment",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TOP_LEVEL_REQUIRED = {"name", "dataset", "space"}
_TOP_LEVEL_OPTIONAL = {"seed", "scoring", "objective", "record", "sampler", "trials", "timeout", "threads",
                       "processes", "storage", "study", "output", "confirm"}
_RECORD_KEYWORDS = ("all", "objective")
MIN_SCORING_BATCH = 2
MAX_SEED = 2**32 - 1  # what numpy (and so every Optuna sampler) accepts as a seed
_LARGEST_MODEL = 1 << 40  # state and parameter counts beyond any candidate: the NTK budget's worst case


@dataclass(frozen=True)
class DatasetSpec:
    """A registry dataset and its loader options (path options already resolved against the config)."""

    name: str
    options: Mapping[str, Any]
    source: Path | None = None  # the config file, for error messages

    def load(self) -> Dataset:
        """Load it; a bad option value is a :class:`ConfigError` at ``dataset``.

        Raises:
          DatasetNotFoundError: the files are absent (the message says what to install or pass).
        """
        try:
            return load_dataset(self.name, **self.options)
        except DatasetError as exc:
            raise ConfigError(self.source, "dataset", str(exc)) from exc


@dataclass(frozen=True)
class ScoringSpec:
    """The fixed scoring batch, how the NTK proxies are estimated on it and the linearised proxies' setting."""

    batch_size: int = DEFAULT_BATCH_SIZE
    ntk: NTKOptions = dataclasses.field(default_factory=NTKOptions)
    linearised: LinearisedOptions = dataclasses.field(default_factory=LinearisedOptions)


@dataclass(frozen=True)
class SamplerSpec:
    """A :data:`~ntksearch.search.samplers.SAMPLERS` name and its validated options."""

    name: str = "tpe"
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class ConfirmSpec:
    """Confirmation training of the best (and some random) candidates after the search; config key ``confirm``
    (``false``: none)."""

    top_k: int = setting(5, minimum=0, doc="best candidates to train (multi-objective: the Pareto front, capped)")
    random_k: int = setting(0, minimum=0, doc="plus random completed candidates, for an honest proxy-quality "
                            "estimate")
    max_train: int | None = setting(None, minimum=1, doc="train on at most this many examples (stratified); "
                                    "null: all")
    max_val: int | None = setting(None, minimum=1, doc="evaluate on at most this many validation examples")
    epochs: int | None = setting(None, minimum=1, doc="override the space's epochs")
    lr_fraction: float = setting(0.5, minimum=0, exclusive_minimum=True,
                                 doc="learning_rate auto → lr_fraction × the candidate's max stable lr")


@dataclass(frozen=True)
class Experiment:
    """A validated experiment config (see the module docstring for the file format).

    ``record`` is ``None`` for "every proxy the family supports", else the proxies to store besides the
    objective's. ``confirm`` is ``None`` when confirmation training is off.
    """

    name: str
    path: Path | None
    seed: int
    dataset: DatasetSpec
    space: SearchSpace
    scoring: ScoringSpec
    objective: Objective
    record: tuple[str, ...] | None
    sampler: SamplerSpec
    trials: int | None
    timeout: float | None
    threads: int
    processes: int
    storage: StorageSpec
    study: str
    output: Path
    confirm: ConfirmSpec | None

    def with_storage(self, url: str) -> Experiment:
        """The same experiment in another storage (``--storage``); ConfigError for a bad URL."""
        problem = storage_problem(url)
        if problem is not None:
            raise ConfigError(self.path, "storage", problem)
        return dataclasses.replace(self, storage=dataclasses.replace(self.storage, url=url))

    def make_sampler(self, seed: int | None = None) -> optuna.samplers.BaseSampler:
        """A fresh sampler seeded with ``seed`` (default: the experiment's)."""
        return make_sampler(self.sampler.name, self.sampler.options, seed=self.seed if seed is None else seed,
                            space=self.space)


def load_experiment(path: str | Path) -> Experiment:
    """Load and fully validate an experiment config, including its search space.

    Raises:
      ConfigError: any problem, naming the file, the key path, the bad value and what is allowed.
    """
    path = Path(path)
    root = Node(load_yaml(path), path)
    keys = root.mapping(required=_TOP_LEVEL_REQUIRED, optional=_TOP_LEVEL_OPTIONAL)
    name = root["name"].string()
    if not _NAME.fullmatch(name):
        raise root["name"].error(f"{name!r} is not a plain name: use letters, digits, _ . - "
                                 "(it names the study and the output folder)")
    seed = root["seed"].integer(minimum=0, maximum=MAX_SEED) if "seed" in keys else 0
    space = _space(root["space"], path)
    objective = parse_objective(root.get("objective"))
    sampler = _sampler(root.get("sampler"), space, seed)
    trials = root["trials"].integer(minimum=1) if "trials" in keys else None
    timeout = root["timeout"].number(minimum=0.0, exclusive_minimum=True) if "timeout" in keys else None
    if trials is None and timeout is None and sampler.name != "grid":
        raise root.error("set trials (total number of trials) and/or timeout (seconds); only the grid "
                         "sampler may omit both (it stops when the grid is exhausted)")
    output = root["output"].file_path() if "output" in keys else Path("runs") / name
    threads = root["threads"].integer(minimum=1) if "threads" in keys else 1
    processes = root["processes"].integer(minimum=1) if "processes" in keys else 1
    if threads > 1 and processes > 1:
        raise root["processes"].error(f"{processes} worker processes and threads: {threads}; score in threads or "
                                      "in processes, not both (set one of them to 1)")
    return Experiment(
        name=name,
        path=path,
        seed=seed,
        dataset=_dataset(root["dataset"], path),
        space=space,
        scoring=_scoring(root.get("scoring")),
        objective=objective,
        record=_record(root.get("record")),
        sampler=sampler,
        trials=trials,
        timeout=timeout,
        threads=threads,
        processes=processes,
        storage=_storage(root.get("storage"), output),
        study=root["study"].string() if "study" in keys else name,
        output=output,
        confirm=_confirm(root.get("confirm")),
    )


def _relative(node: Node, config: Path) -> Path:
    """A path option: expanded, relative to the config file's folder unless absolute, and resolved."""
    return (config.parent / node.file_path()).resolve()


def _space(node: Node, config: Path) -> SearchSpace:
    space_path = _relative(node, config)
    if not is_file(space_path):
        raise node.error(f"search-space file {space_path} does not exist (relative paths are relative to "
                         f"the config file's folder {config.parent})")
    return load_space(space_path)


def _dataset(node: Node, config: Path) -> DatasetSpec:
    if isinstance(node.value, str):
        return DatasetSpec(node.string(choices=DATASETS), {}, config)
    if not isinstance(node.value, Mapping) or "name" not in node:
        raise node.error(f"expected a dataset name ({', '.join(sorted(DATASETS))}) or a mapping with name and "
                         "the loader's options")
    name = node["name"].string(choices=DATASETS)
    params = dataset_options(name)
    keys = node.mapping(required={"name"} | {p.name for p in params.values() if p.default is p.empty},
                        optional=params)
    options = {key: _dataset_option(node[key], params[key], config) for key in keys if key != "name"}
    return DatasetSpec(name, options, config)


def _dataset_option(node: Node, param: inspect.Parameter, config: Path) -> Any:
    """Check an option against the loader's annotation (``int | None``, ``str | Path``, ``float``...): a path
    relative to the config's folder, else as a declared setting of that type (:func:`check_value`)."""
    kinds = kinds_of(param.annotation)
    if "Path" in kinds and not (node.value is None and "None" in kinds):
        return str(_relative(node, config))
    return check_value(node, kinds)


def _scoring(node: Node | None) -> ScoringSpec:
    if node is None:
        return ScoringSpec()
    keys = node.mapping(optional={"batch_size", "ntk", "linearised"})
    batch_size = ScoringSpec.batch_size
    if "batch_size" in keys:
        batch_size = node["batch_size"].integer()
        if batch_size < MIN_SCORING_BATCH:
            raise node["batch_size"].error(f"{batch_size} is below the minimum {MIN_SCORING_BATCH}: the centred "
                                           "label alignment of one example is undefined (its centred label is 0)")
    ntk_node = node.get("ntk")
    ntk = parse_settings(ntk_node, NTKOptions)
    given = [k for k in ("max_matvecs", "method", "sketch_size") if ntk_node is not None and k in ntk_node]
    if given:  # the error points at the first budget key the config sets
        _check_ntk_budget(ntk_node[given[0]], ntk)
    return ScoringSpec(batch_size, ntk, parse_settings(node.get("linearised"), LinearisedOptions))


def _check_ntk_budget(node: Node, ntk: NTKOptions) -> None:
    """A randomised method's fixed part and ``min_blocks`` probe blocks must fit ``max_matvecs`` for every
    candidate; the largest model is the worst case (no cap on the sketch), so plan for it. ``exact`` depends on
    the scoring batch and is checked against the dataset (:mod:`ntksearch.search.preflight`)."""
    if ntk.method == "exact":
        return
    problem = _plan_problem(ntk, ntk.max_matvecs)
    if problem is None:
        return
    next_fit = next(m for m in range(ntk.max_matvecs + 1, 1 << 20) if _plan_problem(ntk, m) is None)
    raise node.error(f"max_matvecs = {ntk.max_matvecs} AD passes are too few for NTK method {ntk.method} "
                     f"({problem}); the next budget that fits every candidate is {next_fit}")


def _plan_problem(ntk: NTKOptions, max_matvecs: int) -> str | None:
    try:
        plan_estimate(ntk.method, _LARGEST_MODEL, _LARGEST_MODEL, max_matvecs=max_matvecs, wanted=QUANTITIES,
                      n_labels=2, sketch_size=ntk.sketch_size)
    except ValueError as exc:
        return str(exc)
    return None


def _record(node: Node | None) -> tuple[str, ...] | None:
    if node is None:
        return None
    if isinstance(node.value, str):
        keyword = node.string(choices=_RECORD_KEYWORDS)
        return None if keyword == "all" else ()
    names = [item.string(choices=PROXIES) for item in node.items()]
    return tuple(dict.fromkeys(names))


def _sampler(node: Node | None, space: SearchSpace, seed: int) -> SamplerSpec:
    if node is None:
        return SamplerSpec()
    if isinstance(node.value, str):
        name_node, keys = node, {}
    elif isinstance(node.value, Mapping) and "name" in node:
        name_node, keys = node["name"], node.value
    else:
        raise node.error(f"expected a sampler name ({', '.join(sorted(SAMPLERS))}) or a mapping with name and "
                         "the sampler's options")
    name = name_node.string(choices=SAMPLERS)
    missing = SAMPLERS[name].missing()
    if missing:
        raise name_node.error(f"sampler {name} {missing}")
    spec = SamplerSpec(name, parse_sampler_options(name, node, keys) if keys else {})
    make_sampler(spec.name, spec.options, seed=seed, space=space)  # grid: ConfigError if not enumerable
    return spec


def _storage(node: Node | None, output: Path) -> StorageSpec:
    if node is None:
        return StorageSpec(f"sqlite:///{output / 'study.db'}")
    if isinstance(node.value, str):
        url_node, spec = node, StorageSpec(node.value)
    else:
        keys = node.mapping(required={"url"}, optional={"heartbeat_interval", "grace_period", "max_retry"})
        url_node = node["url"]
        spec = StorageSpec(url_node.string(), **{key: node[key].integer(minimum=1) for key in keys if key != "url"})
    problem = storage_problem(url_node.string())
    if problem:
        raise url_node.error(problem)
    return spec


def _confirm(node: Node | None) -> ConfirmSpec | None:
    if node is None:
        return ConfirmSpec()
    if isinstance(node.value, bool):
        return ConfirmSpec() if node.value else None
    return parse_settings(node, ConfirmSpec)
