"""Planning an NTK estimate: what a method, a budget and the problem's sizes fix before any product is taken.

:func:`plan_estimate` resolves ``method`` (``auto`` included), the side to probe, the deflation block Q
(``sketch``), the probe block size and the budget into an :class:`EstimatePlan`, and refuses budgets too
small for the method; :mod:`ntksearch.ntk.estimators` executes plans (its docstring gives the methods' math).
Everything here is static: plain integers and names, no array is touched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from jax.sharding import Mesh

from ntksearch.ntk.operator import Side, smaller_side
from ntksearch.ntk.options import METHODS, Method

__all__ = ["QUANTITIES", "EstimatePlan", "Sketch", "plan_estimate", "requested_quantities"]

QUANTITIES = ("trace", "frobenius", "effective_rank", "label_alignment", "label_alignment_centred")

Sketch = Literal["none", "random", "range", "identity"]
ConcreteMethod = Literal["exact", "hutchinson", "hutch++", "forward", "reverse"]


@dataclass(frozen=True, kw_only=True)
class EstimatePlan:
    """Everything static about one estimate.

    Attributes:
      method: concrete method name.
      side: ``"state"`` (probes in Rⁿ, VJP images) or ``"param"`` (probes in Rᵖ, JVP images).
      dim: the probed dimension d (n or p).
      sketch: the deflation block Q: ``"none"``, ``"random"`` (q random orthonormal directions), ``"range"``
        (orth(A S), Hutch++) or ``"identity"`` (all d basis vectors: exact).
      sketch_size: q (d for ``identity``).
      square: the tr A² residual is Hutchinson on A² (one pass of the other mode per probe), else the cross
        moment.
      block_size: probe rows per kernel call (blocks of the adaptive loop; chunks of the fixed part).
      min_blocks, max_blocks: the adaptive loop's bounds (max from the budget).
      wanted: indices into ``QUANTITIES`` that are returned and must reach ``rtol``.
      n_labels: 0 without targets, 2 with (raw and centred).
      mesh: a 1-d device mesh (axis ``"probes"``) over which every block of probes is split, or None for one
        device. Blocks are zero-padded to a multiple of its size, so the probes — and the results — do not
        depend on the number of devices.
      dense: products through the dense per-example Jacobian (:class:`ProbeKernel` ``point``); the pass
        counts then count the products' rows as if they were AD passes.
    """

    method: ConcreteMethod
    side: Side
    dim: int
    sketch: Sketch
    sketch_size: int
    square: bool
    block_size: int
    min_blocks: int
    max_blocks: int
    wanted: tuple[int, ...]
    n_labels: int
    mesh: Mesh | None = None
    dense: bool = False

    @property
    def fixed_passes(self) -> tuple[int, int]:
        """(main-mode, other-mode) passes of the fixed part."""
        q = self.sketch_size
        if self.sketch == "none":
            return 0, 0
        if self.sketch == "identity":
            return q, q if self.square else 0
        main = q * (2 if self.sketch == "range" else 1)  # range: A·S then M·Q
        other = (q if self.sketch == "range" else 0) + (q if self.square else 0)
        return main, other

    def passes(self, n_blocks: int) -> tuple[int, int]:
        """(n_jvp, n_vjp) after ``n_blocks`` blocks, including the label VJPs."""
        main, other = self.fixed_passes
        main += n_blocks * self.block_size
        other += n_blocks * self.block_size if self.square else 0
        n_jvp, n_vjp = (other, main) if self.side == "state" else (main, other)
        return n_jvp, n_vjp + self.n_labels


def plan_estimate(
    method: Method,
    n: int,
    p: int,
    *,
    max_matvecs: int,
    wanted: Sequence[str],
    n_labels: int,
    min_blocks: int = 4,
    sketch_size: int | None = None,
    block_size: int | None = None,
    mesh: Mesh | None = None,
    dense: bool = False,
) -> EstimatePlan:
    """Resolve a method, its side, sketch and block sizes and the budget into an :class:`EstimatePlan`.

    ``dense``: the products will go through a dense Jacobian, which makes ``exact`` the cheapest method:
    ``auto`` then picks it whenever its passes fit in ``max_matvecs``.

    Raises ValueError for unknown methods, bad sizes and budgets too small for ``min_blocks`` blocks.
    """
    if method not in METHODS:
        raise ValueError(f"unknown NTK estimation method {method!r}; allowed: {', '.join(METHODS)}")
    if max_matvecs < 1:
        raise ValueError(f"max_matvecs must be a positive number of AD passes, got {max_matvecs}")
    if min_blocks < 2:
        raise ValueError(f"min_blocks must be ≥ 2 to estimate a standard error, got {min_blocks}")
    common = {"wanted": tuple(QUANTITIES.index(q) for q in wanted), "n_labels": n_labels, "mesh": mesh,
              "dense": dense}
    need_f2 = tuple(wanted) != ("trace",)
    small_side, d_small = smaller_side(n, p), min(n, p)
    if method == "auto":
        method = _auto_method(n, p, max_matvecs, need_f2, dense)
    if method == "exact":
        block = min(d_small, 4 if dense else 64)  # dense: one Gram matrix replaces the blocks; only labels use it
        plan = EstimatePlan(method="exact", side=small_side, dim=d_small, sketch="identity", sketch_size=d_small,
                            square=need_f2, block_size=block, min_blocks=0, max_blocks=0, **common)
        cost = sum(plan.passes(0))
        if cost > max_matvecs:
            raise ValueError(
                f"exact NTK needs {cost} AD passes (min(n, p) = {d_small}, twice when tr K² is wanted, plus "
                f"{n_labels} label VJPs) but max_matvecs = {max_matvecs}; raise the budget or use a randomised method"
            )
        return plan
    side: Side = {"hutchinson": "state", "reverse": "state", "forward": "param"}.get(method, small_side)
    dim = n if side == "state" else p
    if block_size is None:
        block_size = int(min(16, max(2, max_matvecs // 32)))
    if block_size < 2:
        raise ValueError(f"block_size must be ≥ 2 (pairs of probes estimate tr K²), got {block_size}")
    sketch: Sketch
    if method == "hutchinson":
        sketch, q, square = "none", 0, False
    elif method in ("forward", "reverse"):
        sketch, q, square = "random", max_matvecs // 6 if sketch_size is None else sketch_size, False
    else:  # hutch++: the sketch costs 3q passes (4q with tr A²)
        sketch, q, square = "range", max(1, max_matvecs // 8 if sketch_size is None else sketch_size), need_f2
    plan = EstimatePlan(method=method, side=side, dim=dim, sketch=sketch, sketch_size=min(q, dim), square=square,
                        block_size=block_size, min_blocks=min_blocks, max_blocks=0, **common)
    left = max_matvecs - sum(plan.passes(0))
    block_cost = block_size * (2 if square else 1)
    if left < min_blocks * block_cost:
        raise ValueError(
            f"max_matvecs = {max_matvecs} leaves {left} passes after the fixed part ({sum(plan.passes(0))}), fewer "
            f"than min_blocks × block cost = {min_blocks} × {block_cost}; raise max_matvecs or lower "
            "sketch_size/block_size"
        )
    return dataclasses.replace(plan, max_blocks=left // block_cost)


def _auto_method(n: int, p: int, max_matvecs: int, need_f2: bool, dense: bool) -> ConcreteMethod:
    """Exact when its passes fit in half the budget (the whole budget with dense products), else Hutch++."""
    if min(n, p) * (2 if need_f2 else 1) <= (max_matvecs if dense else max_matvecs // 2):
        return "exact"
    return "hutch++"


def requested_quantities(quantities: Sequence[str] | None, has_y: bool) -> tuple[str, ...]:
    """The names of ``QUANTITIES`` to estimate (all that are available without targets when None); ValueError
    naming an unknown one, or a label alignment asked for without targets."""
    available = QUANTITIES if has_y else QUANTITIES[:3]
    if quantities is None:
        return available
    for q in quantities:
        if q not in available:
            raise ValueError(f"unknown or unavailable quantity {q!r}; allowed here: {', '.join(available)}")
    return tuple(quantities)
