"""Time neural-tangents' empirical NTK on arrays saved by ``ntk_estimators.py`` (run by it, in its own virtual
environment: jax 0.4.25, neural-tangents 0.6.5, tensorflow-cpu, tf2jax; see ``ntk_estimators.py --help``).

Reads ``x``, the model name and the parameter leaves from an .npz file, rebuilds the same model
(:mod:`ntk_models`), and for each of neural-tangents' three implementations (JACOBIAN_CONTRACTION,
NTK_VECTOR_PRODUCTS, STRUCTURED_DERIVATIVES) and each requested ``trace_axes`` compiles
``nt.empirical_ntk_fn(apply, trace_axes=…, vmap_axes=0)`` under jit, then times warm calls. Prints one JSON
object per line: implementation, trace_axes, compile and warm median seconds, and tr K, ‖K‖_F of the kernel
(float64, on the host) or the error that stopped it.

``trace_axes=()`` is the full n × n kernel (per-example outputs included) that ntksearch estimates;
``trace_axes=(-1,)``, neural-tangents' default, averages the kernel over the last output axis (a B × B kernel
for logits, B × B × T × T for a trajectory; its trace is tr K divided by that axis' size).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import neural_tangents as nt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ntk_models import APPLY_FNS, params_from_leaves

IMPLEMENTATIONS = ("JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS", "STRUCTURED_DERIVATIVES")


def kernel_stats(kernel: np.ndarray, batch: int) -> tuple[float, float]:
    """(tr K, ‖K‖_F) of neural-tangents' kernel, laid out (B, B, d₁, d₁, d₂, d₂, …) for untraced output axes."""
    k = np.asarray(kernel, np.float64)
    pairs = (k.ndim - 2) // 2
    rows = (0, *range(2, 2 + 2 * pairs, 2))
    cols = (1, *range(3, 3 + 2 * pairs, 2))
    square = k.transpose(*rows, *cols).reshape(batch * int(np.prod(k.shape[2::2])), -1)
    return float(np.trace(square)), float(np.sqrt(np.sum(square**2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("arrays", help=".npz with name, x and leaf_0000, leaf_0001, … in jax.tree_util order")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--trace-axes", default="full,last", help="comma list of full (= ()) and last (= (-1,))")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    args = parser.parse_args()
    data = np.load(args.arrays)
    name = str(data["name"])
    leaves = [jax.numpy.asarray(data[k]) for k in sorted(k for k in data.files if k.startswith("leaf_"))]
    params, x = params_from_leaves(name, leaves), jax.numpy.asarray(data["x"])
    print(json.dumps({"jax": jax.__version__, "neural_tangents": nt.__version__}), flush=True)
    for axes_name in args.trace_axes.split(","):
        trace_axes = () if axes_name == "full" else (-1,)
        for impl in args.implementations.split(","):
            row = {"implementation": impl, "trace_axes": axes_name}
            try:
                fn = jax.jit(nt.empirical_ntk_fn(APPLY_FNS[name], trace_axes=trace_axes, vmap_axes=0,
                                                 implementation=getattr(nt.NtkImplementation, impl)))
                start = time.perf_counter()
                kernel = fn(x, None, params).block_until_ready()
                row["first_call"] = time.perf_counter() - start
                times = []
                for _ in range(args.reps):
                    start = time.perf_counter()
                    kernel = fn(x, None, params).block_until_ready()
                    times.append(time.perf_counter() - start)
                row["seconds"] = float(np.median(times))
                row["trace"], row["frobenius"] = kernel_stats(kernel, x.shape[0])
            except Exception as exc:  # report what stopped this implementation, time the others
                row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
