"""The adding problem (Hochreiter & Schmidhuber, 1997) as a sequence classification task, generated in code.

Each example is a sequence of ``length`` steps with two features: a value vₜ ~ U[0, 1] and a marker mₜ ∈ {0, 1}
that is 1 at exactly two steps, one drawn uniformly in the first half of the sequence and one in the second
half. The target is the sum s = Σₜ mₜvₜ ∈ [0, 2] of the two marked values, which is triangular on [0, 2]
(density s for s ≤ 1, 2 − s above). It is turned into ``n_classes`` classes of equal probability by the
quantiles of that distribution,

    F(s) = s²/2 (s ≤ 1),  1 − (2 − s)²/2 (s > 1),   class(s) = ⌊n_classes · F(s)⌋,

so chance accuracy is 1/n_classes and neighbouring classes differ by small changes of s: the task rewards
remembering both marked values precisely, across up to ``length`` steps. Inputs are ``(N, length, 2)``
float32 in [0, 1]; sequence families (rnn, transformer) read them as they are, ``cnn`` with 1-D
convolutions over time, ``mlp`` flattened. Every split is drawn from its own generator seeded by
``(seed, split)``, so splits never share examples by construction and sizes can change independently.
"""

from __future__ import annotations

import numpy as np

from ntksearch.data.dataset import Dataset, check_int

__all__ = ["adding_classes", "load_adding"]


def adding_classes(total: np.ndarray, n_classes: int) -> np.ndarray:
    """Class index ⌊C·F(s)⌋ (clipped to C − 1) of sums s ∈ [0, 2] under the triangular CDF F."""
    cdf = np.where(total <= 1.0, total**2 / 2.0, 1.0 - (2.0 - total) ** 2 / 2.0)
    return np.minimum((cdf * n_classes).astype(np.int32), n_classes - 1)


def _split(n: int, length: int, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    half = length // 2
    values = rng.uniform(0.0, 1.0, size=(n, length)).astype(np.float32)
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    markers = np.zeros((n, length), np.float32)
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    total = values[rows, first].astype(np.float64) + values[rows, second]
    return np.stack([values, markers], axis=-1), adding_classes(total, n_classes)


def load_adding(*, length: int = 30, n_classes: int = 8, n_train: int = 5000, n_val: int = 2000,
                n_test: int = 2000, seed: int = 0) -> Dataset:
    """The adding problem with ``length`` steps as an ``n_classes``-way classification (module docstring).

    Args:
      length: steps per sequence (≥ 2: one marker in each half).
      n_classes: equal-probability classes of the marked sum (≥ 2).
      n_train, n_val, n_test: split sizes (train and val ≥ 1, test ≥ 0).
      seed: fixes every split.
    """
    length = check_int("length", length, minimum=2)
    n_classes = check_int("n_classes", n_classes, minimum=2)
    sizes = {"train": check_int("n_train", n_train, minimum=1), "val": check_int("n_val", n_val, minimum=1),
             "test": check_int("n_test", n_test, minimum=0)}
    seed = check_int("seed", seed, minimum=0)
    splits = [_split(n, length, n_classes, np.random.default_rng((seed, i))) for i, n in enumerate(sizes.values())]
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = splits
    return Dataset("adding", x_train, y_train, x_val, y_val, x_test, y_test, n_classes=n_classes)
