"""Linearised training, matrix-free (Lanczos) against the dense computation, measured in one run.

Models: the three models of ``benchmarks/ntk_estimators.py`` (its builders, with the batch size varied), read
out as 10 class logits, since the linearised quantities are defined on logits:

* ``mlp``: the paper's deep MLP (784 → 64, then 14 × [ReLU, 64 → 64]); logits: its first 10 outputs;
  Fashion-MNIST images (A: the first N training images, B: the next M) with their labels.
* ``cnn``: the 3-conv CNN and its 10 logits; data as for the MLP.
* ``gru``: the paper's GRU (10 → 64) over 50 steps; logits: the first 10 hidden units at the last step;
  Gaussian inputs, labels i mod 10.

For each model and training-batch size N (C = 10 outputs each, a held-out batch of M = 256), at the default
setting (``learning_rate="auto"``, 100 steps, ridge 1e-3), float32 as a search runs it:

* **Lanczos**: ``linearise_kernel`` + ``.metrics()`` (= ``linearised_metrics``) at rtol 1e-3 (a measurement's
  tolerance; a search's default is 1e-2), at most 128 Lanczos steps, blocks of 2 rows, timed on the second call
  (the first one's extra time is compilation).
* **Dense**: K_AA (NC × NC) and K_BA (MC × NC) built 64 columns at a time (J_AᵀE by VJPs, then J_A(J_AᵀE) and
  J_B(J_AᵀE) by JVPs: 3·NC AD passes), then the eigendecomposition of K_AA and the closed forms
  (:func:`ntksearch.ntk.exact.dense_linearised_metrics`, float64). Above ``--dense-max-n`` outputs or
  ``--dense-seconds`` of building, the build is timed on its first blocks and scaled linearly, the
  eigendecomposition is timed at n = 2,048 and scaled by n³, and the reference values come from a long Lanczos
  run instead (rtol 1e-7, up to ``--reference-steps`` steps; its own error indicators are in the JSON); the
  table marks these rows.
* **Grid**: 100 (η, t, ρ) settings evaluated from the one decomposition (``LinearisedKernel.metrics``).

Errors are |Lanczos − reference| / |reference|; for the accuracy, the absolute difference. "Within indicators":
every difference ≤ the Lanczos error indicator + what rounding in the products alone explains
(:func:`rounding_floors`: the products are float32 on both sides, and at a small ridge the complexity amplifies
their rounding by λ_max/ρ). ``--float64`` runs everything in float64 instead.

Usage::

    python benchmarks/linearised.py                        # N = 64, 256, 1024 for mlp, cnn, gru
    python benchmarks/linearised.py --sizes 64 --quick     # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ntk_estimators import DATA_NOTES, fashion_images, gru_apply, make_cnn, make_gru, make_mlp, mlp_apply

from ntksearch.ntk import NTKOperator, jvp_batch, linearise_kernel, vjp_batch
from ntksearch.ntk.exact import dense_linearised_metrics

VAL = 256
CLASSES = 10
QUANTITIES = ("train_loss", "val_loss", "val_accuracy", "complexity")
EIGH_TIMED_AT = 2048


def mlp_logits(params: list[dict], x: jax.Array) -> jax.Array:
    return mlp_apply(params, x)[:, :CLASSES]


def gru_logits(params: dict, x: jax.Array) -> jax.Array:
    return gru_apply(params, x)[:, -1, :CLASSES]


def problem(name: str, n_train: int) -> tuple:
    """(apply_fn, params, x_A, Y_A one-hot, x_B, y_B labels) from the estimator benchmark's builders, inputs and
    targets in the parameters' dtype (float64 with ``--float64``)."""
    total = n_train + VAL
    if name == "gru":
        _, params, x, _ = make_gru(total)
        labels = np.arange(total) % CLASSES
        apply_fn = gru_logits
    else:
        apply_fn, params, x, _ = make_mlp(total) if name == "mlp" else make_cnn(total)
        apply_fn = mlp_logits if name == "mlp" else apply_fn
        labels = np.argmax(np.asarray(fashion_images(total)[1]), axis=1)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    x, onehot = jnp.asarray(x, dtype), jnp.asarray(np.eye(CLASSES)[labels[:n_train]], dtype)
    return apply_fn, params, x[:n_train], onehot, x[n_train:], labels[n_train:]


def dense_products(apply_fn, params, x_a, x_b, n: int, *, max_seconds: float, complete: bool, block: int = 64):
    """(seconds, K_AA, K_BA) by 64 basis vectors at a time; (scaled seconds, None, None) when not ``complete`` or
    slower than ``max_seconds`` (timed on the first blocks, at least two)."""
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    eye_rows = lambda i: jax.nn.one_hot(jnp.arange(i, i + block), n, dtype=dtype)  # rows past n are zero

    def columns(i: int) -> tuple[np.ndarray, np.ndarray]:
        images = vjp_batch(apply_fn, params, x_a, eye_rows(i))
        return (np.asarray(jvp_batch(apply_fn, params, x_a, images)),
                np.asarray(jvp_batch(apply_fn, params, x_b, images)))

    columns(0)  # compile outside the timing
    n_blocks = -(-n // block)
    kernel = cross = None
    start = time.perf_counter()
    for b in range(n_blocks):
        k_a, k_b = columns(b * block)
        count = min(block, n - b * block)
        if complete:
            if kernel is None:
                kernel, cross = np.zeros((n, n)), np.zeros((k_b.shape[1], n))
            kernel[:, b * block: b * block + count] = k_a[:count].T
            cross[:, b * block: b * block + count] = k_b[:count].T
        elapsed = time.perf_counter() - start
        if b + 1 < n_blocks and b >= 1 and (not complete or elapsed > max_seconds):
            return elapsed * n_blocks / (b + 1), None, None
    return time.perf_counter() - start, kernel, cross


def eigh_seconds(n: int) -> float:
    """Seconds of a float64 eigendecomposition of an n × n PSD matrix: timed at min(n, 2048), scaled by n³."""
    m = min(n, EIGH_TIMED_AT)
    a = np.random.default_rng(0).standard_normal((m, m))
    start = time.perf_counter()
    np.linalg.eigh(a @ a.T)
    return (time.perf_counter() - start) * (n / m) ** 3


def rounding_floors(got, dtype) -> dict[str, float]:
    """Relative differences that rounding in the products alone explains: ε for the losses (ε = 1e-5 in float32,
    1e-12 in float64, a few hundred units of rounding), ε·λ_max/ρ for the complexity (the condition number of
    K_AA + ρI amplifies the products' rounding), 0 for the accuracy (its indicator counts flips)."""
    eps = 1e-5 if np.dtype(dtype) == np.float32 else 1e-12
    return {"train_loss": eps, "val_loss": eps, "val_accuracy": 0.0, "complexity": eps * got.lambda_max / got.ridge}


def lanczos(apply_fn, params, x_a, y_a, x_b, y_b, rtol=1e-3, **kwargs) -> tuple[float, object, object]:
    start = time.perf_counter()
    kernel = linearise_kernel(apply_fn, params, x_a, y_a, x_b, y_b, key=jax.random.PRNGKey(0), rtol=rtol, **kwargs)
    metrics = kernel.metrics()
    return time.perf_counter() - start, kernel, metrics


def run(name: str, n_train: int, args: argparse.Namespace) -> dict:
    apply_fn, params, x_a, y_a, x_b, y_b = problem(name, n_train)
    op = NTKOperator.create(apply_fn, params, x_a)
    print(f"\n## {name}, N = {n_train}: NC = {op.n:,}, p = {op.p:,}", flush=True)
    cold, _, _ = lanczos(apply_fn, params, x_a, y_a, x_b, y_b)
    seconds, kernel, got = lanczos(apply_fn, params, x_a, y_a, x_b, y_b)
    est = got["train_loss"]
    print(f"Lanczos: {seconds:.2f} s ({got.lanczos_steps} steps, {est.matvecs} AD passes; "
          f"compile {cold - seconds:.1f} s)", flush=True)
    start = time.perf_counter()
    settings = [(rate * kernel.n_examples / kernel.lambda_max, steps, ridge) for rate in (0.1, 0.5, 1.0, 1.5, 1.9)
                for steps in (10, 100, 1000, 10_000) for ridge in (1e-3, 1e-2, 1e-1, 1.0, 10.0)]
    for rate, steps, ridge in settings:
        kernel.metrics(rate, steps, ridge)
    grid_ms = 1e3 * (time.perf_counter() - start) / len(settings)

    complete = op.n <= args.dense_max_n
    build, k_aa, k_ba = dense_products(apply_fn, params, x_a, x_b, op.n, max_seconds=args.dense_seconds,
                                       complete=complete)
    if k_aa is not None:
        start = time.perf_counter()
        residual = np.asarray(y_a, np.float64) - np.asarray(apply_fn(params, x_a), np.float64)
        ref = dense_linearised_metrics(k_aa, residual, k_ba, np.asarray(apply_fn(params, x_b), np.float64), y_b)
        dense_seconds, reference = build + time.perf_counter() - start, "dense"
    else:
        dense_seconds, reference = build + eigh_seconds(op.n), "Lanczos (rtol 1e-7)"
        _, _, long = lanczos(apply_fn, params, x_a, y_a, x_b, y_b, rtol=1e-7,
                                       max_matvecs=args.reference_steps)
        ref = {q: e.value for q, e in long.items()} | {"lambda_max": long.lambda_max,
                                                        "indicators": {q: e.stderr for q, e in long.items()},
                                                        "steps": long.lanczos_steps}
    errors = {q: abs(got[q].value - ref[q]) / (1 if q == "val_accuracy" else abs(ref[q])) for q in QUANTITIES}
    floors = rounding_floors(got, x_a.dtype)
    within = {q: abs(got[q].value - ref[q]) <= got[q].stderr + floors[q] * abs(ref[q]) for q in QUANTITIES}
    print(f"dense ({reference}): {dense_seconds:.1f} s" + ("" if k_aa is not None else " (scaled)") + "; errors "
          + ", ".join(f"{q} {e:.1e}" for q, e in errors.items()), flush=True)
    return {"model": name, "n_train": n_train, "n": op.n, "p": op.p, "val": VAL, "lanczos_seconds": seconds,
            "compile_seconds": cold - seconds, "lanczos_steps": got.lanczos_steps, "lanczos_passes": est.matvecs,
            "grid_ms_per_setting": grid_ms, "dense_seconds": dense_seconds, "dense_passes": 3 * op.n,
            "dense_complete": k_aa is not None, "reference": reference,
            "values": {q: got[q].value for q in QUANTITIES}, "indicators": {q: got[q].stderr for q in QUANTITIES},
            "reference_values": {k: v for k, v in ref.items() if k in (*QUANTITIES, "indicators", "steps")},
            "errors": errors, "within_indicator": within,
            "lambda_max": got.lambda_max, "lambda_max_reference": ref["lambda_max"], "rho": got.ridge,
            "rounding_floors": floors, "dtype": str(x_a.dtype),
            "trace_relative_stderr": kernel.trace_stderr / kernel.trace}


def markdown(results: list[dict]) -> str:
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {jax.device_count()} × {jax.devices()[0].platform}, "
        f"jax {jax.__version__}; {results[0]['dtype']} models, float64 host algebra; held-out batch M = {VAL}; "
        "default setting (learning_rate auto = N/λ_max, 100 steps, ridge 1e-3); Lanczos at rtol 1e-3, "
        "≤ 128 steps.",
        "",
        "| model | N | NC | p | Lanczos steps | AD passes | time (s) | dense AD passes | dense time (s) "
        "| × passes | × time | max rel. error (losses, complexity) | accuracy diff. | within indicators | "
        "grid (ms / setting) | compile (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mark = "" if r["dense_complete"] else "*"
        worst = max(r["errors"][q] for q in ("train_loss", "val_loss", "complexity"))
        within = "yes" if all(r["within_indicator"].values()) else "no"
        lines.append(
            f"| {r['model']} | {r['n_train']} | {r['n']:,} | {r['p']:,} | {r['lanczos_steps']} "
            f"| {r['lanczos_passes']:,} | {r['lanczos_seconds']:.2f} | {r['dense_passes']:,} "
            f"| {r['dense_seconds']:.1f}{mark} | {r['dense_passes'] / r['lanczos_passes']:.0f} "
            f"| {r['dense_seconds'] / r['lanczos_seconds']:.0f} | {worst:.1e} | {r['errors']['val_accuracy']:.3f} "
            f"| {within} | {r['grid_ms_per_setting']:.1f} | {r['compile_seconds']:.1f} |")
    if any(not r["dense_complete"] for r in results):
        lines += ["", "*Dense time extrapolated (build timed on its first blocks and scaled linearly, "
                  f"eigendecomposition timed at n = {EIGH_TIMED_AT:,} and scaled by n³); errors there are against a "
                  "long Lanczos run."]
    dense = [r for r in results if r["dense_complete"]]
    if dense:
        errors = [f"{r['model']} N={r['n_train']}: {abs(r['lambda_max'] / r['lambda_max_reference'] - 1):.1e}"
                  for r in dense]
        lines += ["", "λ_max (the top Ritz value) against the dense eigendecomposition, relative: " + "; ".join(errors)]
    lines += DATA_NOTES
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp,cnn,gru")
    parser.add_argument("--sizes", default="64,256,1024", help="training-batch sizes N")
    parser.add_argument("--dense-max-n", type=int, default=4096, help="largest NC for which K_AA is formed")
    parser.add_argument("--dense-seconds", type=float, default=120.0)
    parser.add_argument("--reference-steps", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="N = 64 only, dense capped at 20 s")
    parser.add_argument("--float64", action="store_true", help="models and products in float64")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.dense_seconds = "64", 20.0
    jax.config.update("jax_enable_x64", args.float64)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ("_quick" if args.quick else "") + ("_float64" if args.float64 else "")
    results = []
    for n in args.sizes.split(","):
        for model in args.models.split(","):
            results.append(run(model, int(n), args))
            (out / f"linearised{suffix}.json").write_text(json.dumps(results, indent=1, default=float))
    text = markdown(results)
    print("\n" + text)
    (out / f"linearised{suffix}.md").write_text(text)


if __name__ == "__main__":
    main()
