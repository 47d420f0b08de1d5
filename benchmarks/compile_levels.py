"""XLA optimisation level 0 against the default level: compile seconds and run time of one candidate's product
kernel, by model size, and how many kernel calls repay the default level's longer compile.

``compile_mode: auto`` (:mod:`ntksearch.ntk.compile`) compiles the NTK programs of convolution-free models at
XLA's level 0: faster to compile, slower to run. Whether that pays depends on how often a candidate's kernel
runs (the default score's Lanczos run: about 50 calls at ``rtol`` 1e-2) and on how long one call takes, which
grows with the model. For MLPs of the shipped ``mlp`` space at increasing sizes (each with relu and no norm,
and with gelu and layer norm), this script compiles the linearised proxies' product kernel (a block of 2 rows,
``side="state"``, adjoint images: what every Lanczos step runs) at both levels, on the digits scoring batch of
32, and times 10 warm calls of each. Every architecture is new to the process (widths differ by one unit
between compilations), so nothing is served from a cache.

Columns: forward-pass product flops (the figure ``auto`` could read, :class:`ntksearch.ntk.forward.ForwardPass`),
compile seconds and warm milliseconds per call at each level, their ratios, and the break-even number of calls
(compile-time difference / run-time difference) above which the default level is faster overall.

Usage::

    python benchmarks/compile_levels.py            # ≈ 1 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

SIZES = ((2, 32), (3, 100), (4, 200), (5, 250), (6, 300), (6, 380), (6, 470))  # (depth, first width)
CHOICES = (("relu", "none"), ("gelu", "layer"))
LEVELS = (("level 0", True), ("default", False))  # (label, ``fast`` of :func:`ntksearch.ntk.compile.jitted`)


def measure(calls: int) -> list[dict]:
    """Compile and time the product kernel of every (size, choices) at both levels; one row per model pair."""
    import jax
    import jax.numpy as jnp

    from ntksearch.data import load_dataset, scoring_batch
    from ntksearch.ntk.compile import jitted
    from ntksearch.ntk.forward import trace_forward
    from ntksearch.ntk.kernel import _PROBE_STATIC, _probe_products
    from ntksearch.spaces import load_space

    space = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "mlp.yaml")
    x, _ = scoring_batch(load_dataset("digits"), 32, seed=0)
    rows, shift = [], 0
    for depth, width in SIZES:
        for activation, norm in CHOICES:
            row = {"depth": depth, "width": width, "activation": activation, "norm": norm}
            for label, fast in LEVELS:
                shift += 1  # a new architecture for every compilation (widths stay inside the space's [16, 512])
                sign = 1 if width < 256 else -1
                widths = {f"width_{i}": width + sign * (shift + 3 * i) for i in range(depth)}
                point = space.point_from_params({"depth": depth, **widths, "activation": activation, "norm": norm,
                                                 "residual": False, "dropout": 0.0, "init": "he_normal",
                                                 "init_scale": 1.0})
                built = space.build(point, input_shape=x.shape[1:], n_classes=10, key=jax.random.key(shift))
                kernel = jitted(_probe_products, fast=fast, static_argnames=_PROBE_STATIC)  # the search's program
                rows_in = jnp.ones((2, x.shape[0] * 10), jnp.float32)
                lowered = kernel.lower(built.apply_fn, built.params, x, rows_in, side="state", adjoint=True)
                start = time.perf_counter()
                compiled = lowered.compile()
                compile_s = time.perf_counter() - start
                compiled(built.params, x, rows_in).images.block_until_ready()
                start = time.perf_counter()
                for _ in range(calls):
                    out = compiled(built.params, x, rows_in)
                out.images.block_until_ready()
                row[label] = {"compile": compile_s, "run": (time.perf_counter() - start) / calls}
                row.update(n_params=built.n_params,
                           forward_flops=trace_forward(built.apply_fn, built.params, x).product_flops)
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _line(row: dict) -> str:
    fast, opt = row["level 0"], row["default"]
    gain = fast["run"] - opt["run"]
    even = (opt["compile"] - fast["compile"]) / gain if gain > 0 else float("inf")
    return (f"| {row['depth']} × ~{row['width']} | {row['activation']}/{row['norm']} | {row['n_params']:,} | "
            f"{row['forward_flops'] / 1e6:.1f} | {fast['compile']:.2f} | {opt['compile']:.2f} | "
            f"{opt['compile'] / fast['compile']:.2f} | {1e3 * fast['run']:.1f} | {1e3 * opt['run']:.1f} | "
            f"{fast['run'] / opt['run']:.2f} | {even:.0f} |")


def table(rows: list[dict], calls: int) -> str:
    """The Markdown table of ``rows``."""
    head = [f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; digits batch of 32; product kernel of 2 "
            f"rows (the Lanczos step's); run = warm mean of {calls} calls; one compilation per row and level.", "",
            "| layers × width | activation/norm | parameters | forward MFLOP | compile s, level 0 | compile s, "
            "default | × | run ms, level 0 | run ms, default | × | break-even calls |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    return "\n".join([*head, *map(_line, rows)]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10, help="warm calls timed per program")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    rows = measure(args.calls)
    text = table(rows, args.calls)
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compile_levels.md").write_text(text)
    (out / "compile_levels.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
