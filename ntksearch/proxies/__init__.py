"""Zero-cost proxies: a registry of named scores over (apply_fn, params, x, y), NTK-based and baselines."""

from ntksearch.proxies import baselines as _baselines  # noqa: F401  (registers its groups)
from ntksearch.proxies import linearised as _linearised  # noqa: F401  (registers its group)
from ntksearch.proxies import ntk_proxies as _ntk_proxies  # noqa: F401  (registers its groups)
from ntksearch.proxies.registry import (
    GROUPS,
    PROXIES,
    LinearisedOptions,
    NTKOptions,
    Proxy,
    ProxyInputs,
    ProxyResult,
    ProxyValue,
    compute_proxies,
    non_finite,
    register_group,
)
from ntksearch.proxies.score import DEFAULT_SCORE, LinearScore, ScoreTerm, fit_linear_score, score

__all__ = [
    "DEFAULT_SCORE",
    "GROUPS",
    "PROXIES",
    "LinearScore",
    "LinearisedOptions",
    "NTKOptions",
    "Proxy",
    "ProxyInputs",
    "ProxyResult",
    "ProxyValue",
    "ScoreTerm",
    "compute_proxies",
    "fit_linear_score",
    "non_finite",
    "register_group",
    "score",
]
