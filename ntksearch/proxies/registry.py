"""The proxy registry: named zero-cost scores of a candidate at initialisation, computed in shared groups.

A *proxy* is one named float (with a standard error, 0 when deterministic). Proxies that share work are
computed together by one *group* function: every NTK metric comes from a single ``ntk_metrics`` call, the
gradient proxies from a single gradient. ``compute_proxies`` runs each needed group once, in registry order
(later groups may read earlier groups' values), and times it.

Inputs are :class:`ProxyInputs`: the one model interface ``apply_fn(params, x)`` plus optional extras a
family provides (``state_fn``, ``features_fn``, ``probe_fn``, counted ``flops``) or a search adds (a held-out
batch ``x_val``, ``y_val``). Proxies that need an extra which is absent are skipped with a clear error when
asked for by name.

Adding a proxy is one function and one line: write ``group(inputs, done) -> {name: ProxyValue}`` and
register it and its proxies with :func:`register_group` (``after`` names groups whose values it reads from
``done``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax

from ntksearch.ntk.operator import ApplyFn, Array, Params
from ntksearch.ntk.options import LinearisedOptions, NTKOptions

__all__ = [
    "GROUPS",
    "PROXIES",
    "LinearisedOptions",
    "NTKOptions",
    "Proxy",
    "ProxyInputs",
    "ProxyResult",
    "ProxyValue",
    "compute_proxies",
    "non_finite",
    "register_group",
]


@dataclass(frozen=True)
class ProxyValue:
    """A proxy's value and standard error (0 for deterministic proxies)."""

    value: float
    stderr: float = 0.0


@dataclass(frozen=True)
class ProxyInputs:
    """What a proxy may look at: one scoring batch and the candidate as pure functions.

    Attributes:
      apply_fn: ``(params, x) -> logits (N, C)``, deterministic.
      params: parameter pytree.
      x: the scoring batch (N, ...).
      y: one-hot targets (N, C) matching the logits.
      key: PRNG key for randomised proxies.
      state_fn: what the NTK is computed on (defaults to apply_fn).
      features_fn: ``(params, x) -> [pre-activations (N, ...)]`` for activation-pattern proxies.
      probe_fn: ``(params, x, taps) -> Probe(logits, features, blocks)`` (:class:`ntksearch.models.base.ProbeFn`):
        block outputs and additive taps, for proxies that need gradients with respect to activations.
      flops: counted forward FLOPs of one example, if known.
      n_params: the candidate's parameter count, when it is not the size of ``params`` (a candidate padded into
        a bucket, :mod:`ntksearch.models.buckets`); None: counted from ``params``.
      ntk: estimation options for the NTK proxies.
      x_val, y_val: a held-out batch (M, ...) with integer labels (M,) or one-hot (M, C), for the linearised
        network's held-out loss and accuracy.
      linearised: the setting of the linearised-training proxies.
    """

    apply_fn: ApplyFn
    params: Params
    x: Array
    y: Array
    key: Array
    state_fn: ApplyFn | None = None
    features_fn: Callable[[Params, Array], list[Array]] | None = None
    probe_fn: Callable[..., Any] | None = None
    flops: int | None = None
    ntk: NTKOptions = field(default_factory=NTKOptions)
    x_val: Array | None = None
    y_val: Array | None = None
    linearised: LinearisedOptions = field(default_factory=LinearisedOptions)
    n_params: int | None = None

    @classmethod
    def from_model(cls, model: Any, x: Array, y: Array, *, key: Array, ntk: NTKOptions | None = None,
                   x_val: Array | None = None, y_val: Array | None = None,
                   linearised: LinearisedOptions | None = None) -> ProxyInputs:
        """Inputs from a :class:`ntksearch.models.BuiltModel` (anything with its attributes)."""
        return cls(model.apply_fn, model.params, x, y, key, state_fn=model.state_fn, features_fn=model.features_fn,
                   probe_fn=model.probe_fn, flops=model.flops, ntk=ntk or NTKOptions(), x_val=x_val, y_val=y_val,
                   linearised=linearised or LinearisedOptions())


GroupFn = Callable[[ProxyInputs, Mapping[str, ProxyValue]], dict[str, ProxyValue]]


@dataclass(frozen=True)
class Proxy:
    """Registry entry.

    Attributes:
      name: the proxy's name in configs, trial attributes and leaderboards.
      group: the group function computing it.
      description: one line for docs and ``--help``.
      sign: +1 when larger values are expected to mean better accuracy (the usual reading in the literature),
        -1 when smaller, 0 when unknown. Only a default direction: reports give both signs.
      requires: the optional :class:`ProxyInputs` fields it needs (``features_fn``, ``probe_fn``, ``flops``,
        ``x_val``...).
    """

    name: str
    group: str
    description: str
    sign: int
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    """A group function and the groups whose results it reads."""

    fn: GroupFn
    after: tuple[str, ...] = ()


PROXIES: dict[str, Proxy] = {}
GROUPS: dict[str, Group] = {}


def register_group(name: str, fn: GroupFn, proxies: Iterable[Proxy], *, after: tuple[str, ...] = ()) -> None:
    """Register a group function, the proxies it returns and the (earlier) groups it reads."""
    unknown = [g for g in after if g not in GROUPS]
    if unknown:
        raise ValueError(f"group {name!r} must be registered after {', '.join(unknown)}")
    GROUPS[name] = Group(fn, after)
    for proxy in proxies:
        PROXIES[proxy.name] = proxy


@dataclass(frozen=True)
class ProxyResult:
    """Computed proxies with the wall-clock seconds spent per group."""

    values: dict[str, ProxyValue]
    seconds: dict[str, float]


def compute_proxies(names: Iterable[str], inputs: ProxyInputs) -> ProxyResult:
    """Compute the named proxies (and only the groups they need) for one candidate.

    Raises:
      KeyError: an unknown proxy name (the message lists the registered ones).
      ValueError: a proxy needs an input field that is absent.
    Non-finite values are returned as they are; callers decide (a search marks the trial failed).
    """
    names = list(dict.fromkeys(names))
    for name in names:
        if name not in PROXIES:
            raise KeyError(f"unknown proxy {name!r}; registered: {', '.join(sorted(PROXIES))}")
        missing = [req for req in PROXIES[name].requires if getattr(inputs, req) is None]
        if missing:
            raise ValueError(f"proxy {name!r} needs {', '.join(missing)}, which these proxy inputs do not provide")
    needed = {PROXIES[n].group for n in names}
    for group in reversed(GROUPS):  # registry order is a topological order: close over dependencies
        if group in needed:
            needed.update(GROUPS[group].after)
    done: dict[str, ProxyValue] = {}
    seconds: dict[str, float] = {}
    for group, entry in GROUPS.items():
        if group not in needed:
            continue
        start = time.perf_counter()
        out = entry.fn(inputs, done)
        jax.block_until_ready([v.value for v in out.values()])
        seconds[group] = time.perf_counter() - start
        done.update(out)
    return ProxyResult({n: done[n] for n in names}, seconds)


def non_finite(values: Mapping[str, ProxyValue]) -> list[str]:
    """Names of the proxies whose value is not finite."""
    return [name for name, v in values.items() if not math.isfinite(v.value)]
