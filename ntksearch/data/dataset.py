"""The :class:`Dataset` container shared by every loader, and the errors the loaders raise.

Conventions (docs/architecture.md): inputs are float32, images ``(N, H, W, C)`` (NHWC) with values in [0, 1],
sequences ``(N, T, F)`` and tabular data ``(N, F)``; labels are int32 class indices ``(N,)`` in
``[0, n_classes)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset", "DatasetError", "DatasetNotFoundError"]


class DatasetError(ValueError):
    """A dataset that cannot be loaded as asked: unknown name or option, bad option value, malformed file."""


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where they were looked for; the message says what to install or pass."""


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Train/validation/test splits of one classification problem.

    Attributes:
      name: registry name (``"digits"``, ``"fashion_mnist"``) or ``"file:<file name>"``.
      x_train, x_val, x_test: float32 inputs, ``(N_split, *input_shape)``.
      y_train, y_val, y_test: int32 labels ``(N_split,)`` in ``[0, n_classes)``.
      n_classes: number of classes C (≥ 2); one-hot targets are ``(N, C)``.

    The train and validation splits are non-empty; the test split may be empty (a user file without one).
    Equality is identity: the arrays are not compared.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise DatasetError(f"{self.name}: n_classes must be at least 2, got {self.n_classes}")
        shape = self.x_train.shape[1:]
        for split, x, y in self.splits():
            if x.dtype != np.float32 or x.ndim < 2:
                raise DatasetError(f"{self.name}: x_{split} must be float32 (N, ...), "
                                   f"got {x.dtype} {x.shape}")
            if x.shape[1:] != shape:
                raise DatasetError(f"{self.name}: x_{split} examples have shape {x.shape[1:]}, "
                                   f"x_train examples {shape}")
            if y.dtype != np.int32 or y.shape != x.shape[:1]:
                raise DatasetError(f"{self.name}: y_{split} must be int32 of shape ({len(x)},), "
                                   f"got {y.dtype} {y.shape}")
            if y.size and (y.min() < 0 or y.max() >= self.n_classes):
                raise DatasetError(f"{self.name}: y_{split} has labels outside [0, {self.n_classes})")
        for split, x, _ in self.splits()[:2]:
            if len(x) == 0:
                raise DatasetError(f"{self.name}: the {split} split is empty")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example: ``(H, W, C)`` for images, ``(T, F)`` for sequences, ``(F,)`` for tabular data."""
        return tuple(self.x_train.shape[1:])

    def splits(self) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
        """``(("train", x, y), ("val", x, y), ("test", x, y))``."""
        return (("train", self.x_train, self.y_train), ("val", self.x_val, self.y_val),
                ("test", self.x_test, self.y_test))

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, "
                f"test={len(self.y_test)}, input_shape={self.input_shape}, n_classes={self.n_classes})")


def check_int(option: str, value: object, *, minimum: int, optional: bool = False) -> int | None:
    """Validate an integer loader option (``None`` allowed when ``optional``); returns it."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or None" if optional else "")
        raise DatasetError(f"option {option} must be {allowed}, got {value!r}")
    return int(value)
