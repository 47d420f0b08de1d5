"""The dataset registry: ``DATASETS`` maps a name to a loader taking keyword options only."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ntksearch.data.adding import load_adding
from ntksearch.data.dataset import Dataset, DatasetError
from ntksearch.data.digits import load_digits
from ntksearch.data.fashion_mnist import load_fashion_mnist
from ntksearch.data.files import load_file

__all__ = ["DATASETS", "dataset_options", "load_dataset"]

DatasetLoader = Callable[..., Dataset]

DATASETS: dict[str, DatasetLoader] = {
    "adding": load_adding,
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "file": load_file,
}


def dataset_options(name: str) -> dict[str, inspect.Parameter]:
    """The keyword options the loader of ``name`` accepts (read from its signature)."""
    return dict(inspect.signature(_loader(name)).parameters)


def _loader(name: str) -> DatasetLoader:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def load_dataset(name: str, **options: Any) -> Dataset:
    """Load dataset ``name`` from :data:`DATASETS` with its loader's options.

    Raises:
      DatasetError: unknown name or option (the message lists the allowed ones), or a bad option value.
      DatasetNotFoundError: the dataset's files are absent.
    """
    allowed = dataset_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        described = ", ".join(
            p.name if p.default is inspect.Parameter.empty else f"{p.name} (default {p.default!r})"
            for p in allowed.values())
        raise DatasetError(f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; "
                           f"allowed: {described or 'none'}")
    required = [p.name for p in allowed.values()
                if p.default is inspect.Parameter.empty and p.name not in options]
    if required:
        raise DatasetError(f"dataset {name!r} needs option(s) {', '.join(required)}")
    return _loader(name)(**options)
