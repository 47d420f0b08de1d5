"""XLA optimisation level 0 against the default level: compile seconds and run time of one candidate's product
kernel, by model size, and how many kernel calls repay the default level's longer compile.

``compile_mode: auto`` (:mod:`ntksearch.ntk.compile`) compiles the NTK programs of convolution-free models at
XLA's level 0: faster to compile, slower to run. Whether that pays depends on how often a candidate's kernel
runs (the default score's Lanczos run: about 50 calls at ``rtol`` 1e-2) and on how long one call takes, which
grows with the model. For MLPs of the shipped ``mlp`` space at increasing sizes (each with relu and no norm,
and with gelu and layer norm) and recurrent networks of the ``rnn`` space (tanh, GRU and LSTM cells, one or two
layers, one or both directions), this script compiles the linearised proxies' product kernel (a block of 2
rows, ``side="state"``, adjoint images: what every Lanczos step runs) at both levels, on the digits scoring
batch of 32, and times 10 warm calls of each. Every architecture is new to the process (a width or hidden size
moves by a few units between compilations), so nothing is served from a cache.

Columns: forward-pass product flops (the figure ``auto`` could read, :class:`ntksearch.ntk.forward.ForwardPass`),
compile seconds and warm milliseconds per call at each level, their ratios, and the break-even number of calls
(compile-time difference / run-time difference) above which the default level is faster overall.

Usage::

    python benchmarks/compile_levels.py            # ≈ 3 min on 2 cores
    python benchmarks/compile_levels.py --families rnn
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

MLP_SIZES = ((2, 32), (3, 100), (4, 200), (5, 250), (6, 300), (6, 380), (6, 470), (6, 540))  # (depth, first width)
MLP_CHOICES = (("relu", "none"), ("gelu", "layer"))
RNN_SIZES = ((1, 32), (2, 64), (2, 120))  # (layers, hidden)
RNN_CELLS = ("tanh", "gru", "lstm")
LEVELS = (("level 0", True), ("default", False))  # (label, ``fast`` of :func:`ntksearch.ntk.compile.jitted`)


def _mlp_params(shift: int, *, depth: int, width: int, activation: str, norm: str) -> dict:
    """Trial parameters of an ``mlp`` of ``depth`` layers of about ``width`` units, moved by ``shift``."""
    sign = 1 if width < 256 else -1  # widths stay inside the space's [16, 512]
    return {"depth": depth, **{f"width_{i}": width + sign * (shift + 3 * i) for i in range(depth)},
            "activation": activation, "norm": norm, "residual": False, "dropout": 0.0, "init": "he_normal",
            "init_scale": 1.0}


def _rnn_params(shift: int, *, layers: int, hidden: int, cell: str, bidirectional: bool) -> dict:
    """Trial parameters of an ``rnn`` of ``layers`` layers of about ``hidden`` units, moved by ``shift``."""
    sign = 1 if hidden < 64 else -1  # hidden sizes stay inside the space's [16, 128]
    return {"cell": cell, "layers": layers, "bidirectional": bidirectional, "dropout": 0.0, "init": "lecun_normal",
            "init_scale": 1.0, **{f"hidden_{i}": hidden + sign * (shift % 7 + 2 * i) for i in range(layers)}}


def architectures() -> Iterator[tuple[str, str, Callable[[int], dict]]]:
    """(space, description, params(shift)) for every model measured; ``params`` returns the trial parameters of
    a new architecture for every ``shift`` (a width or hidden size moved by a few units, inside the space)."""
    for depth, width in MLP_SIZES:
        for activation, norm in MLP_CHOICES:
            yield "mlp", f"mlp {depth} × ~{width} {activation}/{norm}", partial(
                _mlp_params, depth=depth, width=width, activation=activation, norm=norm)
    for layers, hidden in RNN_SIZES:
        for cell in RNN_CELLS:
            for bidirectional in (False, True):
                yield "rnn", f"rnn {layers} × ~{hidden} {cell}{' bi' if bidirectional else ''}", partial(
                    _rnn_params, layers=layers, hidden=hidden, cell=cell, bidirectional=bidirectional)


def measure(calls: int, families: tuple[str, ...]) -> list[dict]:
    """Compile and time the product kernel of every architecture at both levels; one row per model pair."""
    import jax
    import jax.numpy as jnp

    from ntksearch.data import load_dataset, scoring_batch
    from ntksearch.ntk.compile import jitted
    from ntksearch.ntk.forward import trace_forward
    from ntksearch.ntk.kernel import _PROBE_STATIC, _probe_products
    from ntksearch.spaces import load_space

    spaces = {name: load_space(Path(__file__).resolve().parents[1] / "search_spaces" / f"{name}.yaml")
              for name in families}
    x, _ = scoring_batch(load_dataset("digits"), 32, seed=0)
    rows, shift = [], 0
    for family, description, params in architectures():
        if family not in families:
            continue
        row = {"model": description}
        for label, fast in LEVELS:
            shift += 1  # a new architecture for every compilation
            space = spaces[family]
            point = space.point_from_params(params(shift))
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
    return (f"| {row['model']} | {row['n_params']:,} | "
            f"{row['forward_flops'] / 1e6:.1f} | {fast['compile']:.2f} | {opt['compile']:.2f} | "
            f"{opt['compile'] / fast['compile']:.2f} | {1e3 * fast['run']:.1f} | {1e3 * opt['run']:.1f} | "
            f"{fast['run'] / opt['run']:.2f} | {even:.0f} |")


def table(rows: list[dict], calls: int) -> str:
    """The Markdown table of ``rows``."""
    head = [f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; digits batch of 32; product kernel of 2 "
            f"rows (the Lanczos step's); run = warm mean of {calls} calls; one compilation per row and level.", "",
            "| model | parameters | forward MFLOP | compile s, level 0 | compile s, default | × | run ms, level 0 "
            "| run ms, default | × | break-even calls |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    return "\n".join([*head, *map(_line, rows)]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10, help="warm calls timed per program")
    parser.add_argument("--families", default="mlp,rnn", help="','-separated: mlp, rnn")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    rows = measure(args.calls, tuple(args.families.split(",")))
    text = table(rows, args.calls)
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compile_levels.md").write_text(text)
    (out / "compile_levels.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
