"""The ground-truth builder (experiments/groundtruth/build.py): CSV schema, exact points, resumability."""

from __future__ import annotations

import csv
import importlib
import json
import sys
from pathlib import Path

import pytest

from ntksearch.spaces import load_space

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--task", "digits", "--n-mlp", "1", "--n-cnn", "1", "--n-rnn", "0", "--seeds", "0", "--epochs", "1",
        "--max-train", "256", "--max-val", "100", "--max-test", "100"]


def _load_builder():
    """``experiments/groundtruth/build.py`` as the module ``groundtruth.build`` (importable by spawned workers)."""
    if str(ROOT / "experiments") not in sys.path:
        sys.path.insert(0, str(ROOT / "experiments"))
    return importlib.import_module("groundtruth.build")


build = _load_builder()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_builds_rows_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "gt.csv"
    log: list[str] = []
    assert build.main([*TINY, "--out", str(out)], log=log.append) == 0
    rows = _rows(out)
    with out.open(newline="") as f:
        assert next(csv.reader(f)) == build.COLUMNS
    assert [(r["family"], r["arch_id"], r["seed"]) for r in rows] == [("mlp", "mlp-0000", "0"),
                                                                        ("cnn", "cnn-0000", "0")]
    for row in rows:
        assert row["error"] == "" and row["dataset"] == "digits"
        assert 0.0 <= float(row["val_accuracy"]) <= 1.0 and 0.0 <= float(row["test_accuracy"]) <= 1.0
        assert int(row["n_params"]) > 0 and int(row["flops"]) > 0 and int(row["steps"]) == 2  # 256 // 128
        assert row["diverged"] in ("True", "False") and float(row["final_train_loss"]) > 0
        assert len(json.loads(row["val_curve"])) == 1 and float(row["train_seconds"]) > 0
        space = load_space(build.SPACES_DIR / f"{row['family']}.yaml")
        assert space.point_from_params(json.loads(row["params_json"])).arch == json.loads(row["arch_json"])
    assert len({r["recipe_hash"] for r in rows}) == 1
    assert any("0 already done, 2 to train" in line for line in log)

    # a second run finds every row done and trains nothing
    log.clear()
    before = out.read_text()
    assert build.main([*TINY, "--out", str(out)], log=log.append) == 0
    assert out.read_text() == before
    assert any("2 already done, 0 to train" in line for line in log)


def test_rows_of_another_recipe_are_moved_aside(tmp_path: Path) -> None:
    out = tmp_path / "gt.csv"
    rows = [{"family": "mlp", "arch_id": "mlp-0000", "seed": 0, "recipe_hash": h, "params_json": "{}"}
            for h in ("current", "old")]
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=build.COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert build.read_done(out, "current") == {("mlp", "mlp-0000", 0, "current", "{}", "")}
    assert [r["recipe_hash"] for r in _rows(out)] == ["current"]
    assert [r["recipe_hash"] for r in _rows(out.with_suffix(".stale.csv"))] == ["old"]


def test_sampling_is_stable_and_spread() -> None:
    first = build.sample_architectures("mlp", 3)
    again = build.sample_architectures("mlp", 5)[:3]
    assert first == again  # asking for more keeps the first ones
    depths = {a["arch"]["depth"] for a in build.sample_architectures("mlp", 40)}
    assert len(depths) >= 4
    assert build.recipe_hash(build.recipe("digits")) != build.recipe_hash(build.recipe("digits", {"epochs": 1}))


def test_recipes_of_the_first_tables_keep_their_hash() -> None:
    # the committed tables were built under these hashes; a refactor of the builder must not orphan them
    assert build.recipe_hash(build.recipe("fashion_mnist")) == "7490a6c18834"
    assert build.recipe_hash(build.recipe("digits")) == "8f3f96abf25a"
    hashes = {build.recipe_hash(build.recipe(task)) for task in build.TASKS}
    assert len(hashes) == len(build.TASKS)  # every task is its own recipe


def test_hyperparameter_variants_are_rows(tmp_path: Path) -> None:
    out = tmp_path / "hp.csv"
    args = ["--task", "digits_hp", "--n-mlp", "1", "--n-cnn", "0", "--seeds", "0", "--epochs", "1",
            "--max-train", "256", "--max-val", "100", "--max-test", "100", "--out", str(out)]
    assert build.main(args, log=lambda _: None) == 0
    rows = _rows(out)
    variants = build.TASKS["digits_hp"].variants
    assert len(rows) == len(variants) == len(build.HP_LEARNING_RATES) * len(build.HP_INIT_SCALES)
    assert {(float(r["learning_rate"]), float(r["init_scale"])) for r in rows} == {
        (v["learning_rate"], v["init_scale"]) for v in variants}
    # the init scale override reaches the model: the same architecture at two scales has different losses
    by_scale = {float(r["init_scale"]): float(r["final_train_loss"]) for r in rows
                if float(r["learning_rate"]) == build.HP_LEARNING_RATES[0]}
    assert len(set(by_scale.values())) == 2
    log: list[str] = []
    assert build.main(args, log=log.append) == 0
    assert any("8 already done, 0 to train" in line for line in log)


def test_adding_task_trains_sequence_models(tmp_path: Path) -> None:
    out = tmp_path / "adding.csv"
    args = ["--task", "adding", "--n-mlp", "0", "--n-rnn", "0", "--n-cnn", "1", "--seeds", "0", "--epochs", "1",
            "--max-train", "256", "--max-val", "100", "--max-test", "100", "--out", str(out)]
    assert build.main(args, log=lambda _: None) == 0
    (row,) = _rows(out)
    assert row["dataset"] == "adding" and row["error"] == "" and int(row["steps"]) == 2
    rec = build.recipe("adding")
    assert rec["loader"] == build.TASKS["adding"].loader  # the loader options are part of the recipe
    assert build._dataset(rec).input_shape == (rec["loader"]["length"], 2)


@pytest.mark.slow
def test_two_spawned_workers(tmp_path: Path) -> None:
    out = tmp_path / "gt.csv"
    assert build.main([*TINY, "--out", str(out), "--workers", "2"], log=lambda _: None) == 0
    assert sorted(r["arch_id"] for r in _rows(out)) == ["cnn-0000", "mlp-0000"]
