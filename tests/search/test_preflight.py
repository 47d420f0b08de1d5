"""Pre-flight checks: sizes against the dataset and the output folder, before the first trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from ntksearch.data import load_dataset
from ntksearch.search import load_experiment, run_search
from ntksearch.search.preflight import check_dataset_fit, check_output
from ntksearch.validation import ConfigError
from tests.search.helpers import write_experiment


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize(
    ("overrides", "key_path", "fragment"),
    [
        ({"scoring": {"batch_size": 5000}}, "scoring.batch_size",
         "5000 is larger than the training split of digits (1257 examples)"),
        ({"scoring": {"batch_size": 16, "ntk": {"method": "exact", "max_matvecs": 100}}}, "scoring.ntk.max_matvecs",
         "too few for method exact on a scoring batch of 16 × 10 outputs"),
        ({"confirm": {"max_train": 5}}, "confirm.max_train", "5 is fewer than the 10 classes of digits"),
        ({"confirm": {"max_val": 9}}, "confirm.max_val", "9 is fewer than the 10 classes"),
    ],
)
def test_sizes_that_do_not_fit_the_dataset(tmp_path: Path, digits, overrides, key_path, fragment) -> None:
    path = write_experiment(tmp_path, **overrides)
    experiment = load_experiment(path)
    with pytest.raises(ConfigError) as info:
        check_dataset_fit(experiment, digits)
    assert (info.value.file, info.value.key_path) == (str(path), key_path) and fragment in info.value.message


def test_sizes_that_fit(tmp_path: Path, digits) -> None:
    check_dataset_fit(load_experiment(write_experiment(tmp_path, scoring={"batch_size": 1257}, confirm={
        "max_train": 10, "max_val": None})), digits)
    check_dataset_fit(load_experiment(write_experiment(tmp_path, scoring={"batch_size": 16, "ntk": {
        "method": "exact", "max_matvecs": 322}})), digits)


def test_run_search_checks_before_the_study_exists(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(tmp_path, scoring={"batch_size": 5000}))
    with pytest.raises(ConfigError, match=r"scoring\.batch_size: 5000 is larger"):
        run_search(experiment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("output", ["a-file/run", "/proc/x"])  # a file in the way; a folder no one may write
def test_unwritable_output(tmp_path: Path, output: str) -> None:
    (tmp_path / "a-file").write_text("")
    experiment = load_experiment(write_experiment(tmp_path, output=str(tmp_path / output)))
    for create in (False, True):
        with pytest.raises(ConfigError) as info:
            check_output(experiment, create=create)
        assert info.value.key_path == "output"
        assert info.value.message.startswith(f"cannot write the output folder {tmp_path / output}: ")


def test_writable_output(tmp_path: Path) -> None:
    writable = load_experiment(write_experiment(tmp_path, output=str(tmp_path / "new" / "run")))
    files = set(tmp_path.rglob("*"))
    check_output(writable, create=False)
    assert set(tmp_path.rglob("*")) == files  # validation leaves nothing behind
    check_output(writable, create=True)
    assert (tmp_path / "new" / "run").is_dir() and not any((tmp_path / "new" / "run").iterdir())
