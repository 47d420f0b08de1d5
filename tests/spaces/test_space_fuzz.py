"""Random and randomly edited search-space files: load_space returns a usable space or raises a ConfigError
naming the file and a key path, never another exception."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ntksearch.spaces import SearchSpace, load_space
from ntksearch.validation import ConfigError
from tests.fuzz import documents, edited, loaded_or_config_error, yaml_texts
from tests.search.helpers import TINY_SPACE

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
VALID = [TINY_SPACE, *(yaml.safe_load(path.read_text()) for path in sorted(SPACES.glob("*.yaml")))]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


def _exercise(space: SearchSpace, params: dict) -> None:
    """A loaded space samples points through Optuna, rebuilds them from their params and takes any params
    dict with a point or a ConfigError."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(2):
        point = space.sample(study.ask())
        assert space.point_from_params(point.params) == point
    try:
        space.point_from_params(params)
    except ConfigError as exc:
        assert exc.key_path.startswith("params."), str(exc)


@FUZZ
@given(data=st.data())
def test_random_space_documents(tmp_path: Path, data: st.DataObject) -> None:
    document = data.draw(st.one_of(documents(), edited(data.draw(st.sampled_from(VALID)))))
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    space = loaded_or_config_error(load_space, path)
    if space is not None:
        _exercise(space, data.draw(st.dictionaries(st.sampled_from(["depth", "width_0", "init_scale", "x"]),
                                                   documents(depth=0), max_size=3)))


@FUZZ
@given(data=st.data())
def test_random_space_yaml_text(tmp_path: Path, data: st.DataObject) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(data.draw(yaml_texts(data.draw(st.sampled_from(VALID)))))
    space = loaded_or_config_error(load_space, path)
    if space is not None:
        _exercise(space, {})
