"""Zero-cost proxies: a registry of named scores over (apply_fn, params, x, y): NTK-based, baselines, published."""

from ntksearch.proxies import baselines as _baselines  # noqa: F401  (registers its groups)
from ntksearch.proxies import linearised as _linearised  # noqa: F401  (registers its group)
from ntksearch.proxies import ntk_proxies as _ntk_proxies  # noqa: F401  (registers its groups)
from ntksearch.proxies import patterns as _patterns  # noqa: F401  (registers its groups)
from ntksearch.proxies import published as _published  # noqa: F401  (registers its groups)
from ntksearch.proxies.az_nas import AZ_NAS_TERMS, az_nas_rank_score
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
from ntksearch.proxies.score import DEFAULT_SCORE, LinearScore, ScoreTerm, TieBrokenScore, fit_linear_score, score

__all__ = [
    "AZ_NAS_TERMS",
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
    "TieBrokenScore",
    "az_nas_rank_score",
    "compute_proxies",
    "fit_linear_score",
    "non_finite",
    "register_group",
    "score",
]
