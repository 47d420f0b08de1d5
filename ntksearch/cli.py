"""The ``ntksearch`` command line: parse, call the library, print.

Exit codes: 0 success; 1 unexpected error; 2 invalid config, space or arguments; 3 dataset missing;
4 storage or study error (unreachable database, existing study without --resume, ...); 5 nothing succeeded
(every trial of the study failed, or the scored candidate failed); 130 interrupted. User errors print one
line on stderr (``ntksearch: error: ...``), never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import optuna
import pandas as pd
from optuna.trial import TrialState

from ntksearch.data import DatasetNotFoundError
from ntksearch.proxies import DEFAULT_SCORE
from ntksearch.report import FORMATS, export_leaderboard, leaderboard_frame, markdown_table
from ntksearch.search import (
    Experiment,
    ProgressLine,
    StorageError,
    StorageSpec,
    WorkerProcessDied,
    attrs,
    confirm_candidates,
    experiment_objective,
    load_experiment,
    run_search,
)
from ntksearch.search.preflight import check_dataset_fit, check_output
from ntksearch.search.progress import best_summary
from ntksearch.search.storage import JOURNAL_PREFIX
from ntksearch.search.study import FINISHED, LEADERBOARD_DIR, RUN_FILE, load_existing_study
from ntksearch.spaces import load_space
from ntksearch.validation import ConfigError, load_yaml

__all__ = ["CACHE_ENV", "EXIT_CODES", "build_parser", "main"]

EXIT_CODES = {"ok": 0, "unexpected": 1, "invalid": 2, "dataset": 3, "storage": 4, "failed": 5, "interrupted": 130}
CACHE_ENV = "NTKSEARCH_JAX_CACHE"
_TOP_ROWS = 5
_REASONS_SHOWN = 3
_ARCH_WIDTH = 70
THREADS_HELP = ("candidates scored at once, one thread each, so that one compiles while another runs "
                "(overrides threads: and processes:)")
PROCESSES_HELP = ("candidates scored at once, in this many worker processes: faster than threads on several "
                  "cores (overrides threads: and processes:)")

_EPILOG = """\
examples:
  ntksearch run experiments/quickstart.yaml                 search, confirm the best, write the leaderboard
  ntksearch run experiments/quickstart.yaml --resume        continue a run that was interrupted (Ctrl-C, kill)
  ntksearch run experiments/quickstart.yaml --overwrite     start over: replace its study and leaderboard
  ntksearch run experiments/cnn.yaml --n-trials 200 --storage postgresql+psycopg2://u:p@host/db
  ntksearch worker experiments/cnn.yaml --storage postgresql+psycopg2://u:p@host/db   (on every machine)
  ntksearch leaderboard runs/quickstart --format csv html
  ntksearch leaderboard --storage sqlite:///runs/quickstart/study.db --study quickstart --out /tmp/lb
  ntksearch score experiments/quickstart.yaml --trial 3
  ntksearch score experiments/quickstart.yaml --params '{"depth": 1, "width_0": 64, ...}'
  ntksearch validate experiments/*.yaml search_spaces/*.yaml

environment: NTKSEARCH_JAX_CACHE=<folder> keeps compiled XLA code between runs (default
~/.cache/ntksearch/jax; empty: off)

exit codes: 0 ok, 1 unexpected error, 2 invalid config/space/arguments, 3 dataset missing,
4 storage or study error, 5 every trial failed (run, worker) or the candidate failed (score), 130 interrupted
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="ntksearch", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG,
        description="Neural architecture and hyperparameter search scored at initialisation with NTK proxies.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _command(commands, "run", _run, "run an experiment: search, confirmation training, leaderboard")
    run.add_argument("config", type=Path, help="experiment YAML file")
    run.add_argument("--n-trials", type=_positive(int), help="total trials of the study (overrides trials:)")
    run.add_argument("--timeout", type=_positive(float), help="stop starting trials after this many seconds")
    run.add_argument("--storage", help="storage URL (overrides storage:)")
    parallel = run.add_mutually_exclusive_group()
    parallel.add_argument("--threads", type=_positive(int), help=THREADS_HELP)
    parallel.add_argument("--processes", type=_positive(int), help=PROCESSES_HELP)
    restart = run.add_mutually_exclusive_group()
    restart.add_argument("--resume", action="store_true", help="continue the existing study of this experiment")
    restart.add_argument("--overwrite", action="store_true",
                         help="start over: delete this experiment's study and the output folder's previous results")
    run.add_argument("--no-confirm", action="store_true", help="skip confirmation training")
    run.add_argument("--quiet", action="store_true", help="no progress lines")

    worker = _command(commands, "worker", _worker,
                      "join the experiment's (shared) study and optimise until it holds its trials")
    worker.add_argument("config", type=Path, help="experiment YAML file")
    worker.add_argument("--storage", help="storage URL shared by the workers (overrides storage:)")
    worker.add_argument("--threads", type=_positive(int), help=THREADS_HELP)
    worker.add_argument("--quiet", action="store_true", help="no progress lines")

    board = _command(commands, "leaderboard", _leaderboard, "export the leaderboard of a run or study")
    board.add_argument("run_dir", type=Path, nargs="?", help=f"a run's output folder (with {RUN_FILE})")
    board.add_argument("--storage", help="storage URL (instead of a run folder)")
    board.add_argument("--study", help="study name (with --storage)")
    board.add_argument("--format", nargs="+", choices=list(FORMATS), default=list(FORMATS), dest="formats",
                       help="formats to write (default: all)")
    board.add_argument("--out", type=Path, help=f"output folder (default: <run_dir>/{LEADERBOARD_DIR})")

    score = _command(commands, "score", _score, "rebuild one candidate and print its proxies and scores")
    score.add_argument("config", type=Path, help="experiment YAML file")
    which = score.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="a trial number of the experiment's study")
    which.add_argument("--params", help="trial params as a JSON object (the candidate's keys: trial number 0)")
    score.add_argument("--storage", help="storage URL (overrides storage:)")

    validate = _command(commands, "validate", _validate, "validate experiment and search-space files")
    validate.add_argument("files", type=Path, nargs="+", help="experiment or search-space YAML files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or invalid arguments (argparse printed why)
        return int(exc.code or 0)
    try:
        return args.handler(args)
    except ConfigError as exc:
        return _fail(str(exc), "invalid")
    except DatasetNotFoundError as exc:
        return _fail(str(exc), "dataset")
    except StorageError as exc:
        return _fail(str(exc), "storage")
    except KeyboardInterrupt:
        return _fail("interrupted (continue with --resume)", "interrupted")
    except WorkerProcessDied as exc:
        return _fail(str(exc), "unexpected")
    except OSError as exc:  # an unreadable or unwritable file outside a config (--out, a run folder)
        return _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), "unexpected")
    except Exception:
        traceback.print_exc()
        return EXIT_CODES["unexpected"]


# -- commands ------------------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    experiment = _experiment(args)
    say = _printer(args.quiet)
    dataset = experiment.dataset.load()
    total = args.n_trials or experiment.trials
    say(f"ntksearch run {experiment.name}: {experiment.space.family} space {experiment.space.path}, "
        f"{dataset.name} {dataset.input_shape}, objective {experiment.objective.describe()}, "
        f"sampler {experiment.sampler.name}, {total or 'unlimited'} trials, storage {experiment.storage.url}")
    study = run_search(experiment, n_trials=args.n_trials, timeout=args.timeout, threads=args.threads,
                       processes=args.processes, resume=args.resume, overwrite=args.overwrite, dataset=dataset,
                       progress=None if args.quiet else ProgressLine(total))
    failure = _all_failed(study)
    if experiment.confirm is not None and not args.no_confirm and failure is None:
        say(f"confirmation training: top {experiment.confirm.top_k} + {experiment.confirm.random_k} random")
        confirm_candidates(study, experiment_objective(experiment, dataset), dataset, experiment.confirm, log=say)
    frame = leaderboard_frame(study)
    paths = export_leaderboard(frame, experiment.output / LEADERBOARD_DIR)
    _print_top(frame)
    others = ", ".join(path.name for name, path in paths.items() if name != "html")
    print(f"{best_summary(study)}; leaderboard: {paths['html']} (and {others})")
    print(f"browse the study: optuna-dashboard {_dashboard_target(experiment.storage.url)}")
    return EXIT_CODES["ok"] if failure is None else _fail(failure, "failed")


def _worker(args: argparse.Namespace) -> int:
    experiment = _experiment(args)
    mine: list[int] = []
    study = run_search(experiment, join=True, threads=args.threads,
                       progress=None if args.quiet else ProgressLine(experiment.trials),
                       callbacks=[lambda _study, trial: mine.append(trial.number)])
    print(f"worker done: this process finished trials {sorted(mine)}; study {experiment.study} holds "
          f"{len(study.get_trials(deepcopy=False, states=FINISHED))} finished trials; {best_summary(study)}")
    failure = _all_failed(study)
    return EXIT_CODES["ok"] if failure is None else _fail(failure, "failed")


def _leaderboard(args: argparse.Namespace) -> int:
    if args.run_dir is not None:
        if args.storage or args.study:
            return _fail("give either a run folder or --storage and --study, not both", "invalid")
        run_file = args.run_dir / RUN_FILE
        if not run_file.is_file():
            return _fail(f"{run_file} does not exist: is {args.run_dir} a run's output folder? Otherwise pass "
                         "--storage URL --study NAME", "invalid")
        run = json.loads(run_file.read_text())
        url, name, out = run["storage"], run["study"], args.out or args.run_dir / LEADERBOARD_DIR
    elif args.storage and args.study:
        url, name, out = args.storage, args.study, args.out or Path(f"{LEADERBOARD_DIR}-{args.study}")
    else:
        return _fail("give a run folder, or --storage URL and --study NAME", "invalid")
    study = load_existing_study(StorageSpec(url), name)
    paths = export_leaderboard(study, out, formats=args.formats)
    for path in paths.values():
        print(path)
    return EXIT_CODES["ok"]


def _score(args: argparse.Namespace) -> int:
    experiment = _experiment(args)
    if experiment.record is not None:  # the default score is always printed
        experiment = dataclasses.replace(experiment, record=(*experiment.record, *DEFAULT_SCORE.proxies))
    if args.trial is not None:
        trials = load_existing_study(experiment.storage, experiment.study).get_trials(deepcopy=False)
        if not 0 <= args.trial < len(trials):
            return _fail(f"study {experiment.study} has trials 0..{len(trials) - 1}, not {args.trial}", "invalid")
        params, number = trials[args.trial].params, args.trial
    else:
        params, number = _json_object(args.params), 0
    point = experiment.space.point_from_params(params)
    evaluation = experiment_objective(experiment).evaluate(point, number)
    print(f"candidate {number}: {json.dumps(point.arch)}")
    print(f"training: {json.dumps(point.train)}")
    if evaluation.built is not None:
        print(f"n_params {evaluation.built.n_params}, flops {evaluation.built.flops}")
    for name, value in evaluation.proxies.items():
        print(f"  {name:32s} {value.value: .6g} ± {value.stderr:.2g}")
    if evaluation.fail_reason is not None:
        return _fail(f"candidate {number} failed: {evaluation.fail_reason}", "failed")
    values = {name: v.value for name, v in evaluation.proxies.items()}
    print(f"default score {DEFAULT_SCORE(values):.6g}")
    for name, value in zip(experiment.objective.names, evaluation.values or (), strict=True):
        print(f"objective {name} {value:.6g}")
    return EXIT_CODES["ok"]


def _validate(args: argparse.Namespace) -> int:
    status = EXIT_CODES["ok"]
    for path in args.files:
        try:
            print(f"OK {path}: {_validated(path)}")
        except ConfigError as exc:
            print(f"INVALID {exc}", file=sys.stderr)
            status = EXIT_CODES["invalid"]
    return status


def _all_failed(study: optuna.Study) -> str | None:
    """Why nothing succeeded when the study holds finished trials but none completed, else ``None``."""
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    if not finished or any(t.state == TrialState.COMPLETE for t in finished):
        return None
    reasons = Counter(t.user_attrs.get(attrs.FAIL_REASON, "no reason recorded") for t in finished)
    common = "; ".join(f"{count} × {reason}" for reason, count in reasons.most_common(_REASONS_SHOWN))
    more = f"; {len(reasons) - _REASONS_SHOWN} other reasons" if len(reasons) > _REASONS_SHOWN else ""
    return f"no trial completed: {len(finished)} of {len(finished)} failed ({common}{more})"


# -- helpers -------------------------------------------------------------------------------------------------
def _command(commands: argparse._SubParsersAction, name: str, handler: Callable[[argparse.Namespace], int],
             summary: str) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=summary, description=summary, epilog=_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.set_defaults(handler=handler)
    return sub


def _positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: a positive ``kind`` (int or float)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _experiment(args: argparse.Namespace) -> Experiment:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported by the progress line
    _use_compilation_cache()
    experiment = load_experiment(args.config)
    return experiment.with_storage(args.storage) if args.storage else experiment


def _use_compilation_cache() -> None:
    """Keep XLA's compiled code on disk (``$NTKSEARCH_JAX_CACHE``, default ~/.cache/ntksearch/jax; empty: off).

    Compiling the NTK estimator for a new architecture costs seconds and the maths milliseconds, so a resumed
    run, a worker or a rerun on the same machine skips most of its set-up time.
    """
    folder = os.environ.get(CACHE_ENV, str(Path.home() / ".cache" / "ntksearch" / "jax"))
    if folder:
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def _validated(path: Path) -> str:
    """A one-line description of a valid experiment or space file; ConfigError otherwise.

    Experiments are also checked against their dataset and output folder (:mod:`ntksearch.search.preflight`),
    creating nothing; a dataset that is not installed here is named, not an error.
    """
    document = load_yaml(path)
    if isinstance(document, Mapping) and "family" in document:
        space = load_space(path)
        return f"search space, family {space.family}, {len(space.specs)} hyperparameters set"
    experiment = load_experiment(path)
    check_output(experiment, create=False)
    try:
        check_dataset_fit(experiment, experiment.dataset.load())
        checked = ""
    except DatasetNotFoundError as exc:
        checked = f" (sizes not checked against the dataset: {exc})"
    return (f"experiment {experiment.name}, {experiment.space.family} space, objective "
            f"{experiment.objective.describe()}, sampler {experiment.sampler.name}{checked}")


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("--params", "", f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError("--params", "", f"expected a JSON object of trial params, got {type(value).__name__}")
    return value


def _printer(quiet: bool) -> Callable[[str], None]:
    return (lambda line: None) if quiet else (lambda line: print(line, flush=True))


def _print_top(frame: pd.DataFrame) -> None:
    columns = [c for c in ["rank", "trial", *frame.attrs["objectives"], "val_accuracy", "n_params", "arch"]
               if c in frame]
    top = frame[columns].head(_TOP_ROWS)
    if "arch" in top:
        top = top.assign(arch=top["arch"].str.slice(0, _ARCH_WIDTH))
    print(markdown_table(top), end="")


def _dashboard_target(url: str) -> str:
    return url[len(JOURNAL_PREFIX):] if url.startswith(JOURNAL_PREFIX) else url


def _fail(message: str, kind: str) -> int:
    print(f"ntksearch: error: {message}", file=sys.stderr)
    return EXIT_CODES[kind]


if __name__ == "__main__":
    sys.exit(main())
