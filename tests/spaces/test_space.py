"""Search spaces: the shipped files, sampling through Optuna, exact rebuilding, enumeration and grids."""

from __future__ import annotations

import dataclasses
import itertools
import math
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optuna
import pytest

from ntksearch import ntk_metrics
from ntksearch.models import HYPERPARAMETERS
from ntksearch.spaces import TRAIN_HYPERPARAMETERS, Point, SearchSpace, load_space, schema
from ntksearch.train import OPTIMIZERS, TrainHParams
from ntksearch.validation import ConfigError
from tests.models.helpers import flax_param_count

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
FAMILIES = ("mlp", "cnn", "rnn", "nb201", "transformer")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sample(space: SearchSpace, n: int, seed: int = 0) -> list[tuple[dict, Point]]:
    """n points drawn by a seeded RandomSampler, with the trial.params Optuna stored for each."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        point = space.sample(trial)
        study.tell(trial, 0.0)
        out.append((study.trials[-1].params, point))
    return out


def _score(space: SearchSpace, point: Point, shape: tuple[int, ...]) -> None:
    """Build on a batch of 8 examples of ``shape`` and check the NTK trace and the counts."""
    built = space.build(point, input_shape=shape, n_classes=10, key=jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (8, *shape))
    y = jax.nn.one_hot(jnp.arange(8), 10)
    metrics = ntk_metrics(built.apply_fn, built.params, x, y, key=jax.random.PRNGKey(0), method="hutch++",
                          max_matvecs=128)
    trace = metrics["trace"].value
    assert math.isfinite(trace) and trace > 0, (point.params, trace)


def _check_candidates(family: str, n_scored: int) -> None:
    """Sample and build 20 candidates; score the ``n_scored`` cheapest (each new architecture costs seconds of
    XLA compilation in the NTK core on 2 CPU cores, so the default run scores one and --run-slow all 20)."""
    space = load_space(SPACES / f"{family}.yaml")
    assert space.family == family
    candidates = []
    for i, (stored, point) in enumerate(_sample(space, 20)):
        assert stored == point.params
        assert space.point_from_params(stored) == point
        built = space.build(point, input_shape=(8, 8, 1), n_classes=10, key=jax.random.PRNGKey(i))
        assert built.n_params == flax_param_count(built) > 0
        assert built.flops > 0
        assert built.point == point.arch
        candidates.append((built.flops, i, point))
    for _, _, point in sorted(candidates)[:n_scored]:
        _score(space, point, (8, 8, 1))
        # every new architecture leaves its compiled XLA programs (hundreds of memory maps each) in the jit
        # caches; a process scoring ~100 of them hits vm.max_map_count and segfaults unless they are dropped
        jax.clear_caches()


@pytest.mark.parametrize("family", FAMILIES)
def test_shipped_space_builds_20_candidates_and_scores_the_cheapest(family: str) -> None:
    _check_candidates(family, n_scored=1)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_shipped_space_scores_20_candidates(family: str) -> None:
    _check_candidates(family, n_scored=20)


def test_cnn_space_on_fashion_mnist_images() -> None:
    space = load_space(SPACES / "cnn.yaml")
    _score(space, _sample(space, 1, seed=3)[0][1], (28, 28, 1))


def test_training_names_never_clash_with_architecture_names() -> None:
    for family, hypers in HYPERPARAMETERS.items():
        assert not set(hypers) & set(TRAIN_HYPERPARAMETERS), family


def test_rebuilding_from_stored_params_is_bit_identical() -> None:
    space = load_space(SPACES / "cnn.yaml")
    stored, point = _sample(space, 1, seed=7)[0]
    rebuilt = space.point_from_params(dict(stored))
    a = space.build(point, input_shape=(8, 8, 1), n_classes=10, key=jax.random.PRNGKey(42))
    b = space.build(rebuilt, input_shape=(8, 8, 1), n_classes=10, key=jax.random.PRNGKey(42))
    assert a.apply_fn == b.apply_fn
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(u, v)


def test_per_layer_parameters_exist_only_for_sampled_layers() -> None:
    space = load_space(SPACES / "mlp.yaml")
    depths = set()
    for stored, point in _sample(space, 30, seed=1):
        depth = point.arch["depth"]
        depths.add(depth)
        assert sorted(k for k in stored if k.startswith("width_")) == [f"width_{i}" for i in range(depth)]
        assert point.arch["width"] == [stored[f"width_{i}"] for i in range(depth)]
        assert point.train["learning_rate"] == "auto" and not set(stored) & set(TRAIN_HYPERPARAMETERS)
        assert set(point.arch) == set(HYPERPARAMETERS["mlp"]) and set(point.train) == set(TRAIN_HYPERPARAMETERS)
        TrainHParams.from_dict({**point.train, "learning_rate": 0.1})  # what confirmation training takes (auto:
        # replaced by the candidate's stable step)
    assert len(depths) > 3


def test_conditional_parameter_only_when_condition_holds() -> None:
    space = load_space(SPACES / "cnn.yaml")
    seen = set()
    for stored, point in _sample(space, 40, seed=2):
        active = point.arch["norm"] == "group"
        seen.add(active)
        assert ("groups" in stored) == active
        if not active:
            assert point.arch["groups"] == HYPERPARAMETERS["cnn"]["groups"].default
        assert point.train["learning_rate"] == "auto"
    assert seen == {True, False}


def test_point_from_params_rejects_missing_unknown_and_out_of_range() -> None:
    space = load_space(SPACES / "mlp.yaml")
    stored, _ = _sample(space, 1)[0]
    depth = stored["depth"]
    cases = [
        ({k: v for k, v in stored.items() if k != "width_0"}, "params.width_0", "missing"),
        ({**stored, f"width_{depth}": 32}, f"params.width_{depth}", "unknown parameter"),
        ({**stored, "activation": "softmax"}, "params.activation", "outside hyperparameters.activation"),
        ({**stored, "width_0": 1024}, "params.width_0", "an integer in [16, 512]"),
        ({**stored, "dropout": 0.15}, "params.dropout", "step 0.1"),
    ]
    for params, key_path, fragment in cases:
        with pytest.raises(ConfigError) as info:
            space.point_from_params(params)
        assert f"mlp.yaml: {key_path}: " in str(info.value) and fragment in str(info.value), str(info.value)


SMALL = """\
family: mlp
hyperparameters:
  depth: {type: int, low: 1, high: 2}
  width: {type: categorical, choices: [8, 16], per_layer: true}
  norm: {type: categorical, choices: [none, group]}
  groups: {type: categorical, choices: [2, 4], when: {norm: group}}
  dropout: {type: float, low: 0.0, high: 0.2, step: 0.1}
  activation: tanh
train:
  optimizer: {type: categorical, choices: [sgd, adam]}
"""


def test_enumeration_and_grid_sampler_agree(tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    space = load_space(path)
    points = list(space.enumerate())
    # widths: 2 (depth 1) + 4 (depth 2); norm none or group × 2 groups; 3 dropouts; 2 optimizers
    assert len(points) == (2 + 4) * (1 + 2) * 3 * 2
    keys = {tuple(sorted(p.params.items())) for p in points}
    assert len(keys) == len(points)
    assert all(p.arch["activation"] == "tanh" for p in points)
    assert points[0].params == {"depth": 1, "width_0": 8, "norm": "none", "dropout": 0.0, "optimizer": "sgd"}

    grid = space.grid()
    assert grid["width_1"] == [8, 16] and grid["groups"] == [2, 4] and "activation" not in grid
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    study.optimize(lambda trial: float(space.sample(trial).arch["depth"]), n_trials=math.prod(map(len, grid.values())))
    assert {tuple(sorted(space.point_from_params(t.params).params.items())) for t in study.trials} == keys


def test_enumeration_names_the_continuous_parameter() -> None:
    with pytest.raises(ConfigError, match=r"mlp\.yaml: hyperparameters\.init_scale: cannot enumerate"):
        next(load_space(SPACES / "mlp.yaml").enumerate())
    nb201 = load_space(SPACES / "nb201.yaml")
    first = list(itertools.islice(nb201.enumerate(), 3))
    assert [p.params["edge_3_2"] for p in first] == ["none", "skip_connect", "nor_conv_1x1"]
    assert math.prod(len(v) for v in nb201.grid().values()) == 2 * 2 * 5**6


def test_documented_example_is_a_valid_space(tmp_path: Path) -> None:
    doc = schema.__doc__ or ""
    block = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(textwrap.dedent(block))
    space = load_space(path)
    assert space.family == "mlp" and space.description
    stored, point = _sample(space, 1)[0]
    assert space.point_from_params(stored) == point


def test_train_hyperparameters_are_trainhparams_declarations() -> None:
    defaults = TrainHParams()
    assert list(TRAIN_HYPERPARAMETERS) == [f.name for f in dataclasses.fields(TrainHParams)]
    for name, hyper in TRAIN_HYPERPARAMETERS.items():
        assert hyper.default == getattr(defaults, name), name
    assert TRAIN_HYPERPARAMETERS["optimizer"].names == tuple(OPTIMIZERS)
    assert TRAIN_HYPERPARAMETERS["max_steps"].nullable and TRAIN_HYPERPARAMETERS["max_steps"].low == 1
    assert TRAIN_HYPERPARAMETERS["learning_rate"].problem("auto") is None  # a space may derive it from the NTK
    assert TRAIN_HYPERPARAMETERS["learning_rate"].problem(0.0) == "0.0 is not allowed; expected a number in (0, inf) " \
        "or one of: auto"
