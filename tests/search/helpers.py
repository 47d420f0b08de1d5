"""Tiny experiments for the search, report and CLI tests: one small MLP architecture, so the NTK estimator
compiles once per test process, and a continuous init scale, so sampled candidates differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import yaml

TINY_SPACE = {
    "family": "mlp",
    "hyperparameters": {"depth": 1, "width": 16, "init_scale": {"type": "float", "low": 0.5, "high": 2.0, "log": True}},
    "train": {"learning_rate": "auto", "optimizer": "sgd", "batch_size": 32, "epochs": 1},
}

optuna.logging.set_verbosity(optuna.logging.ERROR)


def write_space(folder: Path, space: dict[str, Any] | None = None, filename: str = "space.yaml") -> Path:
    path = folder / filename
    path.write_text(yaml.safe_dump(space or TINY_SPACE))
    return path


def tiny_experiment(folder: Path, **overrides: Any) -> dict[str, Any]:
    """The tiny experiment config (its space ``space.yaml`` and output in ``folder``); ``key=None`` removes a key."""
    config = {"name": "tiny", "seed": 0, "dataset": "digits", "space": "space.yaml", "scoring": {"batch_size": 16},
              "record": "objective", "trials": 4, "output": str(folder / "run"), "confirm": False}
    config.update(overrides)
    return {k: v for k, v in config.items() if v is not None}


def write_experiment(folder: Path, filename: str = "tiny.yaml", space_doc: dict[str, Any] | None = None,
                     **overrides: Any) -> Path:
    """A tiny experiment config in ``folder`` (with its space ``space_doc``); ``key=None`` removes a key."""
    write_space(folder, space_doc)
    path = folder / filename
    path.write_text(yaml.safe_dump(tiny_experiment(folder, **overrides), sort_keys=False))
    return path
