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
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ntksearch.models import BuiltModel
from ntksearch.models.buckets import BucketGrid
from ntksearch.models.padded import bucket_candidate
from ntksearch.proxies import PROXIES, ProxyInputs

__all__ = ["PADDED_GROUPS", "plan_scoring"]

PADDED_GROUPS = frozenset({"size", "ntk", "spectrum", "linearised", "gradient", "synflow", "jacob_cov"})


def plan_scoring(names: list[str], inputs: ProxyInputs, built: BuiltModel, grid: BucketGrid | None, *,
                 met: set[Any] | None = None) -> list[tuple[list[str], ProxyInputs]]:
    """Split the proxies ``names`` of candidate ``built`` (inputs: ``inputs``) into at most two calls of
    :func:`~ntksearch.proxies.compute_proxies`: (names, padded inputs) for those of :data:`PADDED_GROUPS` when
    the candidate has a bucket (``grid`` not None, :func:`~ntksearch.models.padded.bucket_candidate`) and
    p ≥ n, then (names, ``inputs``) for the rest. Empty calls are left out.

    ``met``: the buckets (padded programs) met so far, updated here. With it, a bucket's first candidate is
    scored on its own and only later ones in the bucket: a padded program compiles in about 1.4× the time of
    a stand-alone candidate's, so a bucket that never repeats costs what it did without buckets.
    """
    padded_names = [n for n in names if PROXIES[n].group in PADDED_GROUPS]
    state_size = math.prod(inputs.y.shape)
    bucketed = None
    if grid is not None and padded_names and built.n_params >= state_size:
        bucketed = bucket_candidate(built, grid)
    if met is not None and bucketed is not None and bucketed.apply_fn not in met:
        met.add(bucketed.apply_fn)
        bucketed = None
    if bucketed is None:
        return [(list(names), inputs)]
    padded = dataclasses.replace(inputs, apply_fn=bucketed.apply_fn, params=bucketed.params,
                                 state_fn=bucketed.apply_fn, features_fn=None, probe_fn=None,
                                 flops=built.flops, n_params=built.n_params)
    rest = [n for n in names if n not in padded_names]
    return [(padded_names, padded)] + ([(rest, inputs)] if rest else [])

