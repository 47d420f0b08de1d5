"""User datasets from ``.npz`` or ``.csv`` files.

``.npz``: arrays ``x_train``, ``y_train``, optionally the pairs ``x_val``/``y_val`` and ``x_test``/``y_test``;
a missing pair is carved out of the training arrays (stratified, ``seed``, ``val_fraction``/``test_fraction``
of the training examples). ``x`` arrays are ``(N, ...)`` numbers: uint8 is divided by 255, anything else is
cast to float32 as it is (scale images to [0, 1] and lay them out NHWC yourself).

``.csv``: one row per example, a label column (``label_column``, default ``label``) and numeric feature
columns, giving tabular inputs ``(N, F)``; validation and test splits are carved out as above.

Labels must be integer class indices ≥ 0 (floats holding whole numbers are accepted); ``n_classes`` is the
largest label + 1.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ntksearch.data.dataset import Dataset, DatasetError, DatasetNotFoundError, check_int
from ntksearch.data.splits import stratified_split
from ntksearch.validation import is_file

__all__ = ["NPZ_KEYS", "load_file"]

NPZ_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def _inputs(where: str, x: np.ndarray) -> np.ndarray:
    """``(N, ...)`` numeric → float32 (uint8 / 255); non-numeric or non-finite values are errors."""
    if x.ndim < 2:
        raise DatasetError(f"{where}: inputs must have shape (N, ...) with at least 2 axes, got {x.shape}")
    if x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise DatasetError(f"{where}: inputs must be numbers, got dtype {x.dtype}")
    out = np.divide(x, np.float32(255), dtype=np.float32) if x.dtype == np.uint8 else x.astype(np.float32)
    if not np.isfinite(out).all():
        raise DatasetError(f"{where}: inputs contain NaN or infinite values")
    return out


def _labels(where: str, y: np.ndarray) -> np.ndarray:
    """``(N,)`` integer class indices ≥ 0 → int32; anything else is an error naming an offending value."""
    if y.ndim != 1:
        raise DatasetError(f"{where}: labels must have shape (N,), got {y.shape}")
    whole_floats = y.dtype.kind == "f" and bool(np.all(np.isfinite(y) & (y == np.round(y))))
    integral = y.dtype.kind in "iu" or whole_floats
    if not integral:
        bad = next((v for v in y.tolist() if not isinstance(v, int | float) or v != round(v)), y.dtype)
        raise DatasetError(f"{where}: labels must be integer class indices, found {bad!r} (dtype {y.dtype})")
    if y.size and y.min() < 0:
        raise DatasetError(f"{where}: labels must be >= 0, found {int(y.min())}")
    return y.astype(np.int32)


def _carve(where: str, splits: Splits, seed: int, val_fraction: float, test_fraction: float) -> Splits:
    """Fill the missing ``val``/``test`` splits from ``train`` (stratified, deterministic for ``seed``)."""
    x, y = splits["train"]
    n_val = 0 if "val" in splits else max(1, round(val_fraction * len(y)))
    n_test = 0 if "test" in splits else round(test_fraction * len(y))
    if n_val + n_test >= len(y):
        raise DatasetError(f"{where}: {len(y)} training examples are too few to carve {n_val} validation "
                           f"and {n_test} test examples out of them")
    train, val, test = stratified_split(y, n_val, n_test, seed=seed)
    out = {"train": (x[train], y[train])}
    out["val"] = splits.get("val", (x[val], y[val]))
    out["test"] = splits.get("test", (x[test], y[test]))
    return out


def _read_npz(path: Path) -> Splits:
    with np.load(path, allow_pickle=False) as arrays:
        unknown = sorted(set(arrays.files) - set(NPZ_KEYS))
        if unknown:
            raise DatasetError(f"{path}: unknown array(s) {', '.join(unknown)}; "
                               f"allowed: {', '.join(NPZ_KEYS)}")
        splits: Splits = {}
        for split in ("train", "val", "test"):
            pair = (f"x_{split}", f"y_{split}")
            missing = [key for key in pair if key not in arrays.files]
            if split == "train" and missing:
                raise DatasetError(f"{path}: missing required array(s) {', '.join(missing)}")
            if len(missing) == 1:
                given = next(key for key in pair if key not in missing)
                raise DatasetError(f"{path}: {given} given without {missing[0]}")
            if missing:
                continue
            x = _inputs(f"{path}: x_{split}", arrays[pair[0]])
            y = _labels(f"{path}: y_{split}", arrays[pair[1]])
            if len(x) != len(y):
                raise DatasetError(f"{path}: x_{split} has {len(x)} examples but y_{split} has {len(y)}")
            splits[split] = (x, y)
    return splits


def _read_csv(path: Path, label_column: str) -> Splits:
    import pandas as pd  # deferred: only CSV datasets need pandas

    frame = pd.read_csv(path)
    if label_column not in frame.columns:
        raise DatasetError(f"{path}: no label column {label_column!r} (set option label_column); "
                           f"columns: {', '.join(map(str, frame.columns))}")
    features = frame.drop(columns=[label_column])
    if features.shape[1] == 0:
        raise DatasetError(f"{path}: no feature columns besides the label column {label_column!r}")
    non_numeric = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise DatasetError(f"{path}: feature column(s) {', '.join(non_numeric)} are not numeric")
    y = _labels(f"{path}: column {label_column!r}", frame[label_column].to_numpy())
    return {"train": (_inputs(str(path), features.to_numpy()), y)}


def _check_fraction(option: str, value: object, *, allow_zero: bool) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not (value < 1 and (value >= 0 if allow_zero else value > 0)):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise DatasetError(f"option {option} must be a number in {interval}, got {value!r}")
    return float(value)


def load_file(*, path: str | Path, label_column: str = "label", seed: int = 0, val_fraction: float = 0.15,
              test_fraction: float = 0.15) -> Dataset:
    """Load a user ``.npz`` or ``.csv`` dataset (see the module docstring for the layout).

    Args:
      path: the file. label_column: the CSV label column.
      seed, val_fraction, test_fraction: how missing validation/test splits are carved out of the training
        examples (fractions of them, stratified by class).
    """
    path = Path(path).expanduser()
    seed = check_int("seed", seed, minimum=0)
    val_fraction = _check_fraction("val_fraction", val_fraction, allow_zero=False)
    test_fraction = _check_fraction("test_fraction", test_fraction, allow_zero=True)
    if not is_file(path):
        raise DatasetNotFoundError(f"dataset file {path} does not exist")
    if path.suffix not in (".npz", ".csv"):
        raise DatasetError(f"{path}: unsupported file type {path.suffix!r}; use .npz or .csv")
    try:
        splits = _read_npz(path) if path.suffix == ".npz" else _read_csv(path, label_column)
    except DatasetError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:  # unreadable, truncated, not that format
        raise DatasetError(f"{path}: cannot read it as a {path.suffix} dataset ({type(exc).__name__}: {exc})") from exc
    if "val" not in splits or "test" not in splits:
        splits = _carve(str(path), splits, seed, val_fraction, test_fraction)
    n_classes = max(int(y.max()) for _, y in splits.values() if y.size) + 1
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits["train"], splits["val"], splits["test"]
    return Dataset(f"file:{path.name}", x_tr, y_tr, x_va, y_va, x_te, y_te, n_classes=n_classes)
