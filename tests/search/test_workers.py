"""Several `ntksearch worker` processes share one Optuna study in a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ntksearch.report import leaderboard_frame
from ntksearch.search import attrs
from tests.postgres import PostgresUnavailable, postgres_server
from tests.search.helpers import write_experiment

TRIALS = 9


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    try:
        server = postgres_server()
        url = server.__enter__()
    except PostgresUnavailable as exc:
        if os.environ.get("NTKSEARCH_REQUIRE_POSTGRES"):  # CI installs the server: missing it is a failure there
            raise
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


def test_three_workers_share_one_postgres_study(tmp_path: Path, postgres_url: str) -> None:
    config = write_experiment(tmp_path, trials=TRIALS, storage=postgres_url, study="shared",
                              sampler={"name": "random"})
    cmd = [sys.executable, "-m", "ntksearch.cli", "worker", str(config), "--quiet"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for _ in range(3)]
    outs = [proc.communicate(timeout=900) for proc in procs]
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-3000:]

    # what each worker says it finished, from its own output
    reported = [{int(n) for n in re.search(r"finished trials \[([^\]]*)\]", out).group(1).split(",") if n.strip()}
                for out, _ in outs]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = study.get_trials()
    numbers = [t.number for t in trials]

    assert all(t.state == TrialState.COMPLETE for t in trials)  # none left running, none lost
    assert len(set(numbers)) == len(numbers)
    # the target is reached; workers that finish together may each add the trial they were running
    assert TRIALS <= len(trials) <= TRIALS + 2
    assert sum(len(r) for r in reported) == len(trials)  # the workers' results are disjoint ...
    assert set().union(*reported) == set(numbers)  # ... and together they are the study
    pid_of = {n: proc.pid for proc, mine in zip(procs, reported, strict=True) for n in mine}
    assert all(int(t.user_attrs[attrs.WORKER].rsplit(":", 1)[1]) == pid_of[t.number] for t in trials)
    assert sum(bool(r) for r in reported) >= 2  # the work was shared
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == len(trials)  # no candidate twice

    frame = leaderboard_frame(study)  # the leaderboard read back from the database
    assert sorted(frame["trial"]) == sorted(numbers)
    by_trial = {t.number: t.value for t in trials}
    column = frame.attrs["objectives"][0]
    assert all(row[column] == by_trial[row["trial"]] for _, row in frame.iterrows())
