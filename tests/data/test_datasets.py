"""Datasets: shapes, dtypes, ranges, fixed deterministic splits, user files, errors, scoring batches."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ntksearch.data import (
    DATASETS,
    DIGITS_SPLIT,
    FASHION_SPLIT,
    Dataset,
    DatasetError,
    DatasetNotFoundError,
    load_dataset,
    scoring_batch,
    stratified_split,
    subsample,
)
from ntksearch.data.fashion_mnist import DEFAULT_ROOT, FASHION_FILES, read_idx

HAVE_FASHION = all((DEFAULT_ROOT / name).is_file() for name in FASHION_FILES.values())
needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION, reason=f"Fashion-MNIST IDX files not in {DEFAULT_ROOT} "
                             "(apt-get install dataset-fashion-mnist)")


def check_conventions(ds: Dataset) -> None:
    for _, x, y in ds.splits():
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape[1:] == ds.input_shape and y.shape == x.shape[:1]
        if len(x):
            assert x.min() >= 0.0 and x.max() <= 1.0
            assert y.min() >= 0 and y.max() < ds.n_classes


def fingerprints(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


# -- digits -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_digits_shapes_splits_and_stratification(digits: Dataset) -> None:
    check_conventions(digits)
    assert digits.input_shape == (8, 8, 1) and digits.n_classes == 10
    assert (len(digits.y_train), len(digits.y_val), len(digits.y_test)) == tuple(DIGITS_SPLIT.values())
    assert digits.x_train.max() == 1.0  # 16 / 16
    for y in (digits.y_val, digits.y_test):
        assert np.bincount(y, minlength=10).min() >= 26  # 270 / 10 = 27 per class, ±1
    assert "train=1257" in repr(digits)


def test_digits_split_is_deterministic_and_seeded(digits: Dataset) -> None:
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.x_val, digits.x_val)
    np.testing.assert_array_equal(again.y_test, digits.y_test)
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(other.y_val, digits.y_val)


def test_stratified_split_is_a_disjoint_partition() -> None:
    y = np.repeat(np.arange(4), [50, 30, 15, 5])
    train, val, test = stratified_split(y, 20, 10, seed=3)
    assert (len(train), len(val), len(test)) == (70, 20, 10)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val, test])), np.arange(100))
    np.testing.assert_array_equal(np.bincount(y[val]), [10, 6, 3, 1])
    again = stratified_split(y, 20, 10, seed=3)
    for a, b in zip((train, val, test), again, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(DatasetError, match="keeping a training split"):
        stratified_split(y, 60, 40, seed=0)


# -- fashion-mnist ------------------------------------------------------------------------------------------
@needs_fashion
def test_fashion_mnist_fixed_split_and_cache() -> None:
    ds = load_dataset("fashion_mnist")
    check_conventions(ds)
    assert ds.input_shape == (28, 28, 1) and ds.n_classes == 10
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == tuple(FASHION_SPLIT.values())
    raw_labels = read_idx(DEFAULT_ROOT / FASHION_FILES["y_train"])
    np.testing.assert_array_equal(ds.y_val, raw_labels[50_000:])  # validation = the last 10 000
    raw_test = read_idx(DEFAULT_ROOT / FASHION_FILES["x_test"])
    np.testing.assert_array_equal(ds.x_test[..., 0], raw_test / np.float32(255))
    start = time.perf_counter()
    again = load_dataset("fashion_mnist")
    assert time.perf_counter() - start < 0.05  # decoded arrays are cached in-process
    assert np.shares_memory(again.x_train, ds.x_train)
    assert not ds.x_train.flags.writeable


@needs_fashion
def test_fashion_mnist_subsample_is_stratified_and_deterministic() -> None:
    small = load_dataset("fashion_mnist", max_train=1000, max_val=200, max_test=100)
    check_conventions(small)
    assert (len(small.y_train), len(small.y_val), len(small.y_test)) == (1000, 200, 100)
    assert np.bincount(small.y_train, minlength=10).min() >= 98
    again = load_dataset("fashion_mnist", max_train=1000, max_val=200, max_test=100)
    np.testing.assert_array_equal(again.x_train, small.x_train)
    assert not np.array_equal(load_dataset("fashion_mnist", max_train=1000, seed=1).y_train, small.y_train)


@needs_fashion
def test_fashion_mnist_downsample_averages_windows() -> None:
    full = load_dataset("fashion_mnist", max_train=50, max_val=10, max_test=10)
    small = load_dataset("fashion_mnist", max_train=50, max_val=10, max_test=10, downsample=2)
    check_conventions(small)
    assert small.input_shape == (14, 14, 1)
    np.testing.assert_array_equal(small.y_train, full.y_train)
    np.testing.assert_allclose(small.x_val[:, 3, 5, 0], full.x_val[:, 6:8, 10:12, 0].mean(axis=(1, 2)), rtol=1e-6)
    with pytest.raises(DatasetError, match="downsample must divide 28"):
        load_dataset("fashion_mnist", downsample=3)


def test_fashion_mnist_missing_files_name_the_package(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion_mnist", root=tmp_path)
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and str(tmp_path) in message


def test_read_idx_round_trip_and_bad_magic(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + np.array(data.shape, ">u4").tobytes()
    (tmp_path / "ok.gz").write_bytes(gzip.compress(header + data.tobytes()))
    np.testing.assert_array_equal(read_idx(tmp_path / "ok.gz"), data)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(bytes([0, 0, 13, 1, 0, 0, 0, 1]) + b"\0\0\0\0"))
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(tmp_path / "bad.gz")
    (tmp_path / "short.gz").write_bytes(gzip.compress(header + data.tobytes()[:-1]))
    with pytest.raises(DatasetError, match="header says"):
        read_idx(tmp_path / "short.gz")
    for name, content in (("plain.gz", header), ("cut.gz", gzip.compress(header)[:-5])):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DatasetError, match="cannot read it as a gzipped IDX file"):
            read_idx(tmp_path / name)


def test_unusable_paths_are_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError):
        load_dataset("file", path=tmp_path / ("x" * 300 + ".npz"))  # longer than a file name may be
    with pytest.raises(DatasetNotFoundError):
        load_dataset("fashion_mnist", root=tmp_path / ("x" * 300))


# -- user files -------------------------------------------------------------------------------------------
def make_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 4, 4, 1), dtype=np.float32), rng.permutation(np.arange(n) % 3).astype(np.int64)


def test_npz_with_all_splits_round_trips(tmp_path: Path) -> None:
    (xt, yt), (xv, yv), (xs, ys) = make_images(30, 0), make_images(9, 1), make_images(6, 2)
    np.savez(tmp_path / "d.npz", x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs, y_test=ys)
    ds = load_dataset("file", path=tmp_path / "d.npz")
    check_conventions(ds)
    assert ds.name == "file:d.npz" and ds.n_classes == 3 and ds.input_shape == (4, 4, 1)
    for (_, x, y), (x0, y0) in zip(ds.splits(), ((xt, yt), (xv, yv), (xs, ys)), strict=True):
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(y, y0)


def test_npz_train_only_is_split_with_seed_and_uint8_is_scaled(tmp_path: Path) -> None:
    x, y = make_images(100, 0)
    x8 = (x * 255).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x8, y_train=y)
    ds = load_dataset("file", path=str(tmp_path / "d.npz"), val_fraction=0.2, test_fraction=0.1)
    check_conventions(ds)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (70, 20, 10)
    assert fingerprints(ds.x_val).isdisjoint(fingerprints(ds.x_train))
    assert fingerprints(ds.x_test).isdisjoint(fingerprints(ds.x_train) | fingerprints(ds.x_val))
    assert ds.x_train.max() == pytest.approx(x8.max() / 255)
    again = load_dataset("file", path=tmp_path / "d.npz", val_fraction=0.2, test_fraction=0.1)
    np.testing.assert_array_equal(again.x_val, ds.x_val)


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x_train": np.zeros((4, 2))}, "missing required array.*y_train"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(4), "x_val": np.zeros((2, 2))},
     "x_val given without y_val"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(5)}, "x_train has 4 examples but y_train has 5"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.array([0, 1, 0.5, 1])}, "integer class indices, found 0.5"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.array([0, 1, -1, 1])}, "labels must be >= 0"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(4), "x_valid": np.zeros(1)}, "unknown array.*x_valid"),
    ({"x_train": np.full((4, 2), np.nan), "y_train": np.zeros(4)}, "NaN or infinite"),
])
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=message):
        load_dataset("file", path=tmp_path / "bad.npz")


def test_csv_round_trip_with_label_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    frame["target"] = np.arange(40) % 2
    frame.to_csv(tmp_path / "t.csv", index=False)
    ds = load_dataset("file", path=tmp_path / "t.csv", label_column="target", test_fraction=0.0)
    assert ds.input_shape == (3,) and ds.n_classes == 2
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (34, 6, 0)
    rows = {tuple(np.float32(r)) for r in frame[["a", "b", "c"]].to_numpy()}
    assert {tuple(r) for r in np.concatenate([ds.x_train, ds.x_val])} == rows


@pytest.mark.parametrize(("frame", "options", "message"), [
    (pd.DataFrame({"a": [1.0, 2.0], "y": [0, 1]}), {}, "no label column 'label'.*columns: a, y"),
    (pd.DataFrame({"a": ["u", "v"], "label": [0, 1]}), {}, "feature column.*a are not numeric"),
    (pd.DataFrame({"a": [1.0, 2.0], "label": ["cat", "dog"]}), {}, "integer class indices, found 'cat'"),
    (pd.DataFrame({"a": [1.0, 2.0], "label": [0, 1]}), {"val_fraction": 1.5},
     r"val_fraction must be.*\(0, 1\)"),
])
def test_csv_errors(tmp_path: Path, frame: pd.DataFrame, options: dict, message: str) -> None:
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DatasetError, match=message):
        load_dataset("file", path=tmp_path / "bad.csv", **options)


def test_file_type_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("1,2\n")
    with pytest.raises(DatasetError, match=r"unsupported file type '\.txt'"):
        load_dataset("file", path=tmp_path / "d.txt")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset("file", path=tmp_path / "absent.npz")


@pytest.mark.parametrize(("name", "content"), [("garbage.npz", b"not a zip"), ("empty.npz", b""),
                                               ("binary.csv", bytes(range(256)) * 4), ("empty.csv", b"")])
def test_unreadable_files_are_dataset_errors(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DatasetError, match=rf"{name}: cannot read it as a \.(npz|csv) dataset"):
        load_dataset("file", path=tmp_path / name)


# -- the adding problem -----------------------------------------------------------------------------------
def test_adding_problem_sequences_and_labels() -> None:
    ds = load_dataset("adding", length=10, n_classes=4, n_train=400, n_val=100, n_test=100, seed=3)
    check_conventions(ds)
    assert ds.input_shape == (10, 2) and ds.n_classes == 4 and "adding" in repr(ds)
    markers = ds.x_train[..., 1]
    assert np.all(markers.sum(axis=1) == 2)
    assert np.all(markers[:, :5].sum(axis=1) == 1) and np.all(markers[:, 5:].sum(axis=1) == 1)
    total = (ds.x_train[..., 0] * markers).sum(axis=1)
    # classes are the quartiles of the triangular sum on [0, 2]: F(s) = s²/2 below 1
    edges = [np.sqrt(0.5), 1.0, 2.0 - np.sqrt(0.5)]
    np.testing.assert_array_equal(ds.y_train, np.searchsorted(edges, total, side="right"))
    counts = np.bincount(ds.y_train, minlength=4)
    assert counts.min() > 70  # equal-probability classes: 100 ± a few binomial standard deviations
    again = load_dataset("adding", length=10, n_classes=4, n_train=400, n_val=50, n_test=100, seed=3)
    np.testing.assert_array_equal(again.x_train, ds.x_train)  # splits do not depend on each other's size
    assert not np.array_equal(load_dataset("adding", length=10, n_classes=4, n_train=400, seed=4).x_train,
                              ds.x_train)
    with pytest.raises(DatasetError, match="length must be an integer >= 2"):
        load_dataset("adding", length=1)


# -- registry ---------------------------------------------------------------------------------------------
def test_registry_errors_list_allowed_names_and_options() -> None:
    assert set(DATASETS) == {"adding", "digits", "fashion_mnist", "file"}
    with pytest.raises(DatasetError, match="'mnist'; choose one of: adding, digits, fashion_mnist, file"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match=r"unknown option\(s\) max_trian .*allowed: root .*max_train"):
        load_dataset("fashion_mnist", max_trian=10)
    with pytest.raises(DatasetError, match=r"needs option\(s\) path"):
        load_dataset("file")
    with pytest.raises(DatasetError, match="seed must be an integer >= 0"):
        load_dataset("digits", seed=-1)
    with pytest.raises(DatasetError, match="max_train must be an integer >= 1 or None"):
        load_dataset("fashion_mnist", max_train=0)


# -- scoring batches and subsampling --------------------------------------------------------------------
def test_scoring_batch_is_balanced_and_deterministic(digits: Dataset) -> None:
    x, y = scoring_batch(digits, 64, seed=0)
    assert x.shape == (64, 8, 8, 1) and x.dtype == np.float32
    assert y.shape == (64, 10) and y.dtype == np.float32 and np.all(y.sum(1) == 1)
    assert sorted(y.sum(0)) == [6] * 6 + [7] * 4
    x2, y2 = scoring_batch(digits, 64, seed=0)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(scoring_batch(digits, 64, seed=1)[0], x)
    with pytest.raises(DatasetError, match=r"must be in \[1, 1257\]"):
        scoring_batch(digits, 5000, seed=0)


def test_scoring_batch_fills_from_larger_classes_when_one_is_small() -> None:
    y = np.repeat(np.arange(3), [2, 20, 20]).astype(np.int32)
    x = np.arange(42, dtype=np.float32)[:, None] / 42
    ds = Dataset("tiny", x, y, x[:3], y[:3], x[:0], y[:0], n_classes=3)
    _, onehot = scoring_batch(ds, 20, seed=0)
    np.testing.assert_array_equal(onehot.sum(0), [2, 9, 9])
    _, onehot = scoring_batch(ds, 42, seed=0)
    np.testing.assert_array_equal(onehot.sum(0), [2, 20, 20])


def test_subsample_keeps_small_splits_and_validates(digits: Dataset) -> None:
    assert subsample(digits) is digits
    small = subsample(digits, max_train=100, max_val=10**6)
    assert len(small.y_train) == 100 and small.x_val is digits.x_val
    np.testing.assert_array_equal(np.bincount(small.y_train), [10] * 10)


def test_dataset_rejects_wrong_dtypes() -> None:
    x, y = np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1], np.int32)
    with pytest.raises(DatasetError, match="x_train must be float32"):
        Dataset("bad", x.astype(np.float64), y, x, y, x, y, n_classes=2)
    with pytest.raises(DatasetError, match="labels outside"):
        Dataset("bad", x, y, x, y + 1, x, y, n_classes=2)
    with pytest.raises(DatasetError, match="val split is empty"):
        Dataset("bad", x, y, x[:0], y[:0], x, y, n_classes=2)
