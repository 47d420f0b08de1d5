"""Fashion-MNIST from the IDX files of Debian's ``dataset-fashion-mnist`` package, decoded with numpy.

Splits: the first 50 000 of the 60 000 training images train, the last 10 000 validate (the file order is
already shuffled; every class has 955..1050 validation examples), and the official 10 000 test images are
the test split. Images are ``(N, 28, 28, 1)`` float32 in [0, 1] (bytes / 255), labels int32 in [0, 10).

The decoded arrays are cached in-process (read-only), so loading again costs only the subsampling.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import zlib
from pathlib import Path

import numpy as np

from ntksearch.data.dataset import Dataset, DatasetError, DatasetNotFoundError, check_int
from ntksearch.data.splits import subsample
from ntksearch.validation import is_file

__all__ = ["DEFAULT_ROOT", "FASHION_FILES", "FASHION_SPLIT", "load_fashion_mnist", "read_idx"]

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
FASHION_SPLIT = {"train": 50_000, "val": 10_000, "test": 10_000}

_IDX_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """Decode a gzipped IDX file of unsigned bytes (magic ``00 00 08 ndim``, big-endian uint32 dims)."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:  # unreadable, truncated, not gzip
        raise DatasetError(f"{path}: cannot read it as a gzipped IDX file ({exc})") from exc
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != _IDX_UBYTE:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {dims} = {int(np.prod(dims))} bytes, found {data.size}")
    return data.reshape(dims)


@functools.lru_cache(maxsize=2)
def _decoded(root: Path) -> dict[str, np.ndarray]:
    """All four arrays of ``root`` converted to the shared conventions, read-only (cached)."""
    missing = [name for name in FASHION_FILES.values() if not is_file(root / name)]
    if missing:
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found: {', '.join(missing)} missing in {root}. Install Debian's package "
            "with `apt-get install dataset-fashion-mnist`, or pass root=<directory with the IDX .gz files>")
    arrays = {}
    for key, name in FASHION_FILES.items():
        raw = read_idx(root / name)
        if key.startswith("x"):
            arr = np.divide(raw, np.float32(255), dtype=np.float32)[..., None]
        else:
            arr = raw.astype(np.int32)
        arr.setflags(write=False)
        arrays[key] = arr
    if arrays["x_train"].shape != (60_000, 28, 28, 1) or len(arrays["y_train"]) != 60_000:
        raise DatasetError(f"{root}: expected 60000 training images 28×28, got {arrays['x_train'].shape}")
    return arrays


def load_fashion_mnist(*, root: str | Path = DEFAULT_ROOT, max_train: int | None = None,
                       max_val: int | None = None, max_test: int | None = None, seed: int = 0,
                       downsample: int = 1) -> Dataset:
    """Fashion-MNIST with the fixed split :data:`FASHION_SPLIT`, optionally subsampled and downsampled.

    Args:
      root: directory with the four ``*-ubyte.gz`` files (:data:`FASHION_FILES`).
      max_train, max_val, max_test: keep at most this many examples of a split (stratified by class,
        deterministic for ``seed``; see :func:`ntksearch.data.splits.subsample`).
      downsample: average-pool the images over non-overlapping ``downsample × downsample`` windows (a divisor
        of 28: 1, 2, 4, 7, 14 or 28), e.g. 2 gives 14×14 images at a quarter of the convolution cost.
    Raises:
      DatasetNotFoundError: a file is missing; the message names the Debian package and the path searched.
    """
    limits = {name: check_int(name, value, minimum=1, optional=True)
              for name, value in (("max_train", max_train), ("max_val", max_val), ("max_test", max_test))}
    factor = check_int("downsample", downsample, minimum=1)
    if 28 % factor:
        raise DatasetError(f"option downsample must divide 28 (1, 2, 4, 7, 14 or 28), got {downsample!r}")
    arrays = _decoded(Path(root).expanduser().resolve())
    n_train = FASHION_SPLIT["train"]
    dataset = Dataset(
        "fashion_mnist",
        arrays["x_train"][:n_train], arrays["y_train"][:n_train],
        arrays["x_train"][n_train:], arrays["y_train"][n_train:],
        arrays["x_test"], arrays["y_test"], n_classes=10,
    )
    dataset = subsample(dataset, **limits, seed=check_int("seed", seed, minimum=0))
    if factor == 1:
        return dataset
    pooled = {f"x_{split}": _average_pool(x, factor) for split, x, _ in dataset.splits()}
    return dataclasses.replace(dataset, **pooled)


def _average_pool(x: np.ndarray, factor: int) -> np.ndarray:
    """(N, H, W, C) → (N, H/f, W/f, C): means over non-overlapping f × f windows."""
    n, h, w, c = x.shape
    return x.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4), dtype=np.float32)
