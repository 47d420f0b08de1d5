"""The NTK functions' keyword defaults are the options' defaults: one declaration, no drift."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import pytest

import ntksearch
from ntksearch.ntk import (
    LinearisedKernel,
    LinearisedOptions,
    NTKOptions,
    linearise_kernel,
    linearised_metrics,
    ntk_metrics,
)
from ntksearch.ntk.spectra import lambda_max


def _defaults(fn: Callable[..., Any], names) -> dict[str, Any]:
    params = inspect.signature(fn).parameters
    return {name: params[name].default for name in names}


@pytest.mark.parametrize(("fn", "arguments"), [
    (ntk_metrics, NTKOptions().estimator_arguments()),
    (lambda_max, NTKOptions().spectrum_arguments()),
    (linearise_kernel, LinearisedOptions().lanczos_arguments()),
    (linearised_metrics, LinearisedOptions().lanczos_arguments()),
    (LinearisedKernel.metrics, LinearisedOptions().setting_arguments()),
], ids=["ntk_metrics", "lambda_max", "linearise_kernel", "linearised_metrics", "LinearisedKernel.metrics"])
def test_function_defaults_equal_the_options_defaults(fn, arguments):
    assert _defaults(fn, arguments) == arguments


CHANGED = {"method": "exact", "rtol": 0.5, "max_matvecs": 7, "sketch_size": 3, "lanczos_iters": 2,
           "lanczos_rtol": 0.5, "learning_rate": 0.1, "steps": 3, "ridge": 0.5, "lr_fraction": 0.25, "momentum": 0.5,
           "compile_mode": "optimised", "structured": False}
SEARCH_ONLY = {"val_batch_size", "from_training"}  # how a search draws and sets up the inputs, not arguments


@pytest.mark.parametrize(("options", "arguments"), [
    (NTKOptions(), lambda o: o.estimator_arguments() | {f"spectrum_{k}": v for k, v in o.spectrum_arguments().items()}),
    (LinearisedOptions(), lambda o: o.lanczos_arguments()),
], ids=["ntk", "linearised"])
def test_every_option_reaches_a_function_argument(options, arguments):
    for f in dataclasses.fields(options):
        if f.name not in SEARCH_ONLY:
            assert arguments(dataclasses.replace(options, **{f.name: CHANGED[f.name]})) != arguments(options), f.name


def test_options_keep_their_public_import_paths():
    from ntksearch.proxies import LinearisedOptions as ProxiesLinearised
    from ntksearch.proxies import NTKOptions as ProxiesNTK
    assert ProxiesNTK is NTKOptions is ntksearch.NTKOptions
    assert ProxiesLinearised is LinearisedOptions is ntksearch.LinearisedOptions
