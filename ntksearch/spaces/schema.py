r"""The search-space file format, and its validation.

A search space is a YAML file naming a model ``family`` (a key of ``ntksearch.models.FAMILIES``), the
family's architecture ``hyperparameters`` and the ``train`` hyperparameters that travel with each candidate
to confirmation training. Every hyperparameter is either a **fixed value** or a **distribution** Optuna
understands; hyperparameters a file does not mention keep their defaults (the family's, or
``ntksearch.train.TrainHParams``'s). Annotated example (``search_spaces/mlp.yaml`` is the real one)::

    family: mlp                                    # mlp | cnn | rnn | nb201 | transformer
    description: MLPs for 8×8 digits and Fashion-MNIST   # optional free text
    hyperparameters:
      depth: {type: int, low: 1, high: 6}          # Optuna suggest_int
      width:                                       # per-layer: suggested as width_0 … width_{depth-1},
        type: int                                  #   only for the layers the sampled depth has
        low: 16
        high: 512
        log: true                                  # log-uniform
        per_layer: true                            # without it: one value shared by all layers
      activation: {type: categorical, choices: [relu, gelu, tanh, swish]}
      norm: {type: categorical, choices: [none, layer, group]}
      groups:                                      # conditional: only suggested when norm == group,
        type: categorical                          #   otherwise it keeps its default
        choices: [2, 4]
        when: {norm: group}                        # several keys: all must hold; a list: any of its values
      residual: {type: categorical, choices: [false, true]}
      dropout: {type: float, low: 0.0, high: 0.3, step: 0.1}   # float on a grid
      init: {type: categorical, choices: [lecun_normal, he_normal, xavier_uniform]}
      init_scale: {type: float, low: 0.5, high: 2.0, log: true}
    train:
      learning_rate: auto                          # fixed; auto = derive it from the NTK λ_max (sgd, momentum)
      optimizer: {type: categorical, choices: [sgd, momentum]}
      weight_decay: {type: float, low: 1.0e-6, high: 1.0e-2, log: true, when: {optimizer: momentum}}
      batch_size: 128
      epochs: 5

**Values.** A fixed value is a scalar (a per-layer hyperparameter may also take a list, one value per layer,
when its layer count is fixed). A distribution is a mapping with ``type``:

* ``categorical``: ``choices``, a non-empty list of distinct allowed values;
* ``int``: integers ``low`` ≤ ``high``; optional ``step`` (≥ 1, dividing high − low) or ``log: true``
  (low ≥ 1); integer hyperparameters only;
* ``float``: numbers ``low`` ≤ ``high``; optional ``step`` (> 0, dividing high − low) or ``log: true``
  (low > 0); real-valued hyperparameters only;

and optionally ``per_layer: true`` (per-layer hyperparameters: mlp ``width``, cnn ``channels``/``blocks``/
``kernel``/``stride``/``pool``, rnn ``hidden``) and ``when: {name: value | [values]}`` (suggest only while
every named hyperparameter has one of the given values; it must be a scalar hyperparameter of this space
and the values must be ones it can take). Every bound and choice must be allowed for the hyperparameter (the
activation names from the activation registry, ``init_scale`` > 0, ...).

**Names.** Optuna sees each suggested hyperparameter under its own name, per-layer ones as ``name_i``
(``width_0``), so ``trial.params`` holds exactly the suggested values and rebuilds the point. Training
hyperparameter names never clash with architecture ones. Unknown keys anywhere are errors; every error is a
:class:`~ntksearch.validation.ConfigError` naming the file, the key path (``hyperparameters.width.high``),
the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ntksearch.models import FAMILIES, HYPERPARAMETERS, Hyper
from ntksearch.settings import Allowed, declared_settings
from ntksearch.spaces.distributions import Categorical, Distribution, Fixed, FloatRange, IntRange, divides
from ntksearch.train import AUTO_LR_OPTIMIZERS, TrainHParams
from ntksearch.validation import ConfigError, Node

__all__ = ["DISTRIBUTION_TYPES", "SECTIONS", "TRAIN_HYPERPARAMETERS", "ParamSpec", "parse_space"]

_TRAIN_DEFAULTS = TrainHParams()


def _declared_hyper(default: Any, allowed: Allowed, kinds: frozenset[str]) -> Hyper:
    """The :class:`Hyper` of a declared setting: the same type, default, bounds and choices."""
    kind = ("bool" if "bool" in kinds else "float" if "float" in kinds else "int" if "int" in kinds else "name")
    return Hyper(kind, default, allowed.doc, low=allowed.minimum, high=allowed.maximum,
                 low_open=allowed.exclusive_minimum, high_open=allowed.exclusive_maximum,
                 names=tuple(allowed.choices or ()), nullable="None" in kinds)


TRAIN_HYPERPARAMETERS: dict[str, Hyper] = {  # TrainHParams' declarations; a space may also say learning_rate: auto
    f.name: _declared_hyper(f.default, allowed, kinds) for f, allowed, kinds in declared_settings(TrainHParams)}
TRAIN_HYPERPARAMETERS["learning_rate"] = dataclasses.replace(
    TRAIN_HYPERPARAMETERS["learning_rate"], names=("auto",), doc="peak learning rate; auto: from the NTK λ_max")

SECTIONS = ("hyperparameters", "train")
DISTRIBUTION_TYPES = ("categorical", "int", "float")
_COMMON_KEYS = {"per_layer", "when"}
_TYPE_KEYS = {
    "categorical": ({"type", "choices"}, set()),
    "int": ({"type", "low", "high"}, {"step", "log"}),
    "float": ({"type", "low", "high"}, {"step", "log"}),
}


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter of a space: its declaration, its value set and when it is suggested.

    Attributes:
      name: the hyperparameter (and Optuna) name; per-layer ones are suggested as ``name_i``.
      section: ``hyperparameters`` or ``train``.
      hyper: the family's (or training's) declaration.
      dist: the value set (:class:`Fixed` for fixed values).
      per_layer: one suggestion per layer (``hyper.per`` gives the count).
      when: ``((name, allowed values), ...)``: suggested only when all hold.
    """

    name: str
    section: str
    hyper: Hyper
    dist: Distribution
    per_layer: bool = False
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def key_path(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def depends_on(self) -> tuple[str, ...]:
        """Hyperparameters whose values must be known before this one is sampled."""
        return tuple(name for name, _ in self.when) + ((self.hyper.per,) if self.per_layer else ())


def parse_space(root: Node) -> tuple[str, str, tuple[ParamSpec, ...]]:
    """Validate a whole space document; returns ``(family, description, specs)``, specs in sampling order.

    Raises:
      ConfigError: the first problem found, with file, key path, bad value and what is allowed.
    """
    root.mapping(required={"family"}, optional={"description", *SECTIONS})
    family = root["family"].string(choices=FAMILIES)
    description = root["description"].string() if "description" in root else ""
    declared = {"hyperparameters": HYPERPARAMETERS[family], "train": TRAIN_HYPERPARAMETERS}
    parsed: list[tuple[ParamSpec, Node]] = []
    for section, hypers in declared.items():
        if section in root:
            node = root[section]
            for name in node.mapping(optional=hypers):
                parsed.append((_parse_param(node[name], name, hypers[name], section), node[name]))
    hypers = {**declared["hyperparameters"], **declared["train"]}
    specs = {spec.name: spec for spec, _ in parsed}
    checked = [_resolve_references(spec, node, hypers, specs) for spec, node in parsed]
    _check_auto_learning_rate({spec.name: (spec, node) for spec, node in parsed})
    return family, description, _sampling_order(checked, root)


def _check_auto_learning_rate(parsed: Mapping[str, tuple[ParamSpec, Node]]) -> None:
    """``learning_rate: auto`` is the NTK's stable gradient-descent step (:mod:`ntksearch.train.stability`):
    every optimizer the space can use with it must be one it is valid for."""
    if "learning_rate" not in parsed or not parsed["learning_rate"][0].dist.contains("auto"):
        return
    optimizers = parsed["optimizer"][0].dist.values() if "optimizer" in parsed else (_TRAIN_DEFAULTS.optimizer,)
    invalid = [name for name in optimizers if name not in AUTO_LR_OPTIMIZERS]
    if invalid:
        raise parsed["learning_rate"][1].error(
            f"auto (the largest stable gradient-descent step, from the NTK's λ_max) is valid for "
            f"{', '.join(AUTO_LR_OPTIMIZERS)} only, but optimizer can be {', '.join(invalid)}; set optimizer: "
            "momentum (or sgd), or give learning_rate a number")


# -- one hyperparameter ------------------------------------------------------------------------------------


def _parse_param(node: Node, name: str, hyper: Hyper, section: str) -> ParamSpec:
    if not isinstance(node.value, Mapping):
        return ParamSpec(name, section, hyper, Fixed(_fixed_value(node, name, hyper)))
    node.mapping(required={"type"}, optional=set().union(*(r | o for r, o in _TYPE_KEYS.values()), _COMMON_KEYS))
    kind = node["type"].string(choices=DISTRIBUTION_TYPES)
    required, optional = _TYPE_KEYS[kind]
    node.mapping(required=required, optional=optional | _COMMON_KEYS)
    dist = _categorical(node, hyper) if kind == "categorical" else _range(node, name, hyper, kind)
    per_layer = node["per_layer"].boolean() if "per_layer" in node else False
    if per_layer and hyper.per is None:
        raise node["per_layer"].error(f"{name} is not a per-layer hyperparameter; only those with a "
                                      "per-layer list take per_layer (see the family's documentation)")
    when = _parse_when(node["when"]) if "when" in node else ()
    return ParamSpec(name, section, hyper, dist, per_layer, when)


def _fixed_value(node: Node, name: str, hyper: Hyper) -> Any:
    if isinstance(node.value, list):
        if hyper.per is None:
            raise node.error(f"{name} takes one value, not a list; expected {hyper.describe()}")
        if not node.value:
            raise node.error(f"expected one value per {hyper.per}, got an empty list")
        for item in node.items():
            _check_allowed(item, hyper)
        return list(node.value)
    _check_allowed(node, hyper)
    return node.value


def _check_allowed(node: Node, hyper: Hyper) -> None:
    message = hyper.problem(node.value)
    if message:
        raise node.error(message)


def _categorical(node: Node, hyper: Hyper) -> Categorical:
    choices = node["choices"]
    if not isinstance(choices.value, list) or not choices.value:
        raise choices.error(f"expected a non-empty list of values, each {hyper.describe()}; got {choices.value!r}")
    seen: list[Any] = []
    for item in choices.items():
        _check_allowed(item, hyper)
        if Categorical(tuple(seen)).contains(item.value):
            raise item.error(f"duplicate choice {item.value!r}")
        seen.append(item.value)
    return Categorical(tuple(seen))


def _range(node: Node, name: str, hyper: Hyper, kind: str) -> IntRange | FloatRange:
    if hyper.kind != kind:
        use = "categorical" if hyper.kind in ("bool", "name") else hyper.kind
        raise node["type"].error(f"{name} takes {hyper.describe()}; use type {use} (or categorical), not {kind}")
    read = (lambda n: n.integer()) if kind == "int" else (lambda n: n.number())
    low, high = read(node["low"]), read(node["high"])
    for key, value in (("low", low), ("high", high)):
        if not hyper.in_bounds(value):
            raise node[key].error(f"{value!r} is not allowed for {name}; expected {hyper.describe()}")
    if low > high:
        raise node["high"].error(f"high {high!r} is below low {low!r}")
    log = node["log"].boolean() if "log" in node else False
    step = None
    if "step" in node:
        step_node = node["step"]
        step = step_node.integer(minimum=1) if kind == "int" else step_node.number(minimum=0.0, exclusive_minimum=True)
        if log:
            raise step_node.error("step and log: true cannot be combined (Optuna); drop one of them")
        if not divides(step, high - low):
            raise step_node.error(f"step {step!r} does not divide high - low = {high - low!r}; adjust low, high or "
                                  "step so that high = low + k·step")
    if log and (low < 1 if kind == "int" else low <= 0):
        bound = "≥ 1" if kind == "int" else "> 0"
        raise node["low"].error(f"log: true needs low {bound}, got {low!r}")
    if kind == "int":
        return IntRange(low, high, step or 1, log)
    return FloatRange(low, high, step, log)


def _parse_when(node: Node) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    conditions = node.mapping()
    if not conditions:
        raise node.error("expected at least one condition {name: value or [values]}")
    out = []
    for ref in conditions:
        values = node[ref].value
        values = tuple(values) if isinstance(values, list) else (values,)
        if not values:
            raise node[ref].error("expected a value or a non-empty list of values")
        out.append((ref, values))
    return tuple(out)


# -- the whole space ---------------------------------------------------------------------------------------


def _resolve_references(spec: ParamSpec, node: Node, hypers: Mapping[str, Hyper],
                        specs: Mapping[str, ParamSpec]) -> ParamSpec:
    """Check ``when`` and per-layer references against the rest of the space."""
    for ref, values in spec.when:
        ref_node = node["when"][ref]
        if ref == spec.name:
            raise ref_node.error(f"{spec.name} cannot depend on itself")
        if ref not in hypers:
            raise ref_node.error(f"unknown parameter {ref!r}; conditions may name: {', '.join(hypers)}")
        if hypers[ref].per is not None:
            raise ref_node.error(f"{ref} is per-layer; conditions may only name single-valued hyperparameters")
        possible = specs[ref].dist if ref in specs else Fixed(hypers[ref].default)
        for value in values:
            message = hypers[ref].problem(value)
            if message:
                raise ref_node.error(message)
            if not possible.contains(value):
                raise ref_node.error(f"{ref} never takes {value!r} in this space ({possible.describe()})")
    if isinstance(spec.dist, Fixed) and isinstance(spec.dist.value, list):
        count = specs[spec.hyper.per].dist if spec.hyper.per in specs else Fixed(hypers[spec.hyper.per].default)
        if not isinstance(count, Fixed) or count.value != len(spec.dist.value):
            raise node.error(f"a list gives one value per layer, so {spec.hyper.per} must be fixed at "
                             f"{len(spec.dist.value)} (it is {count.describe()}); or use per_layer: true")
    return spec


def _sampling_order(specs: list[ParamSpec], root: Node) -> tuple[ParamSpec, ...]:
    """File order, except that a hyperparameter comes after those it depends on."""
    names = {spec.name for spec in specs}
    placed: list[ParamSpec] = []
    pending = list(specs)
    while pending:
        done = {spec.name for spec in placed}
        ready = next((s for s in pending if all(d in done or d not in names for d in s.depends_on)), None)
        if ready is None:
            cycle = ", ".join(s.name for s in pending)
            raise ConfigError(root.file, f"{pending[0].key_path}.when", f"circular conditions among: {cycle}")
        placed.append(ready)
        pending.remove(ready)
    return tuple(placed)

