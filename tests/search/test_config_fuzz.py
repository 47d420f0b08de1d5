"""Random and randomly edited experiment configs: load_experiment returns an Experiment or raises a
ConfigError naming the config (or its space) file and a key path, never another exception."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ntksearch.search import load_experiment
from ntksearch.search.preflight import check_output
from tests.fuzz import documents, edited, loaded_or_config_error, yaml_texts
from tests.search.helpers import tiny_experiment, write_space

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


# The tiny test config and the shipped ones, each reading ``space.yaml`` next to it (outputs: never written).
VALID = [tiny_experiment(Path("unused")), *({**yaml.safe_load(path.read_text()), "space": "space.yaml"}
                                            for path in sorted(EXPERIMENTS.glob("*.yaml")))]


def _load(folder: Path, text: str):
    write_space(folder)
    path = folder / "experiment.yaml"
    path.write_text(text)
    experiment = loaded_or_config_error(load_experiment, path, path, folder / "space.yaml")
    if experiment is not None:
        experiment.make_sampler()
        loaded_or_config_error(lambda _: check_output(experiment, create=False), path)
    return experiment


@FUZZ
@given(data=st.data())
def test_random_experiment_documents(tmp_path: Path, data: st.DataObject) -> None:
    document = data.draw(st.one_of(documents(), edited(data.draw(st.sampled_from(VALID)))))
    _load(tmp_path, yaml.safe_dump(document, allow_unicode=True))


@FUZZ
@given(data=st.data())
def test_random_experiment_yaml_text(tmp_path: Path, data: st.DataObject) -> None:
    _load(tmp_path, data.draw(yaml_texts(data.draw(st.sampled_from(VALID)))))
