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
from tests.search.helpers import TINY_SPACE, write_experiment

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
    assert main(["run", "x.yaml", "--threads", "0"]) == 2
    assert main(["run", "x.yaml", "--processes", "0"]) == 2
    assert main(["run", "x.yaml", "--threads", "2", "--processes", "2"]) == 2  # one or the other
    assert main(["worker", "x.yaml", "--processes", "2"]) == 2  # a worker is one process
    assert main(["worker", "x.yaml", "--threads", "two"]) == 2
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


@pytest.mark.parametrize(
    ("overrides", "key_path"),
    [
        ({"scoring": {"batch_size": 5000}}, "scoring.batch_size"),
        ({"scoring": {"batch_size": 1}}, "scoring.batch_size"),
        ({"scoring": {"ntk": {"max_matvecs": 2}}}, "scoring.ntk.max_matvecs"),
        ({"scoring": {"batch_size": 16, "ntk": {"method": "exact", "max_matvecs": 64}}}, "scoring.ntk.max_matvecs"),
        ({"confirm": {"max_train": 3}}, "confirm.max_train"),
        ({"output": "blocker/run"}, "output"),
    ],
    ids=["batch-too-large", "batch-of-one", "budget", "exact-budget", "confirm-size", "unwritable-output"],
)
def test_what_would_fail_later_is_invalid_in_validate_and_run(tmp_path: Path, capsys, overrides, key_path) -> None:
    (tmp_path / "blocker").write_text("a file where the output folder should go")
    if "output" in overrides:
        overrides = {"output": str(tmp_path / overrides["output"])}
    config = write_experiment(tmp_path, **overrides)
    assert main(["validate", str(config)]) == 2
    assert f"INVALID {config}: {key_path}: " in capsys.readouterr().err
    score = [["score", str(config), "--params", '{"init_scale": 1.0}']] if key_path != "output" else []  # no output
    for command in (["run", str(config)], *score):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"ntksearch: error: {config}: {key_path}: " in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_run_whose_every_trial_failed_exits_5(tmp_path: Path, capsys) -> None:
    space = {"family": "mlp", "hyperparameters": {"depth": 1, "width": 16, "init_scale": {
        "type": "float", "low": 1.0e30, "high": 1.0e31}}}  # non-finite logits: every candidate fails
    config = write_experiment(tmp_path, space_doc=space, trials=2)
    assert main(["run", str(config)]) == 5
    captured = capsys.readouterr()
    assert "no trial completed: 2 of 2 failed (2 × non-finite model: apply_fn(params, x) returned" in captured.err
    assert (tmp_path / "run" / "leaderboard" / "leaderboard.csv").is_file()  # the reasons are in the leaderboard
    assert main(["score", str(config), "--trial", "0"]) == 5
    captured = capsys.readouterr()
    assert "ntksearch: error: candidate 0 failed: non-finite model:" in captured.err
    assert "default score" not in captured.out


def test_an_output_folder_is_not_reused_for_another_study(tmp_path: Path, capsys) -> None:
    config = write_experiment(tmp_path, trials=2)
    run_dir = tmp_path / "run"
    assert main(["run", str(config), "--quiet"]) == 0
    run_file = (run_dir / "run.json").read_text()
    board = (run_dir / "leaderboard" / "leaderboard.csv").read_text()
    (run_dir / "leaderboard" / "proxy_quality.csv").write_text("stale")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert main(["run", str(config), "--storage", other, "--quiet"]) == 4
    err = capsys.readouterr().err
    assert f"{run_dir} holds the results of study 'tiny' in sqlite:///{run_dir / 'study.db'}" in err
    assert "--overwrite" in err
    assert (run_dir / "run.json").read_text() == run_file
    assert (run_dir / "leaderboard" / "leaderboard.csv").read_text() == board
    assert not (tmp_path / "other.db").exists()

    assert main(["run", str(config), "--storage", other, "--n-trials", "1", "--overwrite", "--quiet"]) == 0
    assert json.loads((run_dir / "run.json").read_text())["storage"] == other
    assert len(pd.read_csv(run_dir / "leaderboard" / "leaderboard.csv")) == 1
    assert not (run_dir / "leaderboard" / "proxy_quality.csv").exists()
    assert len(_study(run_dir).trials) == 2  # the first study is another storage's: kept as it was

    assert main(["run", str(config), "--quiet", "--overwrite"]) == 0  # start over in the original storage
    assert len(_study(run_dir).trials) == 2
    assert main(["run", str(config), "--resume", "--overwrite"]) == 2  # one or the other
    capsys.readouterr()


def test_score_of_a_trial_without_a_study_creates_nothing(tmp_path: Path, capsys) -> None:
    config = write_experiment(tmp_path)
    assert main(["score", str(config), "--trial", "0"]) == 4
    assert "no study 'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_run_with_worker_processes(tmp_path: Path, capsys) -> None:
    config = write_experiment(tmp_path, trials=3, threads=2)  # --processes overrides threads:
    assert main(["run", str(config), "--processes", "2", "--no-confirm"]) == 0
    assert "[3/3]" in capsys.readouterr().out
    assert [t.state for t in _study(tmp_path / "run").trials] == [TrialState.COMPLETE] * 3


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
    assert f"default score {trial.value:.6g}" in out and "ntk_complexity" in out
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


@pytest.mark.parametrize(("stop", "reason"), [(signal.SIGKILL, "interrupted: its process was killed or died"),
                                             (signal.SIGINT, "interrupted by Ctrl-C (SIGINT)")])
def test_resume_after_an_interrupted_process(tmp_path: Path, stop: signal.Signals, reason: str) -> None:
    """kill -9 or Ctrl-C a run after some trials, resume it: the interrupted trial is retried, says what happened,
    the total is reached, nothing is lost or repeated."""
    # every candidate a new width, so every trial compiles (≈ 0.5 s): the run is still searching when the
    # signal comes after 3 trials, however fast a cached program would score them
    space = {**TINY_SPACE, "hyperparameters": {**TINY_SPACE["hyperparameters"],
                                               "width": {"type": "int", "low": 8, "high": 256}}}
    total = 12
    config = write_experiment(tmp_path, trials=total, space_doc=space)
    run_dir = tmp_path / "run"
    env = {**os.environ, CACHE_ENV: str(tmp_path / "jax-cache")}  # the resumed process reuses compiled code
    command = [sys.executable, "-m", "ntksearch.cli", "run", str(config), "--quiet"]
    process = subprocess.Popen(command, cwd=REPO, env={**env, "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, preexec_fn=_deliverable_sigint)
    try:
        before = _wait_for_complete(run_dir, process, at_least=3)
    finally:
        process.send_signal(stop)
        returncode = _wait_or_dump(process, timeout=60)
    assert returncode == (-signal.SIGKILL if stop == signal.SIGKILL else 130)
    study = _study(run_dir)
    interrupted = {t.number: t.params for t in study.trials
                   if t.state == TrialState.RUNNING or f"interrupted:{t.number}" in study.user_attrs}
    assert stop == signal.SIGKILL or not any(t.state == TrialState.RUNNING for t in study.trials)
    completed_before = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}
    assert len(completed_before) >= len(before) >= 3

    result = subprocess.run([*command, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    study = _study(run_dir)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.FAIL) == total
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    scales = [t.params["init_scale"] for t in complete]
    assert len(scales) == len(set(scales))  # no candidate ran twice
    assert {n: v for n, v in ((t.number, t.values) for t in complete) if n in completed_before} == completed_before
    assert states.count(TrialState.FAIL) == len(interrupted)
    board = pd.read_csv(run_dir / "leaderboard" / "leaderboard.csv").set_index("trial")
    for number, params in interrupted.items():  # the interrupted trial failed and its candidate ran again
        retry = next(t for t in complete if t.system_attrs.get("failed_trial") == number)
        # a process killed while its trial was still sampling leaves only the parameters drawn so far (seen:
        # init_scale without width); the retry keeps them and draws the rest
        assert params.items() <= retry.params.items()
        assert board.loc[number, "fail_reason"] == f"{reason}; retried as trial {retry.number}"


def _deliverable_sigint() -> None:
    """In the child, before exec: SIGINT unblocked and at its default disposition, whatever the test process
    inherited (an ignored or blocked signal stays so across exec, and Python then raises no KeyboardInterrupt)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_or_dump(process: subprocess.Popen, *, timeout: float) -> int:
    """``process.wait(timeout)``; a process still running then is aborted and the failure shows its threads'
    Python stacks (``PYTHONFAULTHANDLER`` dumps them on SIGABRT), so a hang says where it hung."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        out = process.communicate(timeout=30)[0].decode(errors="replace")
        raise AssertionError(f"the run did not exit within {timeout} s of the signal; its stacks:\n{out[-8000:]}"
                             ) from None


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
