"""The README's settings reference is the generated one, and every declared NTK option validates."""

from __future__ import annotations

from pathlib import Path

from ntksearch.proxies import NTKOptions
from ntksearch.search import load_experiment
from ntksearch.search.reference import BEGIN, END, reference_table, update_reference
from tests.search.helpers import write_experiment

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_is_generated_from_the_declarations() -> None:
    text = README.read_text()
    assert update_reference(text) == text, "run: python -m ntksearch.search.reference README.md"
    assert f"{BEGIN}\n{reference_table()}\n{END}" in text


def test_every_ntk_option_of_the_python_api_is_accepted_in_a_config(tmp_path: Path) -> None:
    options = {"method": "hutch++", "rtol": 0.01, "max_matvecs": 1024, "sketch_size": 48, "lanczos_iters": 30,
               "lanczos_rtol": 1e-4, "compile_mode": "fast"}
    assert set(options) == set(NTKOptions.__dataclass_fields__)
    experiment = load_experiment(write_experiment(tmp_path, scoring={"ntk": options}))
    assert experiment.scoring.ntk == NTKOptions(**options)
