"""Malformed search-space files: every error names the file, the key path, the bad value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ntksearch.spaces import load_space
from ntksearch.validation import ConfigError

MLP = "family: mlp\nhyperparameters:\n"
NB201 = "family: nb201\nhyperparameters:\n"

# (id, YAML text, key path, fragments the message must contain)
CASES = [
    ("unknown-family", "family: resnet\n", "family", ["'resnet'", "cnn, mlp, nb201, rnn, transformer"]),
    ("missing-family", "hyperparameters: {}\n", "<root>", ["missing", "family"]),
    ("empty-file", "", "<root>", ["expected a mapping", "null"]),
    ("yaml-syntax", "family: mlp\nhyperparameters: {depth: [1,\n", "<root>", ["invalid YAML", "line"]),
    ("unknown-top-key", "family: mlp\nsearch: {}\n", "search",
     ["unknown key", "description, family, hyperparameters, train"]),
    ("unknown-hyperparameter", MLP + "  heads: 2\n", "hyperparameters.heads",
     ["unknown key", "activation", "depth", "width", "init_scale"]),
    ("bad-fixed-activation", MLP + "  activation: sigmoidal\n", "hyperparameters.activation",
     ["'sigmoidal'", "relu, gelu, tanh, swish"]),
    ("bad-choice", MLP + "  activation: {type: categorical, choices: [relu, softmax]}\n",
     "hyperparameters.activation.choices[1]", ["'softmax'", "relu, gelu, tanh"]),
    ("empty-choices", MLP + "  activation: {type: categorical, choices: []}\n", "hyperparameters.activation.choices",
     ["non-empty", "relu, gelu"]),
    ("choice-wrong-type", MLP + "  residual: {type: categorical, choices: ['true', false]}\n",
     "hyperparameters.residual.choices[0]", ["'true'", "true or false"]),
    ("duplicate-choice", MLP + "  norm: {type: categorical, choices: [none, layer, none]}\n",
     "hyperparameters.norm.choices[2]", ["duplicate", "'none'"]),
    ("low-above-high", MLP + "  width: {type: int, low: 64, high: 16}\n", "hyperparameters.width.high",
     ["16", "below low 64"]),
    ("low-out-of-bounds", MLP + "  depth: {type: int, low: 0, high: 3}\n", "hyperparameters.depth.low",
     ["0", "an integer in [1, 64]"]),
    ("float-bound-not-number", MLP + "  dropout: {type: float, low: none, high: 0.5}\n", "hyperparameters.dropout.low",
     ["expected a number", "'none'"]),
    ("log-low-not-positive", MLP + "  dropout: {type: float, low: 0.0, high: 0.5, log: true}\n",
     "hyperparameters.dropout.low", ["log: true needs low > 0", "0.0"]),
    ("int-log-low-zero", "family: mlp\ntrain:\n  warmup_steps: {type: int, low: 0, high: 100, log: true}\n",
     "train.warmup_steps.low", ["log: true needs low ≥ 1", "0"]),
    ("int-step-not-dividing", "family: cnn\nhyperparameters:\n  groups: {type: int, low: 1, high: 8, step: 3}\n",
     "hyperparameters.groups.step", ["step 3 does not divide", "7"]),
    ("step-not-dividing", MLP + "  width: {type: int, low: 16, high: 100, step: 32}\n", "hyperparameters.width.step",
     ["step 32", "84"]),
    ("float-step-not-dividing", MLP + "  dropout: {type: float, low: 0.0, high: 0.5, step: 0.2}\n",
     "hyperparameters.dropout.step", ["step 0.2", "0.5"]),
    ("step-with-log", MLP + "  width: {type: int, low: 16, high: 512, step: 16, log: true}\n",
     "hyperparameters.width.step", ["cannot be combined"]),
    ("wrong-range-type", MLP + "  width: {type: float, low: 16, high: 512}\n", "hyperparameters.width.type",
     ["use type int", "an integer in [1, 16384]"]),
    ("range-on-boolean", MLP + "  residual: {type: int, low: 0, high: 1}\n", "hyperparameters.residual.type",
     ["true or false", "categorical"]),
    ("unknown-distribution", MLP + "  width: {type: uniform, low: 16, high: 512}\n", "hyperparameters.width.type",
     ["'uniform'", "categorical, float, int"]),
    ("unknown-distribution-key", MLP + "  depth: {type: int, low: 1, high: 4, stepsize: 2}\n",
     "hyperparameters.depth.stepsize", ["unknown key", "high, log, low, per_layer, step, type, when"]),
    ("missing-high", MLP + "  depth: {type: int, low: 1}\n", "hyperparameters.depth", ["missing", "high"]),
    ("mapping-without-type", MLP + "  depth: {low: 1, high: 3}\n", "hyperparameters.depth", ["missing", "type"]),
    ("per-layer-on-scalar", MLP + "  activation: {type: categorical, choices: [relu], per_layer: true}\n",
     "hyperparameters.activation.per_layer", ["activation is not a per-layer hyperparameter"]),
    ("list-with-sampled-depth", MLP + "  depth: {type: int, low: 1, high: 3}\n  width: [32, 64]\n",
     "hyperparameters.width", ["depth must be fixed at 2", "an integer in [1, 3]", "per_layer"]),
    ("list-for-scalar", MLP + "  activation: [relu, tanh]\n", "hyperparameters.activation",
     ["one value, not a list", "relu, gelu"]),
    ("when-unknown-parameter", MLP + "  groups: {type: categorical, choices: [2, 4], when: {normalisation: group}}\n",
     "hyperparameters.groups.when.normalisation", ["'normalisation'", "norm", "depth", "learning_rate"]),
    ("when-value-never-taken", MLP + "  norm: {type: categorical, choices: [none, layer]}\n"
     "  groups: {type: categorical, choices: [2, 4], when: {norm: group}}\n", "hyperparameters.groups.when.norm",
     ["never takes 'group'", "'none', 'layer'"]),
    ("when-disallowed-value", MLP + "  groups: {type: categorical, choices: [2, 4], when: {norm: batchnorm}}\n",
     "hyperparameters.groups.when.norm", ["'batchnorm'", "none, layer, group, batch"]),
    ("when-self", MLP + "  norm: {type: categorical, choices: [none, layer], when: {norm: layer}}\n",
     "hyperparameters.norm.when.norm", ["itself"]),
    ("when-per-layer", MLP + "  norm: {type: categorical, choices: [none, layer], when: {width: 16}}\n",
     "hyperparameters.norm.when.width", ["per-layer"]),
    ("circular-conditions", MLP + "  norm: {type: categorical, choices: [none, layer], when: {residual: true}}\n"
     "  residual: {type: categorical, choices: [false, true], when: {norm: layer}}\n", "hyperparameters.norm.when",
     ["circular", "norm, residual"]),
    ("bad-nb201-op", NB201 + "  edge_1_0: {type: categorical, choices: [none, conv_5x5]}\n",
     "hyperparameters.edge_1_0.choices[1]", ["'conv_5x5'", "skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3"]),
    ("bad-rnn-cell", "family: rnn\nhyperparameters:\n  cell: vanilla\n", "hyperparameters.cell",
     ["'vanilla'", "tanh, gru, lstm"]),
    ("unknown-optimizer", "family: mlp\ntrain:\n  optimizer: rmsprop\n", "train.optimizer",
     ["'rmsprop'", "sgd, momentum, adam, adamw"]),
    ("negative-learning-rate", "family: mlp\ntrain:\n  learning_rate: -0.1\n", "train.learning_rate",
     ["-0.1", "(0, inf)", "auto"]),
    ("unknown-train-key", "family: mlp\ntrain:\n  lr: 0.1\n", "train.lr", ["unknown key", "learning_rate, max_steps"]),
    ("auto-learning-rate-with-adam", "family: mlp\ntrain:\n  learning_rate: auto\n"
     "  optimizer: {type: categorical, choices: [momentum, adamw]}\n", "train.learning_rate",
     ["auto", "valid for sgd, momentum", "optimizer can be adamw"]),
    ("auto-learning-rate-with-the-default-optimizer", "family: mlp\ntrain:\n  learning_rate: auto\n",
     "train.learning_rate", ["optimizer can be adam", "set optimizer: momentum"]),
    ("zero-batch-size", "family: mlp\ntrain:\n  batch_size: {type: int, low: 0, high: 64}\n", "train.batch_size.low",
     ["0", "an integer in [1, inf)"]),
]


@pytest.mark.parametrize(("text", "key_path", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_space(tmp_path: Path, text: str, key_path: str, fragments: list[str]) -> None:
    path = tmp_path / "bad_space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_space(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key_path}: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_space(tmp_path / "nope.yaml")
