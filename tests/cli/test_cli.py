"""The command line: run, leaderboard, score, validate, exit codes, and resume after a killed process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from ntksearch.cli import CACHE_ENV, main
from tests.search.helpers import write_experiment, write_space

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_compilation_cache(monkeypatch) -> None:
    """In-process runs must not switch on JAX's persistent cache for the whole test session."""
    monkeypatch.setenv(CACHE_ENV, "")


def _study(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")


def test_help_has_examples(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "ntksearch run experiments/quickstart.yaml" in out and "exit codes" in out
    assert main(["run", "--help"]) == 0 and "--resume" in capsys.readouterr().out


def test_bad_arguments_exit_2(capsys) -> None:
    assert main([]) == 2
    assert main(["run"]) == 2
    assert main(["run", "x.yaml", "--n-trials", "0"]) == 2
    assert main(["score", "x.yaml"]) == 2  # needs --trial or --params


def test_validate(tmp_path: Path, capsys) -> None:
    good = write_experiment(tmp_path)
    space = tmp_path / "space.yaml"
    bad = write_experiment(tmp_path, "bad.yaml", sampler="annealing")
    shipped = sorted((REPO / "experiments").glob("*.yaml")) + sorted((REPO / "search_spaces").glob("*.yaml"))
    assert main(["validate", str(good), str(space), *map(str, shipped)]) == 0
    out = capsys.readouterr().out
    assert f"OK {good}: experiment tiny" in out and f"OK {space}: search space, family mlp" in out
    assert main(["validate", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert f"OK {good}" in captured.out
    assert f"INVALID {bad}: sampler: 'annealing' is not allowed; choose one of: cmaes, gp, grid" in captured.err


def test_malformed_config_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["run", str(write_experiment(tmp_path, trials=0))]) == 2
    assert "trials: 0 is below the minimum 1" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "absent.yaml")]) == 2


def test_missing_dataset_exits_3(tmp_path: Path, capsys) -> None:
    config = write_experiment(tmp_path, dataset={"name": "fashion_mnist", "root": "nowhere"})
    assert main(["run", str(config)]) == 3
    assert "dataset-fashion-mnist" in capsys.readouterr().err


def test_unreachable_storage_exits_4(tmp_path: Path, capsys) -> None:
    config = write_experiment(tmp_path)
    assert main(["run", str(config), "--storage", "postgresql+psycopg2://u:p@127.0.0.1:1/db"]) == 4
    assert "cannot open storage" in capsys.readouterr().err


def test_run_leaderboard_and_score(tmp_path: Path, capsys) -> None:
    config = write_experiment(tmp_path, trials=3, confirm={"top_k": 1, "random_k": 1, "max_train": 100, "epochs": 1})
    run_dir = tmp_path / "run"
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    assert "[3/3]" in out and "cand/s" in out and "confirm [2/2]" in out
    assert f"optuna-dashboard sqlite:///{run_dir / 'study.db'}" in out
    assert (run_dir / "leaderboard" / "leaderboard.html").is_file()
    study = _study(run_dir)
    assert len(study.trials) == 3 and len([k for k in study.user_attrs if k.startswith("confirm:")]) == 2

    assert main(["run", str(config)]) == 4  # the study exists: --resume needed
    assert "pass --resume" in capsys.readouterr().err

    out_dir = tmp_path / "board"
    assert main(["leaderboard", str(run_dir), "--out", str(out_dir)]) == 0
    capsys.readouterr()
    csv = pd.read_csv(out_dir / "leaderboard.csv")
    assert len(csv) == 3 and csv["val_accuracy"].notna().sum() == 2
    assert pd.read_parquet(out_dir / "leaderboard.parquet")["trial"].tolist() == csv["trial"].tolist()
    assert pd.read_json(out_dir / "leaderboard.json")["trial"].tolist() == csv["trial"].tolist()
    assert "| rank | trial | state |" in (out_dir / "leaderboard.md").read_text()
    page = (out_dir / "leaderboard.html").read_text()
    assert "<svg" in page and not re.search(r"<script[^>]+src=[\"']?https?:", page)

    assert main(["leaderboard", "--storage", f"sqlite:///{run_dir / 'study.db'}", "--study", "tiny",
                 "--format", "csv", "--out", str(tmp_path / "b2")]) == 0
    assert [p.name for p in (tmp_path / "b2").iterdir()] == ["leaderboard.csv"]  # 2 confirmed: no quality
    assert main(["leaderboard", str(tmp_path)]) == 2  # not a run folder
    assert main(["leaderboard", "--storage", f"sqlite:///{run_dir / 'study.db'}", "--study", "nope"]) == 4
    capsys.readouterr()

    trial = study.trials[1]
    assert main(["score", str(config), "--trial", "1"]) == 0
    out = capsys.readouterr().out
    assert f"default score {trial.value:.6g}" in out and "ntk_effective_rank" in out
    assert main(["score", str(config), "--params", json.dumps(trial.params)]) == 0
    assert "default score" in capsys.readouterr().out
    assert main(["score", str(config), "--params", "{not json"]) == 2
    assert main(["score", str(config), "--params", '{"init_scale": 9.0}']) == 2
    assert "outside" in capsys.readouterr().err
    assert main(["score", str(config), "--trial", "99"]) == 2


def test_worker_joins_the_study(tmp_path: Path, capsys) -> None:
    config = write_experiment(tmp_path, trials=2, storage=f"journal:{tmp_path / 'shared.log'}")
    assert main(["worker", str(config), "--quiet"]) == 0
    assert main(["worker", str(config), "--quiet"]) == 0  # nothing left: stops at the study's total
    assert "holds 2 finished trials" in capsys.readouterr().out


def test_resume_after_a_killed_process(tmp_path: Path) -> None:
    """kill -9 a run after some trials, resume it: the total is reached, nothing is lost or repeated."""
    write_space(tmp_path)
    config = write_experiment(tmp_path, trials=12)
    run_dir = tmp_path / "run"
    env = {**os.environ, CACHE_ENV: str(tmp_path / "jax-cache")}  # the resumed process reuses compiled code
    command = [sys.executable, "-m", "ntksearch.cli", "run", str(config), "--quiet"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        before = _wait_for_complete(run_dir, process, at_least=3)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    study = _study(run_dir)
    running = [t.params for t in study.trials if t.state == TrialState.RUNNING]
    completed_before = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}
    assert len(completed_before) >= len(before) >= 3

    result = subprocess.run([*command, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    study = _study(run_dir)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.FAIL) == 12
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    scales = [t.params["init_scale"] for t in complete]
    assert len(scales) == len(set(scales))  # no candidate ran twice
    assert {n: v for n, v in ((t.number, t.values) for t in complete) if n in completed_before} == completed_before
    for params in running:  # the interrupted trial was failed and its candidate ran again
        assert not params or params in [t.params for t in complete]
    assert states.count(TrialState.FAIL) == len(running)
    assert (run_dir / "leaderboard" / "leaderboard.csv").is_file()


def _wait_for_complete(run_dir: Path, process: subprocess.Popen, *, at_least: int, timeout: float = 240
                       ) -> list[int]:
    """Poll the run's study until ``at_least`` trials completed; their numbers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.stdout.read().decode()}")
        if (run_dir / "run.json").is_file():  # written once the study exists
            try:
                done = [t.number for t in _study(run_dir).get_trials(states=(TrialState.COMPLETE,))]
            except Exception:  # the study is being created, or the database is locked for a moment
                done = []
            if len(done) >= at_least:
                return done
        time.sleep(0.05)
    raise AssertionError("no progress before the timeout")
