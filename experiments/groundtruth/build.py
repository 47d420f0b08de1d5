"""Build a ground-truth table of trained accuracies for architectures sampled from frozen search spaces.

A *task* (:data:`TASKS`) is one table: a dataset, ONE fixed training recipe and the architecture populations
trained with it (documented in README.md next to this file). Every architecture is trained for each seed (and,
in hyperparameter tables, each variant: learning rate × init scale); one CSV row per (architecture, variant,
seed). The build is resumable: rows already in the CSV with the current recipe hash (and the same sampled
architecture) are skipped, new rows are appended and flushed one by one, so the process can be killed at any
time. Rows of another recipe are moved out of the way to ``<out>.stale.csv`` (never mixed with the current
recipe's rows).

Usage::

    .venv/bin/python experiments/groundtruth/build.py --task fashion_mnist_sgd --seeds 0,1 --workers 2

Architectures: architecture ``<family>-<i>`` is drawn from ``spaces/<family>.yaml`` (next to this file: frozen
copies of the shipped spaces as they were when the first table was built, and a small NAS-Bench-201 space) by
a numpy ``Generator`` seeded with ``(sample_seed, family index, i)`` through a duck-typed trial with Optuna's
RandomSampler conventions, so asking for more architectures later keeps the first ones unchanged, and
``mlp-0007`` is the same network in every task. Only the architecture part of a point is used; the training
hyperparameters the space also samples are ignored (they stay in ``params_json`` so that
``SearchSpace.point_from_params`` rebuilds the sampled point exactly).
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SPACES_DIR = Path(__file__).resolve().parent / "spaces"  # frozen copies: the tables' populations never drift
FAMILY_ORDER = ("mlp", "cnn", "rnn", "nb201")
SAMPLE_SEED = 20240
RECIPE_VERSION = 1  # bump when the training code path of the recipe changes meaningfully
DATA_SEED = 0

# The recipes. AdamW: the first recipe, shared by the Fashion-MNIST, digits and adding tables.
ADAMW = {
    "optimizer": "adamw",
    "learning_rate": 1e-3,
    "weight_decay": 1e-4,
    "batch_size": 128,
    "schedule": "cosine",
    "warmup_steps": 0,
    "grad_clip_norm": 1.0,
}
# Heavy-ball SGD (momentum 0.9), constant step, no clipping, no weight decay: a short, plain budget.
MOMENTUM_SGD = {
    "optimizer": "momentum",
    "learning_rate": 1e-2,
    "weight_decay": 0.0,
    "batch_size": 128,
    "schedule": "constant",
    "warmup_steps": 0,
    "grad_clip_norm": None,
}
# Plain full-step SGD with a constant step: the recipe of the hyperparameter table (the learning rate is a
# variant of each row), the optimizer the linearised-training dynamics describe.
PLAIN_SGD = {**MOMENTUM_SGD, "optimizer": "sgd"}


@dataclass(frozen=True)
class Task:
    """One ground-truth table: a dataset, a training recipe and the architecture populations trained on it.

    Attributes:
      dataset: ``ntksearch.data`` registry name.
      data: data sizes (``max_train``/``max_val``/``max_test`` subsample the dataset's fixed split, None
        keeps a split whole) plus ``epochs``; part of the recipe.
      hparams: ``TrainHParams`` fields shared by every row.
      counts: architectures per family (``<family>-0000`` … in the sampling order of :func:`sample_architectures`).
      loader: further options of the dataset's loader (part of the recipe when given).
      variants: per-row overrides, each a dict of ``learning_rate`` and/or ``init_scale``; every architecture
        is trained once per variant and seed (hyperparameter tables).
    """

    dataset: str
    data: dict[str, Any]
    hparams: dict[str, Any]
    counts: dict[str, int]
    loader: dict[str, Any] = field(default_factory=dict)
    variants: tuple[dict[str, float], ...] = ()


FIRST_TASKS = ("fashion_mnist", "digits")  # built before tasks had names: their recipes keep the original form
HP_LEARNING_RATES = (0.01, 0.03, 0.1, 0.3)
HP_INIT_SCALES = (0.5, 1.0)
TASKS: dict[str, Task] = {
    # Stratified subsets (data seed 0) of the fixed 50k/10k/10k split; val and test sizes are whole multiples
    # of the 1000-example evaluation chunk (no padded rows inside batch-statistics normalisation).
    "fashion_mnist": Task("fashion_mnist", {"epochs": 4, "max_train": 5000, "max_val": 2000, "max_test": 5000},
                          ADAMW, {"mlp": 140, "cnn": 63, "rnn": 64}),
    # The whole fixed 1257/270/270 split.
    "digits": Task("digits", {"epochs": 20, "max_train": None, "max_val": None, "max_test": None}, ADAMW,
                   {"mlp": 40, "cnn": 40, "rnn": 30}),
    # The same architectures and data as "fashion_mnist", one epoch of momentum SGD instead of four of AdamW.
    "fashion_mnist_sgd": Task("fashion_mnist", {"epochs": 1, "max_train": 5000, "max_val": 2000, "max_test": 5000},
                              MOMENTUM_SGD, {"mlp": 140, "cnn": 63, "rnn": 64}),
    # The adding problem (sequences of 20 steps, 4 classes), generated in code; cnn = 1-D convolutions.
    "adding": Task("adding", {"epochs": 12, "max_train": None, "max_val": None, "max_test": None}, ADAMW,
                   {"rnn": 80, "cnn": 60, "mlp": 40},
                   loader={"length": 20, "n_classes": 4, "n_train": 5000, "n_val": 2000, "n_test": 2000}),
    # NAS-Bench-201 cells (C = 8, N = 1) on 14×14 Fashion-MNIST (2×2 average pooling of the images).
    "nb201_fashion_mnist": Task("fashion_mnist",
                                {"epochs": 4, "max_train": 5000, "max_val": 2000, "max_test": 5000},
                                ADAMW, {"nb201": 100}, loader={"downsample": 2}),
    # Hyperparameters: every architecture × 4 learning rates (30×) × 2 init scales, plain SGD on digits.
    "digits_hp": Task("digits", {"epochs": 20, "max_train": None, "max_val": None, "max_test": None}, PLAIN_SGD,
                      {"mlp": 24, "cnn": 16},
                      variants=tuple({"learning_rate": lr, "init_scale": s}
                                     for s in HP_INIT_SCALES for lr in HP_LEARNING_RATES)),
}

COLUMNS = [
    "dataset", "family", "arch_id", "arch_index", "seed", "recipe_hash",
    "n_params", "flops",
    "val_accuracy", "test_accuracy", "final_train_loss", "val_loss", "diverged",
    "epochs_run", "steps", "train_seconds", "total_seconds", "cpu_seconds",
    "val_curve", "arch_json", "params_json", "error", "finished_at",
]
VARIANT_COLUMNS = ["variant", "learning_rate", "init_scale"]  # hyperparameter tables only


# -- architectures ------------------------------------------------------------------------------------------
class NumpyTrial:
    """A duck-typed Optuna trial drawing every suggestion at random (RandomSampler conventions)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        value = choices[int(self.rng.integers(len(choices)))]
        self.params[name] = value
        return value

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        if log:  # as Optuna: uniform in log space over [low - 0.5, high + 0.5], rounded
            u = self.rng.uniform(math.log(low - 0.5), math.log(high + 0.5))
            value = min(max(round(math.exp(u)), low), high)
        else:
            value = low + step * int(self.rng.integers((high - low) // step + 1))
        self.params[name] = int(value)
        return int(value)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        if step is not None:
            k = int(self.rng.integers(round((high - low) / step) + 1))
            value = round(low + k * step, 12)
        elif log:
            value = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        else:
            value = float(self.rng.uniform(low, high))
        self.params[name] = float(value)
        return float(value)


def sample_architectures(family: str, n: int, *, sample_seed: int = SAMPLE_SEED) -> list[dict[str, Any]]:
    """Architectures ``<family>-0000 … <family>-{n-1}``; each depends only on (sample_seed, family, i)."""
    from ntksearch.spaces import load_space

    space = load_space(SPACES_DIR / f"{family}.yaml")
    family_index = FAMILY_ORDER.index(family)
    archs = []
    for i in range(n):
        point = space.sample(NumpyTrial(np.random.default_rng((sample_seed, family_index, i))))
        archs.append({"family": family, "arch_id": f"{family}-{i:04d}", "arch_index": i,
                      "arch": point.arch, "params": point.params})
    return archs


# -- the recipe ---------------------------------------------------------------------------------------------
def recipe(task: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full training recipe of ``task`` (with optional overrides of epochs / data sizes).

    The first two tables' recipes (``fashion_mnist``, ``digits``) keep their original form (and hash); later
    tasks add their name, loader options and variants.
    """
    spec = TASKS[task]
    data = dict(spec.data)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    rec = {"version": RECIPE_VERSION, "dataset": spec.dataset, "data_seed": DATA_SEED, "sample_seed": SAMPLE_SEED,
           **data, "hparams": spec.hparams}
    if task not in FIRST_TASKS:
        rec.update(task=task, loader=spec.loader, variants=list(spec.variants))
    return rec


def recipe_hash(rec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:12]


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def variant_name(variant: dict[str, float]) -> str:
    """``learning_rate=0.01,init_scale=0.5`` (empty for the single default variant)."""
    return ",".join(f"{k}={v:g}" for k, v in variant.items())


# -- workers ------------------------------------------------------------------------------------------------
_DATA: dict[str, Any] = {}


def _init_worker(single_thread: bool) -> None:
    """Run in each spawned worker before jax is imported: one compute thread per worker.

    XLA sizes its CPU thread pools from the CPUs the process may run on, so the worker is pinned to one CPU
    while jax creates its client, then unpinned (the OS balances the single-threaded workers).
    """
    if not single_thread:
        return
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    allowed = os.sched_getaffinity(0)
    ident = mp.current_process()._identity
    cpu = sorted(allowed)[(ident[0] - 1) % len(allowed) if ident else 0]
    os.sched_setaffinity(0, {cpu})
    import jax

    jax.devices()  # creates the CPU client (and its thread pools) under the one-CPU mask
    os.sched_setaffinity(0, allowed)


def _dataset(rec: dict[str, Any]) -> Any:
    """The recipe's data: the loader's fixed split (with the task's loader options), stratified subsets."""
    from ntksearch.data import load_dataset, subsample

    key = _dumps(rec)
    if key not in _DATA:
        _DATA.clear()
        sizes = {k: rec[k] for k in ("max_train", "max_val", "max_test")}
        full = load_dataset(rec["dataset"], seed=rec["data_seed"], **rec.get("loader", {}))
        _DATA[key] = subsample(full, **sizes, seed=rec["data_seed"])
    return _DATA[key]


def train_architecture(task: tuple[dict[str, Any], list[int], dict[str, Any]]) -> list[dict[str, Any]]:
    """Train one architecture for each seed with the recipe; one result row per seed (errors become rows)."""
    import jax

    from ntksearch.models import build_model
    from ntksearch.train import TrainHParams, train_model

    arch, runs, rec = task
    dataset = _dataset(rec)
    rows = []
    for variant, seed in runs:
        start, cpu_start = time.perf_counter(), time.process_time()
        row: dict[str, Any] = {
            "dataset": rec["dataset"], "family": arch["family"], "arch_id": arch["arch_id"],
            "arch_index": arch["arch_index"], "seed": seed, "recipe_hash": recipe_hash(rec),
            "arch_json": _dumps(arch["arch"]), "params_json": _dumps(arch["params"]), "error": "",
        }
        if variant:
            row.update(variant=variant_name(variant), **variant)
        try:
            hparams = TrainHParams(**{**rec["hparams"], **_pick(variant, "learning_rate")}, epochs=rec["epochs"])
            init_key, train_key = jax.random.split(jax.random.key(seed))
            built = build_model(arch["family"], {**arch["arch"], **_pick(variant, "init_scale")},
                                input_shape=dataset.input_shape, n_classes=dataset.n_classes, key=init_key)
            result = train_model(built, dataset, hparams, key=train_key, eval_test=True)
            row.update(
                n_params=built.n_params, flops=built.flops,
                val_accuracy=result.val_accuracy, test_accuracy=result.test_accuracy,
                final_train_loss=result.history[-1]["train_loss"], val_loss=result.val_loss,
                diverged=bool(result.diverged), epochs_run=len(result.history), steps=result.steps,
                train_seconds=round(result.seconds, 3),
                val_curve=_dumps([round(h["val_accuracy"], 5) for h in result.history]),
            )
        except Exception as exc:  # recorded, not raised: a failing architecture is part of the ground truth
            row["error"] = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]
            traceback.print_exc()
        row["total_seconds"] = round(time.perf_counter() - start, 3)
        row["cpu_seconds"] = round(time.process_time() - cpu_start, 3)
        row["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        rows.append(row)
    jax.clear_caches()  # compiled steps of this architecture are not needed again; keep memory flat
    return rows


def _pick(variant: dict[str, float], name: str) -> dict[str, float]:
    return {name: variant[name]} if name in variant else {}


# -- the CSV ------------------------------------------------------------------------------------------------
RowKey = tuple[str, str, int, str, str, str]


def _row_key(row: dict[str, Any]) -> RowKey:
    return (row["family"], row["arch_id"], int(row["seed"]), row["recipe_hash"], row["params_json"],
            row.get("variant") or "")


def read_done(out: Path, current_hash: str) -> set[RowKey]:
    """Keys of the rows of the current recipe; rows of other recipes are moved to ``<out>.stale.csv``."""
    if not out.exists() or out.stat().st_size == 0:
        return set()
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    current = [r for r in rows if r.get("recipe_hash") == current_hash]
    stale = [r for r in rows if r.get("recipe_hash") != current_hash]
    if stale:
        stale_path = out.with_suffix(".stale.csv")
        fields = list(rows[0].keys())
        new_file = not stale_path.exists()
        with stale_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerows(stale)
        tmp = out.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(current)
        os.replace(tmp, out)
        print(f"moved {len(stale)} rows of another recipe to {stale_path}", flush=True)
    return {_row_key(r) for r in current}


class CsvAppender:
    """Appends rows to the CSV (header first if new), flushing and fsyncing after every row."""

    def __init__(self, out: Path, columns: list[str]):
        out.parent.mkdir(parents=True, exist_ok=True)
        new = not out.exists() or out.stat().st_size == 0
        self.file = out.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=columns, extrasaction="ignore")
        if new:
            self.writer.writeheader()
            self._flush()

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)
        self._flush()

    def _flush(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


# -- main ---------------------------------------------------------------------------------------------------
def _interleave(groups: Iterable[list[Any]]) -> list[Any]:
    """Round-robin over the groups (mlp-0, cnn-0, rnn-0, mlp-1, ...), so any prefix spans every family."""
    groups = [list(g) for g in groups]
    out = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def _fmt(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--out", type=Path, help="CSV file (appended to; resumable); default <task>.csv here")
    for family in FAMILY_ORDER:
        p.add_argument(f"--n-{family}", type=int, default=None,
                       help=f"{family} architectures (default: the task's count)")
    p.add_argument("--seeds", default="0,1", help="comma-separated training seeds (init + data order)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes; >1 uses spawned single-threaded workers (one per core)")
    p.add_argument("--single-thread", action="store_true",
                   help="with --workers 1: also run in a single-threaded spawned worker (for timing)")
    p.add_argument("--limit", type=int, default=None, help="train at most this many architectures this run")
    g = p.add_argument_group("recipe overrides (change the recipe hash; for tests and timing only)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--max-train", type=int)
    g.add_argument("--max-val", type=int)
    g.add_argument("--max-test", type=int)
    return p.parse_args(argv)


def _print(message: str) -> None:
    print(message, flush=True)


def main(argv: Sequence[str] | None = None, *, log: Callable[[str], None] = _print) -> int:
    args = parse_args(argv)
    args.out = args.out or Path(__file__).resolve().parent / f"{args.task}.csv"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.with_suffix(".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another build is writing {args.out} (lock {lock.name} held); not starting a second one")
            return 1
        return _build(args, log)


def _build(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    spec = TASKS[args.task]
    rec = recipe(args.task, {"epochs": args.epochs, "max_train": args.max_train, "max_val": args.max_val,
                             "max_test": args.max_test})
    rhash = recipe_hash(rec)
    counts = {f: n for f in FAMILY_ORDER
              if (n := getattr(args, f"n_{f}") if getattr(args, f"n_{f}") is not None else spec.counts.get(f, 0))}
    archs = _interleave(sample_architectures(f, n) for f, n in counts.items())
    variants = list(spec.variants) or [{}]
    done = read_done(args.out, rhash)
    tasks = []
    for arch in archs:
        key = lambda v, s, a=arch: (a["family"], a["arch_id"], s, rhash, _dumps(a["params"]), variant_name(v))
        missing = [(v, s) for v in variants for s in seeds if key(v, s) not in done]
        if missing:
            tasks.append((arch, missing, rec))
    if args.limit is not None:
        tasks = tasks[: args.limit]
    total = len(archs) * len(variants) * len(seeds)
    todo = sum(len(t[1]) for t in tasks)
    already = total - sum(1 for a in archs for v in variants for s in seeds
                          if (a["family"], a["arch_id"], s, rhash, _dumps(a["params"]), variant_name(v)) not in done)
    log(f"{args.task}: recipe {rhash} {_dumps(rec)}")
    log(f"{total} rows in the table ({', '.join(f'{n} {f}' for f, n in counts.items())} × {len(variants)} "
        f"variant(s) × {len(seeds)} seeds); {already} already done, {todo} to train now with {args.workers} worker(s)")
    if not tasks:
        return 0

    appender = CsvAppender(args.out, COLUMNS + (VARIANT_COLUMNS if spec.variants else []))
    start = time.perf_counter()
    finished = 0
    pool = None
    try:
        if args.workers == 1 and not args.single_thread:
            results: Iterable[list[dict[str, Any]]] = map(train_architecture, tasks)
        else:
            pool = mp.get_context("spawn").Pool(args.workers, initializer=_init_worker, initargs=(True,),
                                                maxtasksperchild=50)
            results = pool.imap_unordered(train_architecture, tasks, chunksize=1)
        for rows in results:
            for row in rows:
                appender.write(row)
                finished += 1
                elapsed = time.perf_counter() - start
                eta = elapsed / finished * (todo - finished)
                status = (f"ERROR {row['error'][:80]}" if row["error"] else
                          f"val {row['val_accuracy']:.4f} test {row['test_accuracy']:.4f} "
                          f"{'DIVERGED ' if row['diverged'] else ''}train {row['train_seconds']:.1f}s")
                log(f"[{already + finished}/{total}] {row['arch_id']} {row.get('variant', '')} seed {row['seed']}: "
                    f"{status} | "
                    f"elapsed {_fmt(elapsed)} ETA {_fmt(eta)}")
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        if pool is not None:
            pool.terminate()
        appender.close()
    log(f"done: {finished} rows in {_fmt(time.perf_counter() - start)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
