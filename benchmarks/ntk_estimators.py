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
``neural-tangents`` is timed when it imports next to the installed jax; otherwise the reason is printed.

Usage::

    python benchmarks/ntk_estimators.py                     # full run (≈ 40 min on 2 cores)
    python benchmarks/ntk_estimators.py --quick             # smoke run (≈ 2 min)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ntksearch.data import DatasetNotFoundError, load_dataset
from ntksearch.ntk import NTKOperator, kvp_batch, ntk_metrics

METHODS = ("hutchinson", "reverse", "forward", "hutch++")
QUANTITIES = ("trace", "frobenius", "effective_rank", "label_alignment")


# ----------------------------------------------------------------------------------------------------------
# Models (pure JAX)


def _uniform(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    bound = 1.0 / np.sqrt(fan_in)
    return jax.random.uniform(key, shape, minval=-bound, maxval=bound)


def mlp_apply(params: list[dict], x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[0], -1) @ params[0]["w"] + params[0]["b"]
    for layer in params[1:]:
        h = jax.nn.relu(h) @ layer["w"] + layer["b"]
    return h


def gru_apply(params: dict, x: jax.Array) -> jax.Array:
    """GRU over x (B, T, F) (PyTorch gate layout); returns the hidden trajectory (B, T, H)."""
    hid = params["wh"].shape[0]
    xi = jnp.einsum("btf,fg->tbg", x, params["wi"]) + params["bi"]

    def step(h: jax.Array, xt: jax.Array) -> tuple[jax.Array, jax.Array]:
        hh = h @ params["wh"] + params["bh"]
        r = jax.nn.sigmoid(xt[:, :hid] + hh[:, :hid])
        z = jax.nn.sigmoid(xt[:, hid : 2 * hid] + hh[:, hid : 2 * hid])
        cand = jnp.tanh(xt[:, 2 * hid :] + r * hh[:, 2 * hid :])
        h = (1.0 - z) * cand + z * h
        return h, h

    _, hs = jax.lax.scan(step, jnp.zeros((x.shape[0], hid), x.dtype), xi)
    return jnp.swapaxes(hs, 0, 1)


def cnn_apply(params: dict, x: jax.Array) -> jax.Array:
    dn = ("NHWC", "HWIO", "NHWC")
    h = x
    for w, stride in zip(params["convs"], (1, 2, 2), strict=True):
        h = jax.nn.relu(jax.lax.conv_general_dilated(h, w, (stride, stride), "SAME", dimension_numbers=dn))
    return h.mean(axis=(1, 2)) @ params["head"]["w"] + params["head"]["b"]


def make_mlp(batch: int = 50) -> tuple[Callable, object, jax.Array, None]:
    keys = jax.random.split(jax.random.PRNGKey(0), 15)
    sizes = [784] + [64] * 15
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


def neural_tangents_status() -> str:
    """Why neural-tangents cannot be timed here (or that it can)."""
    try:
        import neural_tangents  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "neural_tangents":
            return (f"neural-tangents not timed: it is installed but `import neural_tangents` fails with jax "
                    f"{jax.__version__}: {type(exc).__name__}: {exc}")
        return (f"neural-tangents not timed: not installed. Its latest release (0.6.5) requires tensorflow>=2.15 "
                f"and tf2jax, and its package __init__ imports TensorFlow (through jax.experimental.jax2tf), so "
                f"it cannot be installed next to jax {jax.__version__} without TensorFlow; installed with --no-deps, "
                "`import neural_tangents` fails with ModuleNotFoundError: No module named 'tensorflow'.")
    except Exception as exc:  # any other import failure is the finding we report
        return (f"neural-tangents not timed: `import neural_tangents` fails with jax {jax.__version__}: "
                f"{type(exc).__name__}: {exc}")
    return "neural-tangents imports (not timed by this version of the benchmark)"


# ----------------------------------------------------------------------------------------------------------
# The sweep


def run_model(name: str, args: argparse.Namespace) -> dict:
    apply_fn, params, x, y = MODELS[name]()
    op = NTKOperator.create(apply_fn, params, x)
    print(f"\n## {name}: n = {op.n:,}, p = {op.p:,}", flush=True)
    big = 2 * min(op.n, op.p) + 8
    for _ in range(2):  # the first call compiles; time the second
        start = time.perf_counter()
        exact = ntk_metrics(apply_fn, params, x, y, key=jax.random.PRNGKey(0), method="exact", max_matvecs=big)
    t_exact = time.perf_counter() - start
    ref = {q: e.value for q, e in exact.items()}
    print(
        f"cheapest exact: {t_exact:.2f} s ({2 * min(op.n, op.p):,} passes); "
        + ", ".join(f"{q} = {v:.6g}" for q, v in ref.items()),
        flush=True,
    )
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
            kw = dict(method=method, rtol=0.0, max_matvecs=budget)
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
    }


def time_to(result: dict, quantity: str, tol: float) -> tuple[float, str] | None:
    """Fastest (median time) configuration whose median relative error is ≤ tol."""
    ok = [r for r in result["rows"] if r.get(f"err_{quantity}", np.inf) <= tol]
    if not ok:
        return None
    best = min(ok, key=lambda r: r["time"])
    return best["time"], f"{best['method']} @ {best['budget']}"


def markdown(results: list[dict], args: argparse.Namespace) -> str:
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
    lines += ["", neural_tangents_status(), *DATA_NOTES]
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
    suffix = "_quick" if args.quick else ""
    (out / f"ntk_estimators{suffix}.md").write_text(text)
    (out / f"ntk_estimators{suffix}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
