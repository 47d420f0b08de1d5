"""Deterministic, stratified index selection: train/val/test splits, subsamples and scoring batches.

Every function takes a ``seed`` and draws from ``numpy.random.default_rng(seed)`` only, so the same seed gives
the same indices on every machine.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ntksearch.data.dataset import Dataset, DatasetError

__all__ = ["scoring_batch", "stratified_split", "subsample"]


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder); never exceeds ``counts``.

    Args:
      counts: (C,) examples per class, ``total <= counts.sum()``. Returns: (C,) ints summing to ``total``.
    """
    quota = counts * (total / max(int(counts.sum()), 1))
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: total - int(take.sum())]] += 1
    return take


def _class_members(y: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of each class present in ``y`` (ascending class), each in a random order."""
    return [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]


def stratified_split(y: np.ndarray, n_val: int, n_test: int, *, seed: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``range(len(y))`` into train/val/test index arrays with the class proportions of ``y``.

    Args:
      y: (N,) integer labels. n_val, n_test: exact sizes of the validation and test splits.
    Returns: sorted, disjoint ``(train, val, test)`` indices covering ``range(N)``.
    """
    if n_val < 0 or n_test < 0 or n_val + n_test >= len(y):
        raise DatasetError(f"cannot carve {n_val} validation and {n_test} test examples out of {len(y)} "
                           "while keeping a training split")
    members = _class_members(y, np.random.default_rng(seed))
    counts = np.array([len(m) for m in members])
    val_take = _allocate(counts, n_val)
    test_take = _allocate(counts - val_take, n_test)
    val = [m[:v] for m, v in zip(members, val_take, strict=True)]
    test = [m[v:v + t] for m, v, t in zip(members, val_take, test_take, strict=True)]
    train = [m[v + t:] for m, v, t in zip(members, val_take, test_take, strict=True)]
    return _sorted(train), _sorted(val), _sorted(test)


def _sorted(parts: list[np.ndarray]) -> np.ndarray:
    return np.sort(np.concatenate(parts))


def _stratified_subset(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` examples of ``y`` keeping its class proportions."""
    members = _class_members(y, np.random.default_rng(seed))
    take = _allocate(np.array([len(m) for m in members]), size)
    return _sorted([m[:k] for m, k in zip(members, take, strict=True)])


def subsample(dataset: Dataset, *, max_train: int | None = None, max_val: int | None = None,
              max_test: int | None = None, seed: int = 0) -> Dataset:
    """Keep at most ``max_<split>`` examples of each split (stratified, deterministic for ``seed``).

    ``None`` keeps a split whole; a split already small enough is returned unchanged (no copy).
    """
    changes: dict[str, np.ndarray] = {}
    for (split, x, y), limit in zip(dataset.splits(), (max_train, max_val, max_test), strict=True):
        if limit is None or limit >= len(y):
            continue
        if limit < 1:
            raise DatasetError(f"max_{split} must be a positive integer, got {limit!r}")
        keep = _stratified_subset(y, limit, seed)
        changes[f"x_{split}"], changes[f"y_{split}"] = x[keep], y[keep]
    return dataclasses.replace(dataset, **changes) if changes else dataset


def _balanced_counts(counts: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Per-class counts summing to ``size``, as equal as the class sizes ``counts`` allow (water-filling).

    Each round gives every class that still has examples an equal share; a remainder smaller than the number
    of such classes goes one each to randomly chosen ones.
    """
    take = np.zeros_like(counts)
    remaining = size
    while remaining:
        open_ = np.flatnonzero(take < counts)
        share = remaining // len(open_)
        if share == 0:
            take[rng.choice(open_, size=remaining, replace=False)] += 1
            break
        add = np.minimum(counts[open_] - take[open_], share)
        take[open_] += add
        remaining -= int(add.sum())
    return take


def scoring_batch(dataset: Dataset, size: int, *, seed: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced batch from one split (``train``, ``val`` or ``test``), for scoring candidates at
    initialisation (the training split) or holding out (the validation split).

    Every class gets ``size // C`` examples (one more for ``size % C`` randomly chosen classes); a class with
    too few examples gives its share to the others. Deterministic for ``seed``; examples in random order.

    Returns:
      x: float32 ``(size, *input_shape)``; y_onehot: float32 ``(size, n_classes)``.
    """
    splits = {name: (x, y) for name, x, y in dataset.splits()}
    if split not in splits:
        raise DatasetError(f"unknown split {split!r}; choose one of: {', '.join(splits)}")
    x_split, y_split = splits[split]
    if not 1 <= size <= len(y_split):
        raise DatasetError(f"scoring batch size must be in [1, {len(y_split)}] (the {split} split of "
                           f"{dataset.name}), got {size!r}")
    rng = np.random.default_rng(seed)
    classes = np.arange(dataset.n_classes)
    members = [rng.permutation(np.flatnonzero(y_split == c)) for c in classes]
    take = _balanced_counts(np.array([len(m) for m in members]), size, rng)
    idx = rng.permutation(np.concatenate([m[:k] for m, k in zip(members, take, strict=True)]))
    y_onehot = np.eye(dataset.n_classes, dtype=np.float32)[y_split[idx]]
    return x_split[idx], y_onehot
