"""Load the ground-truth tasks: one frame per task with seed-averaged accuracies joined to the proxies.

Files next to this module: ``<task>.csv`` (``build.py``: one row per architecture, variant and seed) and
``proxies_<table>.csv`` (``proxies.py``: one row per architecture, or per architecture and variant in a
hyperparameter table), where ``<table>`` is the task itself or, for tasks that retrain the architectures of
another task at the same initialisation (:data:`PROXY_TABLES`), that task.

A task frame has one row per unit (architecture, or architecture × variant) with ``task``, ``family``,
``arch_id``, ``variant`` (empty for architecture tables), ``accuracy`` (test accuracy averaged over seeds),
``val_accuracy`` (likewise), ``seeds`` and one column per proxy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

__all__ = ["HERE", "PROXY_TABLES", "TASKS", "load_task", "noise_ceiling", "read_table"]

HERE = Path(__file__).resolve().parent
TASKS = ("fashion_mnist", "digits", "fashion_mnist_sgd", "adding", "nb201_fashion_mnist", "digits_hp")
PROXY_TABLES = {"fashion_mnist_sgd": "fashion_mnist"}  # same architectures, same initialisation and batch
KEYS = ["arch_id", "variant"]


def read_table(path: Path, *, drop_errors: bool = True) -> pd.DataFrame:
    """A ground-truth or proxy CSV with ``variant`` as text ("" for architecture tables); ``drop_errors``
    leaves out rows whose ``error`` is set."""
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""], low_memory=False)
    if "variant" not in frame:
        frame["variant"] = ""
    frame["variant"] = frame["variant"].astype(object).fillna("")
    return frame[frame["error"].isna()] if drop_errors and "error" in frame else frame


def load_task(task: str, folder: Path = HERE) -> pd.DataFrame | None:
    """The task's frame (module docstring), or None while its ground truth or proxies are missing."""
    gt_path, px_path = folder / f"{task}.csv", folder / f"proxies_{PROXY_TABLES.get(task, task)}.csv"
    if not (gt_path.exists() and px_path.exists()):
        return None
    gt = read_table(gt_path)
    acc = gt.groupby(KEYS).agg(accuracy=("test_accuracy", "mean"), val_accuracy=("val_accuracy", "mean"),
                               seeds=("seed", "nunique"), family=("family", "first")).reset_index()
    # a proxy row's error names the proxy groups that failed; its other proxies stand (RULE.md: a missing
    # proxy leaves the row out for that proxy only)
    px = read_table(px_path, drop_errors=False).drop(columns=["family", "dataset", "error", "seconds"], errors="ignore")
    if not (px["variant"] != "").any():  # architecture-level proxies serve every variant
        px = px.drop(columns="variant")
    frame = acc.merge(px, on=[k for k in KEYS if k in px], how="inner")
    frame.insert(0, "task", task)
    return frame.sort_values(KEYS, ignore_index=True)


def noise_ceiling(task: str, folder: Path = HERE) -> dict[str, float]:
    """Spearman ρ between the test accuracies of seeds 0 and 1, over all units and per family."""
    gt = read_table(folder / f"{task}.csv")
    wide = gt.pivot_table(index=[*KEYS, "family"], columns="seed", values="test_accuracy").dropna()
    if wide.shape[1] < 2:
        return {}
    out = {"all": float(scipy.stats.spearmanr(wide.iloc[:, 0], wide.iloc[:, 1]).statistic)}
    for family, part in wide.groupby(level="family"):
        if len(part) >= 3 and np.ptp(part.iloc[:, 0]) > 0:
            out[family] = float(scipy.stats.spearmanr(part.iloc[:, 0], part.iloc[:, 1]).statistic)
    return out
