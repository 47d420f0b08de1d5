"""Scoring a candidate inside its shape bucket: which proxies run on the padded program, which on the candidate.

:mod:`ntksearch.models.buckets` pads a candidate into a program shared by its whole bucket, so a search
compiles once per bucket instead of once per candidate. The padded program has the candidate's outputs and
its NTK exactly (padded parameters have zero Jacobian columns), but a longer parameter vector with extra
zero-gradient entries and padded intermediate tensors. So:

* on the padded program (:data:`PADDED_GROUPS`): ``n_params``/``flops`` (the candidate's own counts), the NTK
  proxies (``ntk_*``, ``ntk_lambda_max``, ``ntk_condition``, ``max_stable_lr``), the linearised proxies
  (``lin_*``, ``ntk_complexity``), ``grad_norm``/``snip`` (zero gradients add nothing to the per-tensor norms
  and sums), ``synflow`` (padded weights are 0 at |θ| too) and ``jacob_cov`` (a function of the input
  Jacobian of the logits);
* on the stand-alone candidate, compiled per architecture as before: ``zico`` (mean|g|/std g of padded
  entries is 0/0), ``naswot``, ``meco``, ``swap``, ``swap_reg`` (activation codes of padded units),
  ``fisher`` and the AZ-NAS terms (taps and block outputs of padded shape) and ``az_complexity``.

The NTK estimators choose their side and method by comparing the parameter count p with the state size n:
the padded program keeps that choice only when the candidate itself has p ≥ n, so a candidate with fewer
parameters than NTK state entries is scored on its own throughout (:func:`plan_scoring`).

**Which grid** (:func:`search_grid`, a search's default). Padding costs running time in proportion to the
padded parameters, compiling costs seconds per program. With the linearised proxies' kernel factored
(:mod:`ntksearch.ntk.structured`: one forward and C reverse passes per example, then host Gram matrices)
running a padded MLP costs little, so an mlp search whose padded proxies are only the linearised and size
groups uses the few-buckets grid: every layer at the space's widest width rounded up to a power of two, depth
rounded up to 2, 4, … up to the space's deepest, the space's activation, norm and residual choices selected at
run time, so a search compiles at most one program per depth. Measured on a TPE mlp search, 60 candidates: with
the widest *candidate* layer's width as the bucket width (one bucket per power of two and skip pattern) 41.2
candidates/min against 20.7 with the per-layer grid and 19.4 without buckets; with one width and run-time skips
(a depth-6 bucket at width 512 costs 0.04–0.08 s more per candidate to run than one at 128, while each further
bucket costs 1–2 s of tracing and compilation) the cold quickstart went from 62.9 to 167.5 candidates/min
(``benchmarks/RESULTS.md``). Recurrent networks were then scored by AD products (their weights are used at
every step of a ``scan``), and the default score's searches drive them towards the space's largest sizes,
where padding to the largest hidden size costs little running time and the few compiled programs save much:
rnn searches with the same proxies use the few-buckets grid too (one hidden size, the space's largest; the
cell and the directions static): 40 candidates, TPE seed 0 27.9 → 34.3, then, with the rule fixed before, a
held-out TPE search (seed 1) 31.2 → 36.9 and a random search 32.1 → 42.8 candidates/min against the per-layer
grid. Their weights are factored now too (a loop constant's factors at every step), where the padding's zero
columns cost nothing; the grid does not depend on ``structured`` for them. Every
other search (any other padded proxy, estimated by AD products whose cost grows with the padding; mlp with
``structured`` off) keeps the per-layer grid, where the few-buckets grid (then with a width per candidate)
was measured slower (0.66× mlp with AD products).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ntksearch.models import BuiltModel
from ntksearch.models.buckets import DEFAULT_GRID, BucketGrid
from ntksearch.models.padded import bucket_candidate
from ntksearch.proxies import PROXIES, ProxyInputs
from ntksearch.spaces import SearchSpace
from ntksearch.spaces.distributions import Categorical, IntRange

__all__ = ["PADDED_GROUPS", "UNIFORM_FAMILIES", "UNIFORM_GROUPS", "plan_scoring", "search_grid", "uniform_grid"]

PADDED_GROUPS = frozenset({"size", "ntk", "spectrum", "linearised", "gradient", "synflow", "jacob_cov"})
# families whose searches pad to the few-buckets grid → whether that needs the factored linearised kernel
UNIFORM_FAMILIES = {"mlp": True, "rnn": False}
UNIFORM_GROUPS = frozenset({"size", "linearised"})  # padded groups that stay cheap on the few-buckets grid


def uniform_grid(space: SearchSpace) -> BucketGrid:
    """The few-buckets grid of ``space`` (module docstring): every layer at the space's widest ``width``
    rounded up to a power of two (one width: no bucket per width), depths 2, 4, … capped at the space's
    deepest, menus of its categorical ``activation``, ``norm`` and ``residual`` choices."""
    specs = {spec.name: spec.dist for spec in space.specs}
    menus = tuple((n, specs[n].choices) for n in ("activation", "norm", "residual")
                  if isinstance(specs.get(n), Categorical))
    deepest = max((d.high for n, d in specs.items() if n in ("depth", "layers") and isinstance(d, IntRange)),
                  default=DEFAULT_GRID.depths[-1])
    depths = (*(d for d in DEFAULT_GRID.depths if d < deepest), deepest)
    width = specs.get("width", specs.get("hidden"))
    widest = (width.high if isinstance(width, IntRange) else
              max(width.choices) if isinstance(width, Categorical) and all(type(c) is int for c in width.choices)
              else None)
    widths = DEFAULT_GRID.widths if widest is None else (DEFAULT_GRID.width(widest),)
    return BucketGrid(widths=widths, depths=depths, uniform=True, menus=menus)


def search_grid(space: SearchSpace, proxies: list[str], *, structured: bool) -> BucketGrid:
    """The grid a search of ``space`` computing ``proxies`` pads to by default (module docstring): the
    few-buckets grid for a :data:`UNIFORM_FAMILIES` space whose padded proxies all belong to
    :data:`UNIFORM_GROUPS` (an mlp space: with the factored kernel on, ``structured``), else the per-layer
    grid."""
    padded = {PROXIES[n].group for n in proxies} & PADDED_GROUPS
    needs_factored = UNIFORM_FAMILIES.get(space.family)
    if needs_factored is not None and padded <= UNIFORM_GROUPS and (structured or not needs_factored):
        return uniform_grid(space)
    return DEFAULT_GRID


def plan_scoring(names: list[str], inputs: ProxyInputs, built: BuiltModel, grid: BucketGrid | None, *,
                 met: set[Any] | None = None) -> list[tuple[list[str], ProxyInputs]]:
    """Split the proxies ``names`` of candidate ``built`` (inputs: ``inputs``) into at most two calls of
    :func:`~ntksearch.proxies.compute_proxies`: (names, padded inputs) for those of :data:`PADDED_GROUPS` when
    the candidate has a bucket (``grid`` not None, :func:`~ntksearch.models.padded.bucket_candidate`) and
    p ≥ n, then (names, ``inputs``) for the rest. Empty calls are left out.

    ``met``: the buckets (padded programs) met so far, updated here. With it, on the per-layer grid a
    bucket's first candidate is scored on its own and only later ones in the bucket: a padded program compiles
    in about 1.4× the time of a stand-alone candidate's, so a bucket that never repeats costs what it did
    without buckets. On a ``uniform`` grid, whose few buckets repeat, every candidate runs in its bucket (TPE mlp
    search, 60 candidates, seed 0: 58.9 → 66.7 candidates/min).
    """
    padded_names = [n for n in names if PROXIES[n].group in PADDED_GROUPS]
    state_size = math.prod(inputs.y.shape)
    bucketed = None
    if grid is not None and padded_names and built.n_params >= state_size:
        bucketed = bucket_candidate(built, grid)
    if met is not None and bucketed is not None and bucketed.apply_fn not in met:
        met.add(bucketed.apply_fn)
        if not grid.uniform:
            bucketed = None
    if bucketed is None:
        return [(list(names), inputs)]
    padded = dataclasses.replace(inputs, apply_fn=bucketed.apply_fn, params=bucketed.params,
                                 state_fn=bucketed.apply_fn, features_fn=None, probe_fn=None,
                                 flops=built.flops, n_params=built.n_params)
    rest = [n for n in names if n not in padded_names]
    return [(padded_names, padded)] + ([(rest, inputs)] if rest else [])

