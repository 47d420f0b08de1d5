"""scikit-learn's bundled handwritten digits (UCI optdigits test set): 1797 images 8×8, 10 classes."""

from __future__ import annotations

import numpy as np

from ntksearch.data.dataset import Dataset, check_int
from ntksearch.data.splits import stratified_split

__all__ = ["DIGITS_SPLIT", "load_digits"]

DIGITS_SPLIT = {"train": 1257, "val": 270, "test": 270}
"""Split sizes (70 % / 15 % / 15 %, stratified by class)."""


def load_digits(*, seed: int = 0) -> Dataset:
    """The digits as ``(N, 8, 8, 1)`` float32 in [0, 1] (pixel counts 0..16 divided by 16).

    The split sizes are :data:`DIGITS_SPLIT`; which examples go where is fixed by ``seed``.
    """
    from sklearn.datasets import load_digits as sklearn_digits  # deferred: importing sklearn takes ~1 s

    seed = check_int("seed", seed, minimum=0)
    bunch = sklearn_digits()
    x = (bunch.data.reshape(-1, 8, 8, 1) / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int32)
    train, val, test = stratified_split(y, DIGITS_SPLIT["val"], DIGITS_SPLIT["test"], seed=seed)
    return Dataset("digits", x[train], y[train], x[val], y[val], x[test], y[test], n_classes=10)
