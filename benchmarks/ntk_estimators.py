"""Accuracy and time of the matrix-free NTK estimators against exact paths, all measured in one run.

Models (float32, as a search runs them):

* ``mlp``: the paper's deep MLP, Linear(784→64) then 14 × [ReLU, Linear(64→64)], on a batch of 50
  Fashion-MNIST images; the state is the 64-d output: n = 3,200, p = 108,480.
* ``gru``: the paper's GRU(10→64) over 50 steps × batch 15 of Gaussian inputs; the state is the whole hidden
  trajectory: n = 48,000, p = 14,592.
* ``cnn``: conv3×3(16)-ReLU-conv3×3/2(32)-ReLU-conv3×3/2(32)-ReLU-mean-pool-Linear(10) on 32 Fashion-MNIST
  images; the state is the logits (n = 320, p = 14,410) and y the one-hot labels (label alignment).

Baselines, timed in the same run:

* **Direct** (the paper's exact baseline): K eᵢ for all n basis vectors (n VJPs + n JVPs), giving
  tr K = Σ Kᵢᵢ and ‖K‖²_F = Σ ‖K eᵢ‖². When it would take longer than ``--direct-seconds`` it is timed on its
  first blocks and scaled linearly (every block costs the same); the output says so.
* **Cheapest exact**: ``ntk_metrics(method="exact")`` on the smaller side (d = min(n, p)): d one-sided
  passes give tr K = Σ‖M eᵢ‖², d more of the other mode give tr K² = Σ‖A eᵢ‖² (A = K or JᵀJ), streamed
  without storing J. Its values are the reference for the errors.

Each estimator runs at each budget (AD passes, ``rtol=0`` so the whole budget is spent) for ``--seeds``
seeds; times exclude the first (compiling) call of each configuration. A method's larger budgets are skipped
once one estimate takes longer than ``--max-config-seconds`` (the one-sided estimators' cross term costs
O(q·m·D) host flops for q ≈ budget/6 deflation directions and m probes in a D-dimensional image space, so
their cost grows quadratically with the budget). Relative errors are
|estimate − exact| / exact.

Every timing here is of warm programs compiled with XLA's default optimisation (``compile_mode="optimised"``;
level-0 programs, :mod:`ntksearch.ntk.compile`, compile faster and run 2–10× longer).

**Side by side with neural-tangents.** ntksearch's ``ntk_metrics(..., rtol=0.01, max_matvecs=1024)``
(``method="auto"``; warm median over ``--seeds`` keys) against neural-tangents' three exact implementations
(JACOBIAN_CONTRACTION, NTK_VECTOR_PRODUCTS, STRUCTURED_DERIVATIVES), each with ``trace_axes=()`` (the full
n × n kernel, what ntksearch estimates) and ``(-1,)`` (its default, averaged over the logits: a B × B
kernel). neural-tangents 0.6.5, its last release, runs all three only on jax 0.4.25 with TensorFlow, so it
runs in a child process (``neural_tangents_child.py``) in its own virtual environment, which this script
creates from PyPI on first use (``NT_REQUIREMENTS``, ≈ 1 GB, under ``--nt-venv``); the inputs and weights go
to the child in an .npz file and the child rebuilds the same model from ``ntk_models.py``. Its times are warm
medians of ``--nt-reps`` calls of the jit-compiled kernel function. Models whose full kernel would have more
than ``--nt-max-n``² entries (the GRU: 48,000²) are not given to neural-tangents. The two jax versions
differ: some workloads run slower on the old one, so these ratios compare the libraries as a user installs
them, not the algorithms alone.

Usage::

    python benchmarks/ntk_estimators.py                     # full run (≈ 40 min on 2 cores)
    python benchmarks/ntk_estimators.py --quick             # smoke run (≈ 2 min)
    python benchmarks/ntk_estimators.py --models cnn,mlp --side-by-side-only   # ntksearch vs neural-tangents
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ntk_models import MLP_LAYERS, PARAM_TEMPLATES, cnn_apply, gru_apply, mlp_apply

from ntksearch.data import DatasetNotFoundError, load_dataset
from ntksearch.ntk import NTKOperator, kvp_batch, ntk_metrics

METHODS = ("hutchinson", "reverse", "forward", "hutch++")
QUANTITIES = ("trace", "frobenius", "effective_rank", "label_alignment")


# ----------------------------------------------------------------------------------------------------------
# Models (pure JAX)


def _uniform(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    bound = 1.0 / np.sqrt(fan_in)
    return jax.random.uniform(key, shape, minval=-bound, maxval=bound)


def make_mlp(batch: int = 50) -> tuple[Callable, object, jax.Array, None]:
    keys = jax.random.split(jax.random.PRNGKey(0), MLP_LAYERS)
    sizes = [784] + [64] * MLP_LAYERS
    params = [
        {"w": _uniform(k, (a, b), a), "b": _uniform(jax.random.fold_in(k, 1), (b,), a)}
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]
    return mlp_apply, params, fashion_images(batch)[0], None


def make_gru(batch: int = 15) -> tuple[Callable, object, jax.Array, None]:
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    hid, feat = 64, 10
    params = {
        "wi": _uniform(k[0], (feat, 3 * hid), hid),
        "wh": _uniform(k[1], (hid, 3 * hid), hid),
        "bi": _uniform(k[2], (3 * hid,), hid),
        "bh": _uniform(k[3], (3 * hid,), hid),
    }
    return gru_apply, params, jax.random.normal(k[4], (batch, 50, feat)), None


def make_cnn(batch: int = 32) -> tuple[Callable, object, jax.Array, jax.Array]:
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    chans = [(1, 16), (16, 32), (32, 32)]
    convs = [_uniform(ki, (3, 3, a, b), 9 * a) for ki, (a, b) in zip(k[:3], chans, strict=True)]
    params = {"convs": convs, "head": {"w": _uniform(k[3], (32, 10), 32), "b": jnp.zeros(10)}}
    return cnn_apply, params, *fashion_images(batch)


MODELS = {"mlp": make_mlp, "gru": make_gru, "cnn": make_cnn}
DATA_NOTES: list[str] = []


def fashion_images(count: int) -> tuple[jax.Array, jax.Array]:
    """The first ``count`` Fashion-MNIST training images and one-hot labels; uniform noise of the same shape
    (noted in the output) where the Debian package is not installed, e.g. on a bare GPU machine."""
    try:
        data = load_dataset("fashion_mnist")
        return jnp.asarray(data.x_train[:count]), jax.nn.one_hot(data.y_train[:count], 10)
    except DatasetNotFoundError:
        note = "Fashion-MNIST not installed here: mlp/cnn inputs are uniform noise of the same shape"
        if note not in DATA_NOTES:
            DATA_NOTES.append(note)
        key = jax.random.PRNGKey(123)
        return jax.random.uniform(key, (count, 28, 28, 1)), jax.nn.one_hot(jnp.arange(count) % 10, 10)


# ----------------------------------------------------------------------------------------------------------
# Baselines


def direct(
    apply_fn: Callable, params: object, x: jax.Array, n: int, *, block: int, max_seconds: float
) -> tuple[float, float | None, float | None, str]:
    """The paper's Direct method: K eᵢ for every basis vector. Returns (seconds, tr K, ‖K‖_F, note)."""
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    eye_rows = lambda i: jax.nn.one_hot(jnp.arange(i, i + block), n, dtype=dtype)
    kvp_batch(apply_fn, params, x, eye_rows(0)).block_until_ready()  # compile outside the timing
    trace = fro2 = 0.0
    n_blocks = -(-n // block)
    start = time.perf_counter()
    for b in range(n_blocks):
        cols = kvp_batch(apply_fn, params, x, eye_rows(b * block))  # rows of K (K is symmetric)
        idx = jnp.arange(b * block, b * block + block)
        valid = idx < n
        trace += float(jnp.sum(jnp.where(valid, cols[jnp.arange(block), jnp.minimum(idx, n - 1)], 0.0)))
        fro2 += float(jnp.sum(jnp.where(valid[:, None], cols, 0.0) ** 2))
        elapsed = time.perf_counter() - start
        if elapsed > max_seconds and b + 1 < n_blocks:
            scaled = elapsed * n_blocks / (b + 1)
            return scaled, None, None, f"timed on {b + 1} of {n_blocks} blocks of {block}, scaled linearly"
    return time.perf_counter() - start, trace, float(np.sqrt(fro2)), "complete"


NT_REQUIREMENTS = ("jax==0.4.25", "jaxlib==0.4.25", "numpy<2", "neural-tangents==0.6.5", "tensorflow-cpu", "tf2jax")
NT_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ntksearch" / "neural-tangents-0.6.5"
NT_CHILD = Path(__file__).resolve().parent / "neural_tangents_child.py"
NT_IMPLEMENTATIONS = ("JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS", "STRUCTURED_DERIVATIVES")


def neural_tangents_python(venv: Path) -> tuple[Path | None, str]:
    """The Python of a virtual environment holding ``NT_REQUIREMENTS``, created from PyPI when missing (about
    1 GB: TensorFlow is a hard dependency of neural-tangents 0.6.5). Returns (python, note) or (None, why not)."""
    python, marker = venv / "bin" / "python", venv / "ntksearch-requirements.txt"
    wanted = "\n".join(NT_REQUIREMENTS)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python, f"reused {venv}"
    steps = [[sys.executable, "-m", "venv", str(venv)], [str(python), "-m", "pip", "install", "-q", *NT_REQUIREMENTS]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, f"could not build {venv} (`{' '.join(step[:4])} …` failed): {' / '.join(tail)}"
    marker.write_text(wanted)
    return python, f"created {venv} from PyPI"


def time_neural_tangents(name: str, params: object, x: jax.Array, python: Path, folder: Path, *, reps: int,
                         trace_axes: str, implementations: str, timeout: float) -> list[dict]:
    """neural-tangents' rows (one per implementation and trace_axes) on the same weights and inputs, saved to
    ``folder/{name}.npz`` and timed in a child process (:mod:`neural_tangents_child`)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    assert tree == jax.tree_util.tree_structure(PARAM_TEMPLATES[name]), (tree, name)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = folder / f"{name}.npz"
    np.savez(arrays, name=name, x=np.asarray(x), **{f"leaf_{i:04d}": np.asarray(a) for i, a in enumerate(leaves)})
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        command = [str(python), str(NT_CHILD), str(arrays), "--reps", str(reps), "--trace-axes", trace_axes,
                   "--implementations", implementations]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"error": f"neural-tangents child timed out after {timeout:g} s"}]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode:
        rows.append({"error": f"child exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"})
    return rows


# ----------------------------------------------------------------------------------------------------------
# The sweep


def run_model(name: str, args: argparse.Namespace) -> dict:
    apply_fn, params, x, y = MODELS[name]()
    op = NTKOperator.create(apply_fn, params, x)
    print(f"\n## {name}: n = {op.n:,}, p = {op.p:,}", flush=True)
    big = 2 * min(op.n, op.p) + 8
    for _ in range(2):  # the first call compiles; time the second
        start = time.perf_counter()
        exact = ntk_metrics(apply_fn, params, x, y, key=jax.random.PRNGKey(0), method="exact", max_matvecs=big,
                            compile_mode="optimised")
    t_exact = time.perf_counter() - start
    ref = {q: e.value for q, e in exact.items()}
    print(
        f"cheapest exact: {t_exact:.2f} s ({2 * min(op.n, op.p):,} passes); "
        + ", ".join(f"{q} = {v:.6g}" for q, v in ref.items()),
        flush=True,
    )
    side_by_side = time_side_by_side(name, apply_fn, params, x, y, ref, op.n, args)
    if args.side_by_side_only:
        return {"model": name, "n": op.n, "p": op.p, "t_exact": t_exact, "reference": ref, "rows": [],
                **side_by_side}
    t_direct, d_tr, d_fro, note = direct(
        apply_fn, params, x, op.n, block=args.direct_block, max_seconds=args.direct_seconds
    )
    if d_tr is not None:
        assert abs(d_tr - ref["trace"]) <= 1e-3 * ref["trace"], (d_tr, ref["trace"])
        assert abs(d_fro - ref["frobenius"]) <= 1e-3 * ref["frobenius"], (d_fro, ref["frobenius"])
    print(f"Direct: {t_direct:.2f} s ({note})", flush=True)

    rows = []
    for method in args.methods:
        for budget in args.budgets:
            kw = dict(method=method, rtol=0.0, max_matvecs=budget, compile_mode="optimised")
            try:
                ntk_metrics(apply_fn, params, x, y, key=jax.random.PRNGKey(10_000), **kw)  # compile
            except ValueError as exc:  # budget below the method's minimum
                print(f"  {method:>10} {budget:>6}: skipped ({exc})")
                continue
            errs: dict[str, list[float]] = {q: [] for q in QUANTITIES if q in ref}
            times = []
            for seed in range(args.seeds):
                start = time.perf_counter()
                est = ntk_metrics(apply_fn, params, x, y, key=jax.random.PRNGKey(seed), **kw)
                times.append(time.perf_counter() - start)
                for q in errs:
                    errs[q].append(abs(est[q].value - ref[q]) / abs(ref[q]))
            row = {
                "method": method,
                "budget": budget,
                "time": float(np.median(times)),
                "matvecs": est["trace"].matvecs,
                **{f"err_{q}": float(np.median(v)) for q, v in errs.items()},
            }
            rows.append(row)
            print(
                f"  {method:>10} {budget:>6}: {row['time']:.3f} s  "
                + "  ".join(f"{q}={row['err_' + q]:.2e}" for q in errs),
                flush=True,
            )
            if row["time"] > args.max_config_seconds:
                print(f"  {method:>10}: larger budgets skipped (this one took {row['time']:.1f} s per estimate, "
                      f"> --max-config-seconds {args.max_config_seconds:g})", flush=True)
                break
    return {
        "model": name,
        "n": op.n,
        "p": op.p,
        "t_exact": t_exact,
        "t_direct": t_direct,
        "direct_note": note,
        "reference": ref,
        "rows": rows,
        **side_by_side,
    }


def time_side_by_side(name: str, apply_fn: Callable, params: object, x: jax.Array, y: jax.Array | None,
                      ref: dict[str, float], n: int, args: argparse.Namespace) -> dict:
    """ntksearch at rtol 0.01 (``method="auto"``, 1024 AD passes at most; warm median over ``--seeds`` keys) and
    neural-tangents' three implementations on the same arrays (warm medians, in its own environment)."""
    times = []
    for seed in range(-1, args.seeds):  # seed -1 compiles
        start = time.perf_counter()
        est = ntk_metrics(apply_fn, params, x, y, key=jax.random.PRNGKey(10_000 + seed), rtol=0.01,
                          max_matvecs=1024, compile_mode="optimised")
        times.append(time.perf_counter() - start)
    rtol = {"time": float(np.median(times[1:])), "method": est["trace"].method, "matvecs": est["trace"].matvecs,
            "err_trace": abs(est["trace"].value - ref["trace"]) / ref["trace"]}
    print(f"ntksearch rtol 0.01: {rtol['time']:.3f} s ({rtol['method']}, {rtol['matvecs']} passes)", flush=True)
    if not args.nt:
        return {"rtol": rtol, "nt": [], "nt_note": "neural-tangents not timed (--no-nt)"}
    if n > args.nt_max_n:
        return {"rtol": rtol, "nt": [], "nt_note": f"neural-tangents not timed on {name}: its full kernel has n² = "
                f"{n * n:.2g} entries (> --nt-max-n {args.nt_max_n}²)"}
    python, note = neural_tangents_python(Path(args.nt_venv))
    if python is None:
        return {"rtol": rtol, "nt": [], "nt_note": note}
    rows = time_neural_tangents(name, params, x, python, Path(args.out) / "arrays", reps=args.nt_reps,
                                trace_axes=args.nt_trace_axes, implementations=args.nt_implementations,
                                timeout=args.nt_timeout)
    for row in rows:
        print("  neural-tangents", json.dumps(row), flush=True)
    return {"rtol": rtol, "nt": rows, "nt_note": note}


def time_to(result: dict, quantity: str, tol: float) -> tuple[float, str] | None:
    """Fastest (median time) configuration whose median relative error is ≤ tol."""
    ok = [r for r in result["rows"] if r.get(f"err_{quantity}", np.inf) <= tol]
    if not ok:
        return None
    best = min(ok, key=lambda r: r["time"])
    return best["time"], f"{best['method']} @ {best['budget']}"


def side_by_side_markdown(results: list[dict]) -> list[str]:
    """The ntksearch-vs-neural-tangents table: warm medians and ntksearch's speed-up over each."""
    lines = [
        "### ntksearch (rtol 0.01) and neural-tangents' exact empirical NTK, same arrays",
        "",
        "| model | n | p | ntksearch rtol 0.01 (s) | method | NT implementation | trace_axes | NT (s) "
        "| NT time / ntksearch time | NT tr K / exact |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    versions = {}
    for res in results:
        rt = res["rtol"]
        head = f"| {res['model']} | {res['n']:,} | {res['p']:,} | {rt['time']:.3f} | {rt['method']} "
        timed = [r for r in res["nt"] if "implementation" in r]
        versions.update(next((r for r in res["nt"] if "jax" in r), {}))
        for r in timed:
            if "error" in r:
                failed = f"failed: {r['error'][:80]}"
                lines.append(head + f"| {r['implementation']} | {r['trace_axes']} | {failed} | — | — |")
                continue
            exact_tr = f"{r['trace'] / res['reference']['trace']:.4f}" if r["trace_axes"] == "full" else "—"
            lines.append(head + f"| {r['implementation']} | {r['trace_axes']} | {r['seconds']:.3f} "
                         f"| {r['seconds'] / rt['time']:.2f} | {exact_tr} |")
        if not timed:
            lines.append(head + f"| — | — | — | — | — |  ({res['nt_note']})")
    lines += ["", "trace_axes full = (): the n × n kernel ntksearch estimates; last = (-1,): neural-tangents' default, "
              "averaged over the last output axis (a B × B kernel for logits, whose trace is tr K / O). "
              + (f"neural-tangents {versions['neural_tangents']} on jax {versions['jax']} (its own environment)."
                 if versions else "")]
    return lines


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    if args.side_by_side_only:
        return "\n".join([*side_by_side_markdown(results), "", *DATA_NOTES]) + "\n"
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {jax.device_count()} × "
        f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}), jax {jax.__version__}; "
        f"{args.seeds} seeds per configuration; "
        "times exclude compilation.",
        "",
        "### Time to a median relative error ≤ 1% and speedups",
        "",
        "| model | n | p | Direct (s) | cheapest exact (s) | quantity | fastest estimator ≤ 1% | time (s) "
        "| × vs Direct | × vs cheapest exact |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for q in ("trace", "frobenius", "effective_rank", "label_alignment"):
            if q not in res["reference"]:
                continue
            hit = time_to(res, q, 0.01)
            cells = (
                ("not reached", "—", "—", "—")
                if hit is None
                else (
                    hit[1],
                    f"{hit[0]:.3f}",
                    f"{res['t_direct'] / hit[0]:,.0f}",
                    f"{res['t_exact'] / hit[0]:,.1f}",
                )
            )
            direct_cell = f"{res['t_direct']:.1f}" + ("*" if res["direct_note"] != "complete" else "")
            lines.append(
                f"| {res['model']} | {res['n']:,} | {res['p']:,} | {direct_cell} | {res['t_exact']:.1f} "
                f"| {q} | {' | '.join(cells)} |"
            )
    if any(r["direct_note"] != "complete" for r in results):
        lines += [
            "",
            "*Direct "
            + "; ".join(
                f"{r['model']}: {r['direct_note']}" for r in results if r["direct_note"] != "complete"
            )
            + ".",
        ]
    for res in results:
        qs = [q for q in QUANTITIES if q in res["reference"]]
        lines += [
            "",
            f"### {res['model']}: median relative error and median time per budget (AD passes)",
            "",
            "| method | budget | time (s) | " + " | ".join(qs) + " |",
            "|---|---|---|" + "---|" * len(qs),
        ]
        for r in res["rows"]:
            lines.append(
                f"| {r['method']} | {r['budget']} | {r['time']:.3f} | "
                + " | ".join(f"{r['err_' + q]:.1e}" for q in qs)
                + " |"
            )
    lines += ["", *side_by_side_markdown(results), "", *DATA_NOTES]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp,gru,cnn")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--budgets", default="32,64,128,256,512,1024,2048,4096")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--direct-seconds", type=float, default=600.0)
    parser.add_argument("--direct-block", type=int, default=64)
    parser.add_argument("--max-config-seconds", type=float, default=3.0,
                        help="skip a method's larger budgets once one estimate takes longer than this")
    parser.add_argument("--quick", action="store_true", help="3 seeds, budgets 64,256, Direct capped at 20 s")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--side-by-side-only", action="store_true",
                        help="only the cheapest exact path, ntksearch at rtol 0.01 and neural-tangents")
    parser.add_argument("--nt", action=argparse.BooleanOptionalAction, default=True,
                        help="time neural-tangents in its own virtual environment (built from PyPI if missing)")
    parser.add_argument("--nt-venv", default=str(NT_VENV))
    parser.add_argument("--nt-reps", type=int, default=5)
    parser.add_argument("--nt-trace-axes", default="full,last",
                        help="full: trace_axes=() (the n × n kernel); last: (-1,), neural-tangents' default")
    parser.add_argument("--nt-implementations", default=",".join(NT_IMPLEMENTATIONS))
    parser.add_argument("--nt-max-n", type=int, default=4000, help="skip neural-tangents for larger n (n² kernel)")
    parser.add_argument("--nt-timeout", type=float, default=1800.0)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.budgets, args.direct_seconds = 3, "64,256", 20.0
    args.methods = args.methods.split(",")
    args.budgets = [int(b) for b in args.budgets.split(",")]
    results = [run_model(m, args) for m in args.models.split(",")]
    text = markdown(results, args)
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else "_side_by_side" if args.side_by_side_only else ""
    (out / f"ntk_estimators{suffix}.md").write_text(text)
    (out / f"ntk_estimators{suffix}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
