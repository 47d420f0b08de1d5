"""Search throughput: candidates scored per minute, and how much of it is XLA compilation.

Each configuration scores the same candidates (Optuna's RandomSampler, seed 0 or ``--seed``; ``--sampler tpe``:
a TPE search as the quickstart's, whose candidates follow the scores) of a shipped space on the digits scoring
batch, in fresh processes, so nothing compiled earlier is reused unless the configuration says so:

* ``all proxies``: the objective plus every registered proxy recorded (each proxy group compiles its own
  programs per new architecture); one process. What a search recording everything costs.
* ``objective only``: only the default score's proxies (one NTK estimate); one process.
* ``objective, AD products``: as above with ``scoring.linearised.structured: false``: the Lanczos run's products
  by AD passes for every model, instead of K_AA and K_BA formed once from per-layer factors where the model
  allows (:mod:`ntksearch.ntk.structured`: MLPs). What the factored kernel gains.
* ``objective, MLIR emitters``: as ``objective only`` with XLA:CPU's default loop-fusion emitters instead of
  :data:`ntksearch.ntk.compile.CPU_COMPILE_OPTIONS` (the older LLVM-IR emitters, which compile faster): what
  those options gain.
* ``objective, optimised compile`` (``fast compile``): as above with every NTK program compiled at XLA's default
  optimisation (``compile_mode: optimised``) or at its level 0 (``fast``) instead of the default ``auto``
  (level 0 unless the model has convolutions or a forward pass of ≥ 2²⁵ matrix-product flops, 2²³ with a loop,
  :mod:`ntksearch.ntk.compile`): what each compile level gains.
* ``objective, warm disk cache``: as above, run a second time with JAX's persistent compilation cache filled by
  the first run: identical architectures load their programs from disk instead of compiling.
* ``objective, 2 workers``: two worker processes share the study through a journal-file storage (the same
  code path as ``ntksearch worker``), one per CPU core.
* ``objective, 2 threads`` (``3 threads``): one process scoring two (three) candidates at once (``threads: 2``,
  :func:`ntksearch.search.optimize_ahead`): one thread compiles while another runs. Trials are sampled in
  trial order, so the random sampler draws the same candidates as in the other rows; its compile seconds add
  up both threads' compilations, which overlap in time.
* ``objective, 2 processes`` (``4 processes``): as ``2 threads``, the candidates scored in two (four) worker
  processes (``processes: k``): the same trials, and tracing and Python work overlap too. Compile seconds are
  not measured (they happen in the worker processes).
* ``objective, buckets``: as ``objective only`` with shape buckets (:mod:`ntksearch.models.buckets`): candidates
  of one bucket share compiled programs. Every other row scores each candidate on its own (``buckets=None``).
  Its score values are compared with those of ``objective only`` (the same candidates): the largest relative
  difference is printed and recorded.
* ``objective, uniform buckets``: as ``objective, buckets`` with the few-buckets grid: every layer padded to the
  widest layer's width (rounded up to a power of two), depth rounded up to 2, 4, … (capped at the space's
  deepest), the space's activation and norm choices selected at run time (``BucketGrid(uniform=True,
  menus=...)``): fewer compilations, more padding.
* ``objective, uniform buckets, 2 threads`` (``3``, ``4 threads``, ``2 processes``): the few-buckets grid
  with candidates scored in k threads or processes, as the ``threads`` rows above.
* ``objective, buckets, warm disk cache``: the bucketed search again with the persistent cache filled by it.

``--xla-options JSON`` replaces :data:`ntksearch.ntk.compile.CPU_COMPILE_OPTIONS` in every row but ``objective,
MLIR emitters``, to try other XLA:CPU options on the same candidates (an option the installed XLA rejects makes
the NTK programs fall back to XLA's defaults, as ``MLIR emitters``).

Compile time is XLA's own (the ``backend_compile`` duration events JAX reports); "other" is everything else
(tracing, running, building models, Optuna). Rates are candidates per minute of wall time, measured in one
run of this script, so the ratios between rows are what to read (against ``objective only``, or the space's
first row when it is not run).

``--quickstart N`` instead times the quickstart itself through the command line, as a new user runs it:
``ntksearch run experiments/quickstart.yaml --no-confirm --n-trials N`` (TPE, default score, SQLite storage)
with an empty persistent compilation cache, once per ``--threads`` value (default ``1,2``) and per
``--processes`` value (default none). It reports the
command's wall time (starting Python and importing jax included) and the search's own rate (first trial
started to last trial finished, from the study's timestamps). With k threads or processes TPE samples trial n
knowing trials 0 … n − k only, so the candidates differ from one thread's; the table gives their median parameter
count too: the default score ranks by size, and larger networks cost more to score.

Usage::

    python benchmarks/search_throughput.py                 # mlp, cnn, rnn spaces (≈ 15 min on 2 cores)
    python benchmarks/search_throughput.py --quickstart 100 --threads 1,2
    python benchmarks/search_throughput.py --quickstart 100 --threads 1 --processes 2
    python benchmarks/search_throughput.py --quickstart 100 --threads 1 --compile-mode fast
    python benchmarks/search_throughput.py --quickstart 100 --threads 1 --no-structured
    python benchmarks/search_throughput.py --spaces mlp --candidates 30
    python benchmarks/search_throughput.py --spaces mlp,rnn --configs "objective only;objective, buckets"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ntksearch.models.buckets import BucketGrid
    from ntksearch.spaces import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("all proxies", "objective, MLIR emitters", "objective only", "objective, AD products",
           "objective, optimised compile", "objective, fast compile",
           "objective, warm disk cache",
           "objective, 2 workers", "objective, 2 threads", "objective, 3 threads", "objective, 2 processes",
           "objective, 4 processes",
           "objective, buckets", "objective, uniform buckets, AD products", "objective, uniform buckets",
           "objective, uniform buckets, 2 threads", "objective, uniform buckets, 3 threads",
           "objective, uniform buckets, 4 threads",
           "objective, uniform buckets, 2 processes",
           "objective, buckets, warm disk cache")


def child(args: argparse.Namespace) -> None:
    """Score ``args.candidates`` candidates (this process's share) and print a JSON line of timings."""
    import jax
    import optuna
    from jax._src import monitoring

    from ntksearch.data import load_dataset
    from ntksearch.ntk import compile as ntk_compile
    from ntksearch.proxies import LinearisedOptions, NTKOptions
    from ntksearch.search import ProxyObjective, optimize_ahead
    from ntksearch.spaces import load_space

    if args.cache:
        jax.config.update("jax_compilation_cache_dir", args.cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if args.default_cpu_options:
        ntk_compile.CPU_COMPILE_OPTIONS = {}  # read when the first NTK program is built
    elif args.xla_options:
        ntk_compile.CPU_COMPILE_OPTIONS = json.loads(args.xla_options)
    compile_s = [0.0]
    monitoring.register_event_duration_secs_listener(
        lambda event, duration, **_: compile_s.__setitem__(0, compile_s[0] + duration)
        if event.endswith("backend_compile_duration") else None)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = load_space(ROOT / "search_spaces" / f"{args.space}.yaml")
    buckets = {"buckets": None if args.buckets is None else bucket_grid(space, args.buckets)}
    mode = args.compile_mode
    objective = ProxyObjective(space, load_dataset("digits"),
                               proxies=None if args.record_all else [], seed=0, batch_size=32,
                               ntk=NTKOptions(compile_mode=mode),
                               linearised=LinearisedOptions(compile_mode=mode, structured=not args.no_structured),
                               **buckets)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(args.journal))
    sampler = (optuna.samplers.TPESampler(seed=args.sampler_seed, n_startup_trials=10) if args.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=args.sampler_seed))
    study = optuna.create_study(study_name="throughput", storage=storage, load_if_exists=True,
                                directions=objective.directions, sampler=sampler)
    start = time.perf_counter()
    if max(args.jobs, args.worker_processes) > 1:
        optimize_ahead(study, objective, threads=args.jobs, processes=args.worker_processes, n_trials=args.candidates)
    else:
        study.optimize(objective, n_trials=args.candidates)
    values = {t.number: t.values[0] if t.values else None for t in study.trials}
    print(json.dumps({"seconds": time.perf_counter() - start, "compile": compile_s[0], "n": args.candidates,
                      "values": values}))


def bucket_grid(space: SearchSpace, name: str) -> BucketGrid:
    """The shape grid ``name``: ``per_layer`` (:data:`~ntksearch.models.buckets.DEFAULT_GRID`) or ``uniform``
    (:func:`ntksearch.search.bucketed.uniform_grid`)."""
    from ntksearch.models.buckets import DEFAULT_GRID
    from ntksearch.search.bucketed import uniform_grid

    return DEFAULT_GRID if name == "per_layer" else uniform_grid(space)


def run_config(space: str, config: str, candidates: int, workdir: Path, sampler: str = "random", seed: int = 0,
               xla_options: str | None = None) -> dict:
    """Run one configuration in fresh processes; returns wall seconds, compile seconds and candidates.
    ``xla_options``: a JSON object of XLA options replacing :data:`ntksearch.ntk.compile.CPU_COMPILE_OPTIONS`."""
    cache = workdir / f"cache-{space}"
    journal = workdir / f"{space}-{config.replace(' ', '_').replace(',', '')}.log"
    workers = 2 if "2 workers" in config else 1
    base = [sys.executable, __file__, "--child", "--space", space, "--journal", str(journal), "--sampler", sampler]
    if "all proxies" in config:
        base.append("--record-all")
    if "disk cache" in config:
        base += ["--cache", str(cache) + ("-buckets" if "buckets" in config else "")]
    if "buckets" in config:
        base += ["--buckets", "uniform" if "uniform" in config else "per_layer"]
    if "AD products" in config:
        base.append("--no-structured")
    if "MLIR emitters" in config:
        base.append("--default-cpu-options")
    if xla_options:
        base += ["--xla-options", xla_options]
    if "compile" in config:  # "objective, <mode> compile"
        base += ["--compile-mode", config.split()[-2]]
    if "threads" in config:  # "objective, k threads"
        base += ["--jobs", config.split()[-2]]
    if "processes" in config:  # "objective, k processes"
        base += ["--worker-processes", config.split()[-2]]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if workers > 1:  # one core each: XLA's thread pools would otherwise fight over both cores
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                            "intra_op_parallelism_threads=1").strip()
    shares = [candidates // workers + (i < candidates % workers) for i in range(workers)]
    start = time.perf_counter()
    procs = [subprocess.Popen([*base, "--candidates", str(n), "--sampler-seed", str(seed + i)], env=env,
                              stdout=subprocess.PIPE, text=True) for i, n in enumerate(shares)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - start
    values = {f"{i}:{n}": v for i, o in enumerate(outs) for n, v in o["values"].items()}
    return {"space": space, "config": config, "candidates": candidates, "wall": wall,
            "compile": sum(o["compile"] for o in outs), "busy": sum(o["seconds"] for o in outs), "values": values}


def largest_difference(row: dict, reference: dict) -> float:
    """Largest relative difference of the score values of the same candidates in two rows (nan: none shared)."""
    pairs = [(v, reference["values"][k]) for k, v in row["values"].items()
             if v is not None and reference["values"].get(k) is not None]
    return max((abs(a - b) / max(abs(b), 1e-12) for a, b in pairs), default=float("nan"))


def table(rows: list[dict], candidates: int, sampler: str, seed: int = 0) -> str:
    """The Markdown table of ``rows``. Ratios and score differences are against the space's ``objective only``
    row, or its first row when there is none (named in the header). A threaded row's compile seconds add up
    overlapping compilations, so its "other" time and compile share are not shown; a row with worker processes
    has no compile seconds."""
    bases = {}
    for row in rows:
        if row["config"] == "objective only" or row["space"] not in bases:
            bases[row["space"]] = row
    reference = "objective only" if all(b["config"] == "objective only" for b in bases.values()) else "first row"
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; digits scoring batch of 32; "
             f"{candidates} candidates per space ({sampler} sampler, seed {seed}); fresh processes per row.", "",
             f"| space | configuration | candidates / min | × vs {reference} | compile s | other s | compile share "
             f"| score Δ vs {reference} |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        base = bases[row["space"]]
        rate = row["candidates"] / row["wall"] * 60
        threaded = "threads" in row["config"] or "processes" in row["config"]
        other = "–" if threaded else f"{row['busy'] - row['compile']:.1f}"
        share = "–" if threaded else f"{row['compile'] / row['busy']:.0%}"
        compiled = "–" if "processes" in row["config"] else f"{row['compile']:.1f}"
        speed = f"{base['wall'] / row['wall']:.2f}"
        delta = f"{largest_difference(row, base):.1e}"
        lines.append(f"| {row['space']} | {row['config']} | {rate:.1f} | {speed} | {compiled} | "
                     f"{other} | {share} | {delta} |")
    return "\n".join(lines) + "\n"


def quickstart(trials: int, runs: list[tuple[str, int]], out: Path, compile_mode: str = "auto",
               structured: bool = True) -> None:
    """Time the cold quickstart command once per (``threads`` or ``processes``, count) of ``runs``, its default
    score's programs compiled by ``compile_mode`` and its kernel factored or not (``structured``); print and
    write the table (see the module doc)."""
    import optuna
    import yaml

    rows = []
    for kind, count in runs:
        with tempfile.TemporaryDirectory() as tmp:
            config = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
            config.update(space=str(ROOT / "search_spaces" / "mlp.yaml"), output=str(Path(tmp) / "run"))
            scoring = config.setdefault("scoring", {})  # the default score's Lanczos run reads scoring.linearised
            scoring["linearised"] = {**scoring.get("linearised", {}), "compile_mode": compile_mode,
                                     "structured": structured}
            path = Path(tmp) / "quickstart.yaml"
            path.write_text(yaml.safe_dump(config))
            env = dict(os.environ, PYTHONPATH=str(ROOT), NTKSEARCH_JAX_CACHE=str(Path(tmp) / "cache"))
            command = [sys.executable, "-c", "import sys; from ntksearch.cli import main; sys.exit(main())", "run",
                       str(path), "--no-confirm", "--quiet", "--n-trials", str(trials), f"--{kind}", str(count)]
            start = time.perf_counter()
            subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            study = optuna.load_study(study_name=config["name"], storage=f"sqlite:///{Path(tmp) / 'run' / 'study.db'}")
            done = [t for t in study.trials if t.datetime_complete is not None]
            span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
            sizes = sorted(t.user_attrs["n_params"] for t in done if "n_params" in t.user_attrs)
        label = f"{count} {kind if count > 1 else {'threads': 'thread', 'processes': 'process'}[kind]}"
        rows.append({"parallel": label, "trials": len(done), "complete": sum(t.state.name == "COMPLETE" for t in done),
                     "wall": wall, "search": span, "median_params": sizes[len(sizes) // 2] if sizes else None})
        print(f"{kind} {count}: {len(done)} trials, command {wall:.1f} s, search {span:.1f} s", flush=True)
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; `ntksearch run experiments/quickstart.yaml "
             f"--no-confirm --n-trials {trials}`, compile_mode {compile_mode}, structured {str(structured).lower()}, "
             "empty compilation cache, one run per row.", "",
             "| scored in | trials (complete) | command wall s | candidates / min (command) | search s "
             "| candidates / min (search) | × vs 1 thread | median parameters |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        base = rows[0]["search"] / row["search"] if rows[0]["parallel"] == "1 thread" else float("nan")
        lines.append(f"| {row['parallel']} | {row['trials']} ({row['complete']}) | {row['wall']:.1f} | "
                     f"{60 * row['trials'] / row['wall']:.1f} | {row['search']:.1f} | "
                     f"{60 * row['trials'] / row['search']:.1f} | {base:.2f} | {row['median_params']:,} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "search_throughput_quickstart.md").write_text(text)
    (out / "search_throughput_quickstart.json").write_text(json.dumps(rows, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spaces", default="mlp,cnn,rnn")
    parser.add_argument("--candidates", type=int, default=60)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--configs", default=";".join(CONFIGS), help="';'-separated configurations to run")
    parser.add_argument("--sampler", choices=("random", "tpe"), default="random",
                        help="random: the same candidates in every row; tpe: as a search (10 random start-up trials)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the sampler's seed (the 2-worker row's workers: seed and seed + 1)")
    parser.add_argument("--buckets", choices=("per_layer", "uniform"), help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--space", help=argparse.SUPPRESS)
    parser.add_argument("--journal", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--record-all", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--default-cpu-options", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--xla-options", metavar="JSON",
                        help="XLA options replacing ntksearch.ntk.compile.CPU_COMPILE_OPTIONS in every row but "
                        "'objective, MLIR emitters', e.g. '{\"xla_cpu_use_fusion_emitters\": false}'")
    parser.add_argument("--no-structured", action="store_true",
                        help="Lanczos products by AD passes for every model (scoring.linearised.structured: false)")
    parser.add_argument("--compile-mode", choices=("auto", "fast", "optimised"), default="auto",
                        help="the NTK programs' compile_mode (with --quickstart: scoring.linearised's, which the "
                        "default score uses)")
    parser.add_argument("--sampler-seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--quickstart", type=int, metavar="TRIALS", help="time the quickstart command instead")
    parser.add_argument("--threads", default="1,2", help="with --quickstart: ','-separated thread counts")
    parser.add_argument("--processes", default="", help="with --quickstart: ','-separated worker process counts")
    parser.add_argument("--worker-processes", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.quickstart:
        runs = [("threads", int(t)) for t in args.threads.split(",") if t]
        quickstart(args.quickstart, runs + [("processes", int(p)) for p in args.processes.split(",") if p],
                   Path(args.out), args.compile_mode, not args.no_structured)
        return
    configs = [c for c in CONFIGS if c in args.configs.split(";")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for space in args.spaces.split(","):
            for config in configs:
                if "warm disk cache" in config:  # fill the disk cache with one cold run, not timed as a row
                    run_config(space, config.replace("warm ", ""), args.candidates, Path(tmp), args.sampler,
                               args.seed, args.xla_options)
                row = run_config(space, config, args.candidates, Path(tmp), args.sampler, args.seed, args.xla_options)
                rows.append(row)
                print(f"{space:>4} {config:<36} {row['candidates'] / row['wall'] * 60:7.1f} cand/min  "
                      f"wall {row['wall']:6.1f} s  compile {row['compile']:6.1f} s of {row['busy']:6.1f} s busy",
                      flush=True)
    text = table(rows, args.candidates, args.sampler, args.seed)
    print("\n" + text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "search_throughput.md").write_text(text)
    (Path(args.out) / "search_throughput.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
