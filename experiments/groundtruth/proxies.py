"""Compute every registered proxy for a task's architectures, at the initialisation they were trained from.

For architecture ``<family>-<i>`` of a task (the same sample as ``build.py``) the model is built with seed 0's
initialisation key (``jax.random.split(jax.random.key(0))[0]``, exactly as ``build.py`` trains seed 0; in a
hyperparameter table with each variant's init scale) and scored on one class-balanced batch of 64 examples
of the recipe's training split (``scoring_batch(dataset, 64, seed=0)``); the linearised-training proxies also
get a class-balanced held-out batch of 256 validation examples (seed 0). The NTK quantities are estimated by
Hutch++ (48-column sketch) to a relative standard error of 1% (budget 1,024 passes), far below the spread
between architectures; λ_max by up to 30 Lanczos steps. The linearised proxies use the defaults of
``LinearisedOptions`` (learning rate ``auto``); in a hyperparameter table they follow each variant's training
hyperparameters (:func:`ntksearch.proxies.linearised.options_for_training`): only they see the learning rate.

One CSV row per architecture (per architecture × variant in a hyperparameter table): every proxy's value and
standard error, seconds per proxy group, and the errors of groups that failed. The table is *incremental*:
a row is (re)computed only for the proxies it lacks, so registering a new proxy and running this again adds
its column without recomputing the others. The CSV is rewritten atomically after every row (resumable).

Usage::

    .venv/bin/python experiments/groundtruth/proxies.py --task adding
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import TASKS, _dataset, recipe, sample_architectures, variant_name
from tables import PROXY_TABLES, read_table

from ntksearch.data import scoring_batch
from ntksearch.models import build_model
from ntksearch.proxies import PROXIES, LinearisedOptions, NTKOptions, ProxyInputs, compute_proxies
from ntksearch.proxies.linearised import options_for_training

NTK = NTKOptions(method="hutch++", rtol=0.01, max_matvecs=1024, sketch_size=48, lanczos_iters=30)
SCORING_BATCH, VAL_BATCH = 64, 256
HERE = Path(__file__).resolve().parent
LINEARISED_GROUP = "linearised"  # the only proxies that read a variant's learning rate


def units(task: str, first: int | None = None) -> list[dict[str, Any]]:
    """The task's rows: one per architecture, or per architecture × variant (with its init scale applied);
    ``first``: only the first architectures of each family in sampling order (a random subset)."""
    spec = TASKS[task]
    archs = [a for family, n in spec.counts.items() for a in sample_architectures(family, min(n, first or n))]
    if not spec.variants:
        return [{**a, "variant": "", "settings": {}} for a in archs]
    return [{**a, "arch": {**a["arch"], **({"init_scale": v["init_scale"]} if "init_scale" in v else {})},
             "variant": variant_name(v), "settings": v} for a in archs for v in spec.variants]


def linearised_options(task: str, unit: dict[str, Any], n_classes: int, train_size: int) -> LinearisedOptions:
    """Registry defaults; in a hyperparameter table, the variant's learning rate and schedule (RULE.md)."""
    if not unit["settings"]:
        return LinearisedOptions()
    hparams = {**TASKS[task].hparams, **unit["settings"], "epochs": TASKS[task].data["epochs"]}
    hparams.pop("init_scale", None)
    return options_for_training(hparams, LinearisedOptions(), n_classes=n_classes, train_size=train_size)


def score_unit(unit: dict[str, Any], names: list[str], dataset: Any, batches: dict[str, jax.Array],
               options: LinearisedOptions) -> dict[str, Any]:
    """The named proxies of one unit; a failing group is recorded in ``error`` and the others still computed."""
    row: dict[str, Any] = {}
    errors = []
    start = time.perf_counter()
    init_key, _ = jax.random.split(jax.random.key(0))
    try:
        built = build_model(unit["family"], unit["arch"], input_shape=dataset.input_shape,
                            n_classes=dataset.n_classes, key=init_key)
    except Exception as exc:  # a candidate that cannot be built is a data point, not a crash
        return {"error": f"build: {type(exc).__name__}: {exc}"[:300], "seconds": 0.0}
    inputs = ProxyInputs.from_model(built, batches["x"], batches["y"], key=jax.random.key(1), ntk=NTK,
                                    x_val=batches["x_val"], y_val=batches["y_val"], linearised=options)
    supported = [n for n in names if all(getattr(inputs, r) is not None for r in PROXIES[n].requires)]
    for group in dict.fromkeys(PROXIES[n].group for n in supported):  # one group at a time: failures stay local
        wanted = [n for n in supported if PROXIES[n].group == group]
        try:
            result = compute_proxies(wanted, inputs)
        except Exception as exc:
            errors.append(f"{group}: {type(exc).__name__}: {exc}".replace("\n", " ")[:200])
            continue
        for name, value in result.values.items():
            row[name], row[f"{name}_stderr"] = value.value, value.stderr
        row[f"seconds_{group}"] = round(result.seconds.get(group, math.nan), 3)
    row["error"] = "; ".join(errors)
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


def _proxy_of(column: str) -> str | None:
    """The proxy a value or ``_stderr`` column holds, or None for other columns."""
    name = column.removesuffix("_stderr")
    return name if name in PROXIES else None


def _missing(frame: pd.DataFrame, key: tuple[str, str]) -> list[str]:
    if key not in frame.index:
        return list(PROXIES)
    row = frame.loc[key]
    return [n for n in PROXIES if n not in frame.columns or pd.isna(row[n])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(set(TASKS) - set(PROXY_TABLES)), required=True)
    parser.add_argument("--out", type=Path, help="default: proxies_<task>.csv next to this file")
    parser.add_argument("--limit", type=int, help="score at most this many units in this run")
    parser.add_argument("--first", type=int, help="only the first FIRST architectures of each family")
    args = parser.parse_args(argv)
    out = args.out or HERE / f"proxies_{args.task}.csv"
    rec = recipe(args.task)
    dataset = _dataset(rec)
    x, y = scoring_batch(dataset, SCORING_BATCH, seed=0)
    x_val, y_val = scoring_batch(dataset, VAL_BATCH, seed=0, split="val")
    batches = {"x": jnp.asarray(x), "y": jnp.asarray(y), "x_val": jnp.asarray(x_val), "y_val": jnp.asarray(y_val)}
    frame = read_table(out, drop_errors=False) if out.exists() else pd.DataFrame()
    if not frame.empty:
        frame = frame.set_index(["arch_id", "variant"], drop=False)
    todo = [(u, m) for u in units(args.task, args.first) if (m := _missing(frame, (u["arch_id"], u["variant"])))]
    todo = todo[: args.limit] if args.limit is not None else todo
    print(f"{args.task}: {len(todo)} units with missing proxies", flush=True)
    start = time.perf_counter()
    # the previous unit's initialisation (architecture with init scale) and its proxies that see nothing else:
    # variants differing only in the learning rate reuse them
    last_init, at_init = "", {}
    for i, (unit, names) in enumerate(todo, 1):
        options = linearised_options(args.task, unit, dataset.n_classes, len(dataset.y_train))
        init = json.dumps(unit["arch"], sort_keys=True)
        shared = {k: v for k, v in at_init.items() if _proxy_of(k) in names} if init == last_init else {}
        row = {**shared, **score_unit(unit, [n for n in names if n not in shared], dataset, batches, options)}
        if init != last_init:
            last_init, at_init = init, {k: v for k, v in row.items()
                                        if (p := _proxy_of(k)) and PROXIES[p].group != LINEARISED_GROUP}
        base = {"dataset": dataset.name, "family": unit["family"], "arch_id": unit["arch_id"],
                "variant": unit["variant"]}
        new = pd.DataFrame([{**base, **row}]).set_index(["arch_id", "variant"], drop=False)
        frame = new.combine_first(frame) if not frame.empty else new  # new values win, the others are kept
        tmp = out.with_suffix(".tmp")
        frame.sort_index().to_csv(tmp, index=False)
        os.replace(tmp, out)
        if i == len(todo) or todo[i][0]["arch_id"] != unit["arch_id"]:
            jax.clear_caches()  # each architecture compiles its own programs; keep the process's memory flat
        elapsed = time.perf_counter() - start
        print(f"[{i}/{len(todo)}] {unit['arch_id']} {unit['variant']} {row['seconds']:.1f}s "
              f"{len(names)} proxies {row.get('error', '')[:80]} (elapsed {elapsed / 60:.1f} min, "
              f"eta {elapsed / i * (len(todo) - i) / 60:.1f} min)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
