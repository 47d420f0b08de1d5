"""Does scoring at initialisation find better networks for the same compute? A compute-matched comparison.

Three ways to spend the same wall-clock budget on one search space, each finally *picking* one architecture:

* ``ntksearch``: a TPE search on the default score (no training) for ``score_fraction`` of the budget, then
  the best-scored candidates are trained with the recipe, best first, until the budget is spent; the pick is
  the trained candidate with the best validation accuracy;
* ``tpe_hyperband``: Optuna's TPE sampler with a Hyperband pruner over real training (resource = epochs of
  the recipe, validation accuracy reported after every epoch); the pick is the best fully trained trial;
* ``random``: random architectures, each trained with the recipe; the pick is the best by validation accuracy.

Training inside a budget stops the moment the budget is spent (an unfinished run does not count). Every pick
is then trained again with the same recipe for two fresh seeds outside the budget, and its **test** accuracy
(mean of the two) is the outcome. Each (method, seed) runs in its own process (no compiled program is
shared between methods), single-threaded and pinned to one core; two such processes run at a time on a
2-core machine. Results are appended to a JSON-lines file (resumable) and summarised as a table of the
median and range over seeds, with each method's median against ``random``'s measured in the same run.

Usage::

    .venv/bin/python benchmarks/end_to_end.py --setting digits_mlp --seeds 0,1,2,3,4
    .venv/bin/python benchmarks/end_to_end.py --setting fashion_cnn --seeds 0,1,2,3,4 --workers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("ntksearch", "tpe_hyperband", "random")
FINAL_SEEDS = (1000, 1001)


@dataclass(frozen=True)
class Setting:
    """A search space, its data and the training recipe used by every method and by the final evaluation."""

    space: str
    dataset: str
    data: dict[str, Any]
    hparams: dict[str, Any]
    budget: float  # seconds per (method, seed)
    score_fraction: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)


ADAMW = {"optimizer": "adamw", "learning_rate": 1e-3, "weight_decay": 1e-4, "batch_size": 128,
         "schedule": "cosine", "grad_clip_norm": 1.0}
SETTINGS = {
    "digits_mlp": Setting("search_spaces/mlp.yaml", "digits", {}, {**ADAMW, "epochs": 20}, budget=60.0),
    "fashion_cnn": Setting("search_spaces/cnn.yaml", "fashion_mnist",
                           {"max_train": 5000, "max_val": 2000, "max_test": 5000}, {**ADAMW, "epochs": 4},
                           budget=180.0),  # 15 runs (3 methods × 5 seeds) fit in about 70 min of one core
}


class BudgetSpent(Exception):
    """Raised inside training when the wall-clock budget is over."""


# -- one (method, seed) run, in its own process ---------------------------------------------------------------
def _context(setting: Setting, seed: int) -> dict[str, Any]:
    from ntksearch.data import load_dataset
    from ntksearch.spaces import load_space
    from ntksearch.train import TrainHParams

    return {"space": load_space(ROOT / setting.space), "data": load_dataset(setting.dataset, seed=0, **setting.data),
            "hparams": TrainHParams(**setting.hparams), "seed": seed}


def _train(ctx: dict[str, Any], point: Any, key: Any, on_epoch: Callable[[dict[str, float]], None] | None = None
           ) -> Any:
    from ntksearch.train import train_model

    data = ctx["data"]
    built = ctx["space"].build(point, input_shape=data.input_shape, n_classes=data.n_classes, key=key)
    return train_model(built, data, ctx["hparams"], key=key, on_epoch=on_epoch)


def _deadline_guard(deadline: float) -> Callable[[dict[str, float]], None]:
    def check(_: dict[str, float]) -> None:
        if time.perf_counter() > deadline:
            raise BudgetSpent
    return check


def run_ntksearch(ctx: dict[str, Any], setting: Setting, deadline: float) -> dict[str, Any]:
    import jax
    import optuna

    from ntksearch.search import ProxyObjective, candidate_keys

    objective = ProxyObjective(ctx["space"], ctx["data"], proxies=[], seed=ctx["seed"])
    study = optuna.create_study(directions=objective.directions,
                                sampler=optuna.samplers.TPESampler(seed=ctx["seed"]))
    start = time.perf_counter()
    study.optimize(objective, timeout=setting.score_fraction * (deadline - start))
    scored = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE),
                    key=lambda t: t.value, reverse=True)
    trained = []
    guard = _deadline_guard(deadline)
    for trial in scored:
        if time.perf_counter() > deadline:
            break
        point = ctx["space"].point_from_params(trial.params)
        try:
            result = _train(ctx, point, candidate_keys(ctx["seed"], trial.number).train, guard)
        except BudgetSpent:
            break
        trained.append((result.val_accuracy, trial.params))
    jax.clear_caches()
    best = max(trained, key=lambda t: t[0], default=(None, None))
    return {"scored": len(scored), "trained": len(trained), "pick_val_accuracy": best[0], "pick": best[1]}


def run_training_search(ctx: dict[str, Any], setting: Setting, deadline: float, *, hyperband: bool
                        ) -> dict[str, Any]:
    import jax
    import optuna

    seed = ctx["seed"]
    sampler = optuna.samplers.TPESampler(seed=seed) if hyperband else optuna.samplers.RandomSampler(seed=seed)
    pruner = (optuna.pruners.HyperbandPruner(min_resource=1, max_resource=setting.hparams["epochs"],
                                             reduction_factor=3) if hyperband else optuna.pruners.NopPruner())
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)

    def objective(trial: optuna.Trial) -> float:
        point = ctx["space"].sample(trial)

        def on_epoch(entry: dict[str, float]) -> None:
            if time.perf_counter() > deadline:
                study.stop()
                raise BudgetSpent
            trial.report(entry["val_accuracy"], int(entry["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned

        try:
            return _train(ctx, point, jax.random.fold_in(jax.random.key(seed), trial.number), on_epoch).val_accuracy
        except BudgetSpent:
            raise optuna.TrialPruned from None  # unfinished: never the pick

    study.optimize(objective, timeout=deadline - time.perf_counter())
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    best = max(complete, key=lambda t: t.value, default=None)
    jax.clear_caches()
    return {"trained": len(complete), "pruned": pruned, "pick_val_accuracy": best.value if best else None,
            "pick": best.params if best else None}


def run_one(setting_name: str, method: str, seed: int, budget: float | None = None) -> dict[str, Any]:
    """Search with ``method`` under the budget, then evaluate the pick on the test split (outside the budget)."""
    import jax
    import numpy as np

    setting = SETTINGS[setting_name]
    if budget is not None:
        setting = dataclasses.replace(setting, budget=budget)
    ctx = _context(setting, seed)
    start = time.perf_counter()
    deadline = start + setting.budget
    if method == "ntksearch":
        out = run_ntksearch(ctx, setting, deadline)
    else:
        out = run_training_search(ctx, setting, deadline, hyperband=method == "tpe_hyperband")
    out.update(setting=setting_name, method=method, seed=seed, budget=setting.budget,
               search_seconds=time.perf_counter() - start)
    if out["pick"] is not None:
        point = ctx["space"].point_from_params(out["pick"])
        tests = []
        for final_seed in FINAL_SEEDS:
            from ntksearch.train import train_model

            data = ctx["data"]
            built = ctx["space"].build(point, input_shape=data.input_shape, n_classes=data.n_classes,
                                       key=jax.random.key(final_seed))
            tests.append(train_model(built, data, ctx["hparams"], key=jax.random.key(final_seed),
                                     eval_test=True).test_accuracy)
        out["test_accuracy"] = float(np.mean(tests))
        out["arch"] = point.arch
    return out


# -- the driver ---------------------------------------------------------------------------------------------
def _launch(setting: str, method: str, seed: int, budget: float | None, cores: queue.Queue[int]) -> dict[str, Any]:
    """Run one (method, seed) in a fresh single-threaded process pinned to a free core."""
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    core = cores.get()
    cmd = ["taskset", "-c", str(core), sys.executable, __file__, "--run-one", setting, method, str(seed)]
    if budget is not None:
        cmd += ["--budget", str(budget)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    finally:
        cores.put(core)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        return {"setting": setting, "method": method, "seed": seed, "error": proc.stderr[-2000:]}
    return json.loads(lines[-1])


def summarise(rows: list[dict[str, Any]]) -> str:
    """Markdown table: per setting and method, the test accuracy of the picks (median [min, max] over the runs
    that picked a network; a run whose budget ended before any candidate finished training picks none)."""
    import numpy as np

    lines = ["| setting | method | runs (with a pick) | test accuracy of the pick: median [min, max] | vs random "
             "(median) | candidates trained (median) | candidates scored (median) |", "|---|---|---|---|---|---|---|"]
    for setting in sorted({r["setting"] for r in rows}):
        by = {m: [r for r in rows if r["setting"] == setting and r["method"] == m] for m in METHODS}
        picked = {m: np.array([r["test_accuracy"] for r in runs if "test_accuracy" in r]) for m, runs in by.items()}
        base = np.median(picked["random"]) if len(picked["random"]) else float("nan")
        for method, runs in by.items():
            if not runs:
                continue
            acc = picked[method]
            accuracy = (f"{np.median(acc):.4f} [{acc.min():.4f}, {acc.max():.4f}] | {np.median(acc) - base:+.4f}"
                        if len(acc) else "no pick | –")
            scored = [r["scored"] for r in runs if "scored" in r]
            lines.append(f"| {setting} | {method} | {len(runs)} ({len(acc)}) | {accuracy} | "
                         f"{np.median([r['trained'] for r in runs]):.0f} | "
                         f"{np.median(scored) if scored else float('nan'):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), action="append")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workers", type=int, default=2, help="runs at a time, each pinned to its own core")
    parser.add_argument("--out", type=Path, default=RESULTS / "end_to_end.jsonl")
    parser.add_argument("--budget", type=float, help="override the setting's budget in seconds (smoke tests)")
    parser.add_argument("--run-one", nargs=3, metavar=("SETTING", "METHOD", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        setting, method, seed = args.run_one
        print(json.dumps(run_one(setting, method, int(seed), args.budget)), flush=True)
        return
    done = []
    if args.out.exists():
        done = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    have = {(r["setting"], r["method"], r["seed"]) for r in done if "error" not in r}
    todo = [(s, m, int(seed)) for s in args.setting or sorted(SETTINGS) for seed in args.seeds.split(",")
            for m in args.methods.split(",") if (s, m, int(seed)) not in have]
    print(f"{len(have)} runs done, {len(todo)} to go", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cores: queue.Queue[int] = queue.Queue()
    for core in sorted(os.sched_getaffinity(0))[: args.workers]:
        cores.put(core)
    with ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(_launch, s, m, seed, args.budget, cores) for s, m, seed in todo]
        for future in futures:
            row = future.result()
            with args.out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            done.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("pick", "arch")})[:300], flush=True)
    print(summarise([r for r in done if "error" not in r]))


if __name__ == "__main__":
    main()
