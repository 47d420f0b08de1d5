"""Compute every registered proxy for the ground-truth architectures, at the initialisation they were trained from.

For architecture ``<family>-<i>`` (the same sample as ``build.py``) the model is built with seed 0's
initialisation key (``jax.random.split(jax.random.key(0))[0]``, exactly as ``build.py`` trains seed 0) and
scored on one class-balanced batch of the recipe's training subset (``scoring_batch(dataset, --batch,
seed=0)``). The NTK quantities are estimated by Hutch++ (48-column sketch) to a relative standard error of
1% (budget 1,024 passes), far below the spread between architectures and cheaper than the exact 2·min(n, p)
= 1,280 passes, which cost minutes per CNN here; λ_max by up to 30 Lanczos steps (single-vector Lanczos when the
tables were built; today's block-Krylov ``lambda_max`` reproduces those values within their residual bounds).
The linearised-training proxies (``lin_*``, ``ntk_complexity``) run at ``LinearisedOptions``' defaults with a
class-balanced held-out batch of ``--val-batch`` examples of the recipe's validation split (seed 0). One CSV row
per architecture (resumable, flushed row by row): every proxy's value and standard error, seconds per proxy
group, and the error of a candidate that failed to build or score.

Usage::

    .venv/bin/python experiments/groundtruth/proxies.py --dataset fashion_mnist \
        --out experiments/groundtruth/proxies_fashion_mnist.csv --n-mlp 140 --n-cnn 63 --n-rnn 64
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import _dataset, recipe, sample_architectures

from ntksearch.data import scoring_batch
from ntksearch.models import build_model
from ntksearch.proxies import PROXIES, NTKOptions, ProxyInputs, compute_proxies

NTK = NTKOptions(method="hutch++", rtol=0.01, max_matvecs=1024, sketch_size=48, lanczos_iters=30)
FIELDS = (["dataset", "family", "arch_id", "error", "seconds"]
          + [f"{name}{suffix}" for name in PROXIES for suffix in ("", "_stderr")])


def score_architecture(arch: dict, dataset, x: jax.Array, y: jax.Array, held_out: tuple[jax.Array, jax.Array]
                       ) -> dict:
    """All proxies of one architecture (errors are recorded, not raised); ``held_out``: (x_val, y_val one-hot)."""
    row = {"dataset": dataset.name, "family": arch["family"], "arch_id": arch["arch_id"], "error": ""}
    start = time.perf_counter()
    try:
        init_key, _ = jax.random.split(jax.random.key(0))
        built = build_model(arch["family"], arch["arch"], input_shape=dataset.input_shape,
                            n_classes=dataset.n_classes, key=init_key)
        inputs = ProxyInputs.from_model(built, x, y, key=jax.random.key(1), ntk=NTK, x_val=held_out[0],
                                        y_val=held_out[1])
        result = compute_proxies(list(PROXIES), inputs)
        for name, value in result.values.items():
            row[name], row[f"{name}_stderr"] = value.value, value.stderr
    except Exception as exc:  # a failing candidate is a data point, not a crash
        row["error"] = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=("fashion_mnist", "digits"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-mlp", type=int, default=110)
    parser.add_argument("--n-cnn", type=int, default=100)
    parser.add_argument("--n-rnn", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--val-batch", type=int, default=256)
    args = parser.parse_args()

    dataset = _dataset(recipe(args.dataset))
    x, y = (jnp.asarray(a) for a in scoring_batch(dataset, args.batch, seed=0))
    held_out = tuple(jnp.asarray(a) for a in scoring_batch(dataset, args.val_batch, seed=0, split="val"))
    archs = [a for fam, n in (("mlp", args.n_mlp), ("cnn", args.n_cnn), ("rnn", args.n_rnn))
             for a in sample_architectures(fam, n)]
    done = set()
    if args.out.exists():
        with args.out.open() as fh:
            done = {row["arch_id"] for row in csv.DictReader(fh)}
    todo = [a for a in archs if a["arch_id"] not in done]
    print(f"{len(done)} done, {len(todo)} to score", flush=True)
    new = not args.out.exists()
    start = time.perf_counter()
    with args.out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        if new:
            writer.writeheader()
        for i, arch in enumerate(todo, 1):
            row = score_architecture(arch, dataset, x, y, held_out)
            writer.writerow(row)
            fh.flush()
            jax.clear_caches()  # each architecture compiles its own programs; keep the process's memory flat
            elapsed = time.perf_counter() - start
            print(f"[{i}/{len(todo)}] {arch['arch_id']} {row['seconds']:.1f}s {row['error'][:60]} "
                  f"(elapsed {elapsed / 60:.1f} min, eta {elapsed / i * (len(todo) - i) / 60:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
