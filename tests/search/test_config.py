"""Experiment configs: the shipped files load, defaults, and malformed configs name file, key path and choices."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ntksearch.proxies import DEFAULT_SCORE, LinearisedOptions, NTKOptions
from ntksearch.search import ConfirmSpec, ProxyTarget, ScoreTarget, WeightedLog, load_experiment
from ntksearch.validation import ConfigError
from tests.search.helpers import TINY_SPACE, write_experiment

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_experiments_load(path: Path) -> None:
    experiment = load_experiment(path)
    assert experiment.space.path.is_file()
    assert experiment.trials is not None


def test_defaults(tmp_path: Path) -> None:
    path = write_experiment(tmp_path, scoring=None, record=None, confirm=None, output=None)
    experiment = load_experiment(path)
    assert experiment.seed == 0 and experiment.study == "tiny"
    assert experiment.output == Path("runs/tiny")
    assert experiment.storage.url == "sqlite:///runs/tiny/study.db"
    assert experiment.objective.targets == (ScoreTarget(DEFAULT_SCORE),)
    assert experiment.record is None  # every proxy the family supports
    assert experiment.scoring.batch_size == 64 and experiment.scoring.ntk == NTKOptions()
    assert experiment.scoring.linearised == LinearisedOptions()
    assert experiment.sampler.name == "tpe"
    assert experiment.confirm == ConfirmSpec()


def test_full_config(tmp_path: Path) -> None:
    path = write_experiment(
        tmp_path, seed=3, dataset={"name": "file", "path": "data/mine.npz", "label_column": "y"},
        scoring={"batch_size": 8, "ntk": {"method": "hutch++", "rtol": 0.1, "max_matvecs": 64},
                 "linearised": {"learning_rate": 0.02, "steps": 500, "val_batch_size": 128, "ridge": 0.1,
                                "momentum": 0.5, "from_training": False}},
        objective=[{"proxy": "ntk_effective_rank"}, {"proxy": "n_params", "direction": "minimize"},
                   {"combine": "weighted_log", "proxies": {"ntk_trace": 1.0, "ntk_condition": 2}}],
        record=["grad_norm", "grad_norm"], sampler={"name": "nsga2", "population_size": 8}, trials=None,
        timeout=30, storage={"url": "journal:x/study.log", "max_retry": 1}, study="other",
        confirm={"top_k": 2, "random_k": 1, "max_train": 100, "epochs": 1, "lr_fraction": 0.25})
    experiment = load_experiment(path)
    assert experiment.dataset.options == {"path": str(tmp_path / "data/mine.npz"), "label_column": "y"}
    assert experiment.scoring.ntk == NTKOptions(method="hutch++", rtol=0.1, max_matvecs=64)
    assert experiment.scoring.linearised == LinearisedOptions(learning_rate=0.02, steps=500, val_batch_size=128,
                                                              ridge=0.1, momentum=0.5, from_training=False)
    assert experiment.objective.targets == (
        ProxyTarget("ntk_effective_rank", "maximize"), ProxyTarget("n_params", "minimize"),
        WeightedLog((("ntk_trace", 1.0), ("ntk_condition", 2.0))))
    assert experiment.objective.directions == ["maximize", "minimize", "maximize"]
    assert experiment.record == ("grad_norm",)
    assert experiment.sampler.options == {"population_size": 8}
    assert experiment.trials is None and experiment.timeout == 30
    assert (experiment.storage.url, experiment.storage.max_retry) == ("journal:x/study.log", 1)
    assert experiment.study == "other"
    assert experiment.confirm == ConfirmSpec(top_k=2, random_k=1, max_train=100, epochs=1, lr_fraction=0.25)


def test_record_objective_and_confirm_false(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(tmp_path, record="objective", confirm=False))
    assert experiment.record == () and experiment.confirm is None


def test_grid_sampler_may_omit_trials(tmp_path: Path) -> None:
    space = {"family": "mlp", "hyperparameters": {"depth": 1, "width": {"type": "categorical", "choices": [4, 8]}}}
    experiment = load_experiment(write_experiment(tmp_path, space_doc=space, sampler="grid", trials=None))
    assert experiment.make_sampler().__class__.__name__ == "GridSampler"


ALL_PROXIES = "lin_train_loss, lin_val_accuracy, lin_val_loss, max_stable_lr, meco, n_params"
MALFORMED = [
    # (overrides, key path, fragments of the message)
    ({"trails": 5}, "trails", ["unknown key", "allowed here: confirm, dataset, name, objective"]),
    ({"name": None}, "<root>", ["missing required key(s): name"]),
    ({"name": "my run!"}, "name", ["not a plain name"]),
    ({"seed": -1}, "seed", ["below the minimum 0"]),
    ({"seed": 2**32}, "seed", ["above the maximum 4294967295"]),
    ({"dataset": "mnist"}, "dataset", ["'mnist' is not allowed", "adding, digits, fashion_mnist, file"]),
    ({"dataset": {"name": "fashion_mnist", "max_trian": 5}}, "dataset.max_trian",
     ["unknown key", "downsample, max_test, max_train, max_val, name, root, seed"]),
    ({"dataset": {"name": "file"}}, "dataset", ["missing required key(s): path"]),
    ({"dataset": {"name": "fashion_mnist", "max_train": "many"}}, "dataset.max_train", ["expected an integer"]),
    ({"dataset": ["digits"]}, "dataset", ["expected a dataset name (adding, digits, fashion_mnist, file)"]),
    ({"space": "missing.yaml"}, "space", ["does not exist"]),
    ({"space": "x" * 300}, "space", ["does not exist"]),
    ({"space": "~nosuchuser/space.yaml"}, "space", ["is not a file path"]),
    ({"output": "a\x00b"}, "output", ["NUL character"]),
    ({"storage": "sqlite:///"}, "storage", ["names no usable file", "empty string"]),
    ({"scoring": {"batch_size": 0}}, "scoring.batch_size", ["below the minimum 2"]),
    ({"scoring": {"batch_size": 1}}, "scoring.batch_size", ["below the minimum 2", "centred label alignment"]),
    ({"scoring": {"ntk": {"max_matvecs": 2}}}, "scoring.ntk.max_matvecs",
     ["2 AD passes are too few for NTK method auto", "the next budget that fits every candidate is 30"]),
    ({"scoring": {"ntk": {"method": "hutchinson", "max_matvecs": 8}}}, "scoring.ntk.max_matvecs",
     ["too few for NTK method hutchinson", "min_blocks"]),
    ({"scoring": {"batch": 8}}, "scoring.batch", ["allowed here: batch_size, linearised, ntk"]),
    ({"scoring": {"linearised": {"learning_rate": "fast"}}}, "scoring.linearised.learning_rate",
     ["'fast' is not allowed", "auto"]),
    ({"scoring": {"linearised": {"learning_rate": 0}}}, "scoring.linearised.learning_rate", ["must be > 0"]),
    ({"scoring": {"linearised": {"steps": 0}}}, "scoring.linearised.steps", ["below the minimum 1"]),
    ({"scoring": {"linearised": {"momentum": 1}}}, "scoring.linearised.momentum", ["must be in [0, 1)"]),
    ({"scoring": {"linearised": {"stepz": 9}}}, "scoring.linearised.stepz",
     ["unknown key", "from_training, learning_rate, lr_fraction, max_matvecs, momentum, ridge, rtol, steps, "
      "structured, val_batch_size"]),
    ({"scoring": {"ntk": {"method": "magic"}}}, "scoring.ntk.method",
     ["'magic' is not allowed", "auto, exact, forward, hutch++, hutchinson, reverse"]),
    ({"scoring": {"ntk": {"probes": 3}}}, "scoring.ntk.probes",
     ["lanczos_iters, lanczos_rtol, max_matvecs, method, rtol"]),
    ({"objective": "accuracy"}, "objective", ["'accuracy' is not allowed", "default_score", ALL_PROXIES]),
    ({"objective": {"proxy": "ntk_lambda_max"}}, "objective.proxy", ["no default direction", "direction: minimize"]),
    ({"objective": {"proxy": "ntk_trace", "direction": "up"}}, "objective.direction", ["maximize, minimize"]),
    ({"objective": {"proxy": "ntk_trace", "weight": 2}}, "objective.weight", ["allowed here: direction, proxy"]),
    ({"objective": {"combine": "mean_rank", "proxies": {"ntk_trace": 1}}}, "objective.combine",
     ["'mean_rank' is not allowed", "default_score, weighted_log"]),
    ({"objective": {"combine": "weighted_log", "proxies": {"ntk_trace": -1}}}, "objective.proxies.ntk_trace",
     ["must be > 0"]),
    ({"objective": {"combine": "weighted_log", "proxies": {"max_stable_lr": 1}}},
     "objective.proxies.max_stable_lr", ["sign 0", "ntk_trace"]),
    ({"objective": {"combine": "weighted_log", "proxies": {"accuracy": 1}}}, "objective.proxies.accuracy",
     ["unknown key", ALL_PROXIES]),
    ({"objective": {"combine": "weighted_log", "proxies": {}}}, "objective.proxies", ["at least one proxy"]),
    ({"objective": {"combine": "default_score", "proxies": {"ntk_trace": 1}}}, "objective.proxies",
     ["unknown key", "allowed here: combine"]),
    ({"objective": ["ntk_trace", {"proxy": "ntk_trace"}]}, "objective[1]", ["'ntk_trace' appears twice"]),
    ({"objective": []}, "objective", ["at least one objective"]),
    ({"objective": 3}, "objective", ["expected a proxy name, default_score"]),
    ({"record": ["ntk_trace", "bogus"]}, "record[1]", ["'bogus' is not allowed", ALL_PROXIES]),
    ({"record": "some"}, "record", ["all, objective"]),
    ({"sampler": "annealing"}, "sampler", ["cmaes, gp, grid, nsga2, random, tpe"]),
    ({"sampler": {"name": "tpe", "n_startup": 3}}, "sampler.n_startup", ["n_startup_trials"]),
    ({"sampler": {"name": "tpe", "multivariate": 1}}, "sampler.multivariate", ["expected true or false"]),
    ({"sampler": {"name": "random", "seed": 1}}, "sampler.seed", ["allowed here: name"]),
    ({"sampler": {"n_startup_trials": 1}}, "sampler", ["expected a sampler name"]),
    ({"trials": 0}, "trials", ["below the minimum 1"]),
    ({"trials": None}, "<root>", ["set trials", "timeout"]),
    ({"timeout": -5}, "timeout", ["must be > 0"]),
    ({"threads": 0}, "threads", ["below the minimum 1"]),
    ({"threads": 1.5}, "threads", ["expected an integer"]),
    ({"storage": "redis://host/0"}, "storage", ["not a storage URL", "sqlite:///", "journal:"]),
    ({"storage": {"url": "sqlite:///x.db", "heartbeat": 5}}, "storage.heartbeat",
     ["grace_period, heartbeat_interval, max_retry, url"]),
    ({"storage": {"url": "sqlite:///x.db", "grace_period": 0}}, "storage.grace_period", ["below the minimum 1"]),
    ({"confirm": {"top_k": -1}}, "confirm.top_k", ["below the minimum 0"]),
    ({"confirm": {"lr_fraction": 0}}, "confirm.lr_fraction", ["must be > 0"]),
    ({"confirm": {"epoch": 2}}, "confirm.epoch", ["epochs, lr_fraction, max_train, max_val, random_k, top_k"]),
    ({"confirm": "yes"}, "confirm", ["expected a mapping"]),
]


@pytest.mark.parametrize(("overrides", "key_path", "fragments"), MALFORMED,
                         ids=[f"{i}-{m[1]}" for i, m in enumerate(MALFORMED)])
def test_malformed_configs(tmp_path: Path, overrides: dict, key_path: str, fragments: list[str]) -> None:
    path = write_experiment(tmp_path, **overrides)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert info.value.file == str(path)
    assert info.value.key_path == key_path, str(info.value)
    for fragment in fragments:
        assert fragment in info.value.message, str(info.value)
    assert str(info.value).startswith(f"{path}: {key_path}: ")


def test_errors_inside_the_space_name_the_space_file(tmp_path: Path) -> None:
    path = write_experiment(tmp_path, space_doc={**TINY_SPACE, "family": "resnet"})
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert info.value.file == str(tmp_path / "space.yaml") and "mlp" in info.value.message


def test_grid_needs_a_discrete_space(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_experiment(write_experiment(tmp_path, sampler="grid"))
    assert info.value.key_path == "hyperparameters.init_scale" and "cannot enumerate" in info.value.message


@pytest.mark.parametrize(("sampler", "module"), [("gp", "torch"), ("cmaes", "cmaes")])
def test_optional_samplers_say_what_to_install(tmp_path: Path, sampler: str, module: str) -> None:
    path = write_experiment(tmp_path, sampler=sampler)
    if importlib.util.find_spec(module) is not None:
        assert load_experiment(path).sampler.name == sampler
        return
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert info.value.key_path == "sampler" and f"pip install {module}" in info.value.message


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_experiment(bad)
    with pytest.raises(ConfigError, match="cannot read file"):
        load_experiment(tmp_path / "absent.yaml")


def test_bad_dataset_option_value_is_a_config_error_at_load(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(tmp_path, dataset={"name": "digits", "seed": -3}))
    with pytest.raises(ConfigError) as info:
        experiment.dataset.load()
    assert info.value.key_path == "dataset" and "seed" in info.value.message


def test_with_storage(tmp_path: Path) -> None:
    experiment = load_experiment(write_experiment(tmp_path))
    assert experiment.with_storage("journal:j.log").storage.url == "journal:j.log"
    with pytest.raises(ConfigError, match="not a storage URL"):
        experiment.with_storage("ftp://x")
