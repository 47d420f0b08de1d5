"""Exploratory sweep of the linearised-training proxies' setting on one ground-truth task.

Not part of the pre-registered rule (RULE.md fixes the linearised proxies at their released defaults): this
asks how much the setting matters. For each architecture (the first ``--first`` of each family in sampling
order, at the initialisation it was trained from) and each training-batch size N, one Lanczos decomposition
(:func:`ntksearch.linearise_kernel`, on a class-balanced batch of N training examples and 256 validation
examples, seed 0) gives every setting of the grid:

    η = lr_fraction · 2N/λ_max for lr_fraction ∈ {0.1, 0.5, 0.9};  t ∈ {10, 100, 1000};  ridge ∈ {1e-3, 1e-1}

(the ridge moves only the complexity). The decomposition stops when the default setting has settled, so
settings far from it (t = 1000) are approximations within the Krylov space reached. ``--report`` reads the
CSV, computes each quantity's Spearman ρ (in its expected direction) with the validation and the test accuracy
(seed means) for every (N, setting), chooses the best (quantity, N, setting) on **validation** accuracy and
reports its **test** ρ next to the parameter count's on the same rows. The choice and its judgement use the
same architectures (different labels, validation vs test), so this is an in-sample exploration, not a held-out
estimate. Usage::

    .venv/bin/python experiments/groundtruth/linearised_sweep.py --task digits --first 10
    .venv/bin/python experiments/groundtruth/linearised_sweep.py --task digits --report
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import selection
import tables
from build import _dataset, recipe
from proxies import units

from ntksearch.data import scoring_batch
from ntksearch.models import build_model
from ntksearch.ntk import linearise_kernel

LR_FRACTIONS, STEPS, RIDGES = (0.1, 0.5, 0.9), (10, 100, 1000), (1e-3, 1e-1)
QUANTITIES = {"train_loss": -1, "val_loss": -1, "val_accuracy": +1, "complexity": -1}  # expected directions
VAL_BATCH = 256


def sweep_unit(unit: dict, dataset, batches: dict[int, tuple], held_out: tuple) -> list[dict]:
    """Every (N, setting) of one architecture."""
    init_key, _ = jax.random.split(jax.random.key(0))
    built = build_model(unit["family"], unit["arch"], input_shape=dataset.input_shape,
                        n_classes=dataset.n_classes, key=init_key)
    rows = []
    for n, (x, y) in batches.items():
        start = time.perf_counter()
        kernel = linearise_kernel(built.apply_fn, built.params, x, y, *held_out, key=jax.random.key(1),
                                  max_matvecs=128, rtol=1e-2)
        seconds = time.perf_counter() - start
        for fraction, steps, ridge in itertools.product(LR_FRACTIONS, STEPS, RIDGES):
            eta = fraction * 2 * n / kernel.lambda_max
            m = kernel.metrics(eta, steps, ridge)
            rows.append({"arch_id": unit["arch_id"], "family": unit["family"], "n_train": n,
                         "lr_fraction": fraction, "steps": steps, "ridge": ridge,
                         **{q: float(m[q].value) for q in QUANTITIES},
                         "lanczos_steps": kernel.lanczos_steps, "seconds": round(seconds, 3)})
    return rows


def run(args: argparse.Namespace, out: Path) -> None:
    rec = recipe(args.task)
    dataset = _dataset(rec)
    sizes = [n for n in args.sizes if n <= len(dataset.y_train)]
    batches = {n: tuple(map(jnp.asarray, scoring_batch(dataset, n, seed=0))) for n in sizes}
    held_out = tuple(map(jnp.asarray, scoring_batch(dataset, VAL_BATCH, seed=0, split="val")))
    done = set(pd.read_csv(out).arch_id) if out.exists() else set()
    todo = [u for u in units(args.task, args.first) if u["arch_id"] not in done]
    for i, unit in enumerate(todo, 1):
        start = time.perf_counter()
        try:
            rows = sweep_unit(unit, dataset, batches, held_out)
        except Exception as exc:  # a failing architecture is reported, the sweep goes on
            print(f"{unit['arch_id']}: {type(exc).__name__}: {exc}", flush=True)
            continue
        frame = pd.DataFrame(rows)
        frame.to_csv(out, mode="a", header=not out.exists(), index=False)
        jax.clear_caches()
        print(f"[{i}/{len(todo)}] {unit['arch_id']} {time.perf_counter() - start:.1f}s", flush=True)


def report(task: str, out: Path) -> str:
    """The markdown summary of the sweep (module docstring)."""
    sweep = pd.read_csv(out)
    gt = tables.read_table(tables.HERE / f"{task}.csv")
    acc = gt.groupby("arch_id").agg(test=("test_accuracy", "mean"), val=("val_accuracy", "mean"),
                                    n_params=("n_params", "first")).reset_index()
    frame = sweep.merge(acc, on="arch_id")
    rows = []
    for (n, fraction, steps, ridge), part in frame.groupby(["n_train", "lr_fraction", "steps", "ridge"]):
        for q, sign in QUANTITIES.items():
            if q != "complexity" and ridge != RIDGES[0]:
                continue  # the ridge moves only the complexity
            x = sign * part[q].to_numpy(float)
            rows.append({"quantity": q, "n_train": n, "lr_fraction": fraction, "steps": steps, "ridge": ridge,
                         "rho_val": selection.spearman(x, part.val.to_numpy()),
                         "rho_test": selection.spearman(x, part.test.to_numpy()),
                         "rho_params_test": selection.spearman(np.log(part.n_params.to_numpy(float)),
                                                               part.test.to_numpy()),
                         "units": len(part)})
    table = pd.DataFrame(rows).sort_values("rho_val", ascending=False)
    best = table.iloc[0]
    default = table[(table.n_train == 64) & (table.lr_fraction == 0.5) & (table.steps == 100)
                    & (table.ridge == RIDGES[0])]
    counts = ", ".join(f"{f} {k}" for f, k in frame.groupby("family").arch_id.nunique().items())
    lines = [f"# Linearised proxies: setting sweep on `{task}` (exploratory, in-sample)", "",
             f"{frame.arch_id.nunique()} architectures ({counts}); "
             "ρ is Spearman's with the seed-mean accuracy, each quantity read in its expected direction; "
             "n_params: the parameter count's test ρ on the same rows. Generated by `linearised_sweep.py --report`.",
             "", f"**Chosen on validation accuracy:** `{best.quantity}` at N = {best.n_train}, lr_fraction "
             f"{best.lr_fraction}, t = {best.steps}, ridge {best.ridge}: validation ρ {best.rho_val:+.3f}, test ρ "
             f"{best.rho_test:+.3f} against {best.rho_params_test:+.3f} for the parameter count.", "",
             "The released default setting (N = 64, lr_fraction 0.5, t = 100, ridge 1e-3):", "",
             "| quantity | ρ val | ρ test | ρ n_params test |", "|---|---|---|---|"]
    lines += [f"| {r.quantity} | {r.rho_val:+.3f} | {r.rho_test:+.3f} | {r.rho_params_test:+.3f} |"
              for r in default.itertuples()]
    lines += ["", "The ten best settings on validation accuracy:", "",
              "| quantity | N | lr_fraction | t | ridge | ρ val | ρ test | ρ n_params test |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.quantity} | {r.n_train} | {r.lr_fraction} | {r.steps} | {r.ridge:g} | {r.rho_val:+.3f} | "
              f"{r.rho_test:+.3f} | {r.rho_params_test:+.3f} |" for r in table.head(10).itertuples()]
    by_n = table.groupby(["quantity", "n_train"]).rho_test.max().unstack()
    lines += ["", "Best test ρ over the (η, t, ridge) grid, per quantity and training-batch size (an upper bound "
              "no selection reaches):", "", "| quantity | " + " | ".join(f"N = {n}" for n in by_n.columns) + " |",
              "|---|" + "---|" * len(by_n.columns)]
    lines += [f"| {q} | " + " | ".join(f"{v:+.3f}" for v in row) + " |" for q, row in by_n.iterrows()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="digits", choices=[t for t in tables.TASKS if t != "digits_hp"])
    parser.add_argument("--first", type=int, default=10, help="architectures of each family")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[64, 256])
    parser.add_argument("--report", action="store_true", help="summarise the CSV instead of computing")
    args = parser.parse_args(argv)
    out = tables.HERE / f"linearised_sweep_{args.task}.csv"
    if args.report:
        text = report(args.task, out)
        (tables.HERE / f"LINEARISED_SWEEP_{args.task}.md").write_text(text)
        print(text)
    else:
        run(args, out)


if __name__ == "__main__":
    main()
