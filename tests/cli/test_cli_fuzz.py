"""The command line on fuzzed files, parameters and arguments: a user error is one line on stderr and an exit
code of 2-5, never a Python traceback, and nothing is created."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ntksearch.cli import CACHE_ENV, EXIT_CODES, main
from ntksearch.search import load_experiment
from ntksearch.validation import ConfigError
from tests.fuzz import documents, edited, yaml_texts
from tests.search.helpers import TINY_SPACE, tiny_experiment, write_experiment, write_space

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
USER_ERRORS = {EXIT_CODES[k] for k in ("invalid", "dataset", "storage", "failed")}


@pytest.fixture(autouse=True)
def no_compilation_cache(monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, "")


def _cli(argv: list[str]) -> tuple[int, str]:
    """Exit code and everything printed."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    printed = out.getvalue() + err.getvalue()
    assert "Traceback" not in printed, printed
    return code, printed


def _before(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@FUZZ
@given(data=st.data())
def test_validate_and_run_fuzzed_files(tmp_path: Path, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["space", "experiment"]))
    write_space(tmp_path)
    valid = TINY_SPACE if kind == "space" else tiny_experiment(tmp_path / "out")
    document = data.draw(st.one_of(documents(), edited(valid)))
    text = data.draw(st.one_of(st.just(yaml.safe_dump(document, allow_unicode=True)), yaml_texts(valid)))
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    files = _before(tmp_path)
    code, printed = _cli(["validate", str(path)])
    assert code in (EXIT_CODES["ok"], EXIT_CODES["invalid"]), printed
    assert (code == EXIT_CODES["ok"]) == printed.startswith(f"OK {path}: "), printed
    if kind == "experiment":
        try:
            load_experiment(path)
        except ConfigError as exc:  # run and score stop where validate did, having done nothing
            for command in (["run", str(path)], ["score", str(path), "--params", "{}"]):
                assert _cli(command) == (EXIT_CODES["invalid"], f"ntksearch: error: {exc}\n")
    assert _before(tmp_path) == files


PARAM_NAMES = st.sampled_from(["init_scale", "depth", "width_0", "x", ""])


@FUZZ
@given(params=st.one_of(st.dictionaries(PARAM_NAMES, documents(depth=0), max_size=3).map(json.dumps),
                        documents().map(json.dumps), st.text(max_size=20)))
def test_score_fuzzed_params(tmp_path: Path, params: str) -> None:
    config = write_experiment(tmp_path)
    code, printed = _cli(["score", str(config), "--params", params])
    assert code == EXIT_CODES["ok"] or code in USER_ERRORS, printed
    assert code == EXIT_CODES["ok"] or re.match(r"ntksearch( score)?: error: ", printed.splitlines()[-1]), printed


@FUZZ
@given(data=st.data())
def test_fuzzed_arguments(tmp_path: Path, data: st.DataObject) -> None:
    config = write_experiment(tmp_path)
    tokens = ["validate", "score", "leaderboard", "--trial", "--params", "--storage", "--study", "--format", "--out",
              "csv", "html", "0", "-1", "x", "{}", "[]", str(config), str(tmp_path), str(tmp_path / "absent.yaml"),
              f"sqlite:///{tmp_path / 'absent.db'}", f"journal:{tmp_path / 'absent.log'}", "redis://x", "tiny"]
    argv = data.draw(st.lists(st.one_of(st.sampled_from(tokens), st.text(max_size=6)), max_size=7))
    files = _before(tmp_path)
    code, printed = _cli(argv)
    assert code == EXIT_CODES["ok"] or code in USER_ERRORS, printed
    assert _before(tmp_path) == files
