"""Hypothesis strategies for fuzzing the YAML loaders and the command line: random YAML documents, valid
documents with random edits, and YAML text with the constructs a hand-written file may hold (tags, anchors,
dates, huge numbers, non-string keys)."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import strategies as st

from ntksearch.validation import ConfigError

# Words the loaders look for, so that random documents get past the first checks.
WORDS = [
    "family", "description", "hyperparameters", "train", "mlp", "cnn", "rnn", "nb201", "transformer", "depth",
    "width", "channels", "stages", "hidden", "cell", "init_scale", "activation", "relu", "norm", "dropout", "type",
    "int", "float", "categorical", "low", "high", "step", "log", "choices", "per_layer", "when", "learning_rate",
    "auto", "optimizer", "momentum", "adam", "sgd", "weight_decay", "batch_size", "epochs", "name", "seed",
    "dataset", "digits", "fashion_mnist", "file", "path", "space", "space.yaml", "scoring", "ntk", "method",
    "exact", "hutch++", "max_matvecs", "rtol", "objective", "default_score", "proxy", "direction", "maximize",
    "combine", "weighted_log", "proxies", "ntk_trace", "n_params", "record", "all", "sampler", "tpe", "grid",
    "n_startup_trials", "trials", "timeout", "storage", "url", "sqlite:///x.db", "journal:", "study", "output",
    "confirm", "top_k", "random_k", "max_train", "lr_fraction", "none", "null", "true", "", " ", "é", "💥",
]

# Strings that are awkward as names, paths and URLs.
NASTY = ["a\x00b", "~nouser/x", "/proc/x", "/", ".", "..", "sqlite:///", "sqlite:///~nouser/x.db",
         "sqlite:///a\x00b.db", "journal:", "journal:a\x00b", "redis://x", "-1", "1e999", "NaN", "\u202e", "x" * 300]

SCALARS = st.one_of(
    st.none(), st.booleans(), st.sampled_from(WORDS), st.sampled_from(NASTY),
    st.integers(-3, 70), st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-5.0, 5.0), st.text(max_size=12),
)


def documents(depth: int = 3) -> st.SearchStrategy[Any]:
    """Random YAML-representable values: scalars, lists and mappings (string keys mostly)."""
    keys = st.one_of(st.sampled_from(WORDS), st.text(max_size=8), st.integers(-2, 3), st.booleans())
    return st.recursive(SCALARS, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)), max_leaves=12 if depth else 1)


@st.composite
def edited(draw: st.DrawFn, document: Any) -> Any:
    """``document`` with 1-3 random edits at random key paths: a value replaced, a key removed or added."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        parent, key = _random_place(draw, doc)
        if parent is None:
            return draw(documents())
        action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if action == "remove" and isinstance(parent, dict):
            parent.pop(key, None)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(WORDS))] = draw(documents())
        else:
            parent[key] = draw(documents())
    return doc


def _random_place(draw: st.DrawFn, doc: Any) -> tuple[Any, Any]:
    """A (container, key) somewhere in ``doc``, chosen by walking down random children."""
    parent, key = None, None
    node = doc
    while isinstance(node, dict | list) and node and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
        parent, node = node, node[key]
    if parent is None and isinstance(doc, dict | list) and doc:
        key = draw(st.sampled_from(list(doc) if isinstance(doc, dict) else range(len(doc))))
        parent = doc
    return parent, key


# YAML text the Python-object strategies never produce.
SPECIAL_YAML = [
    "!!python/object/apply:os.system ['true']", "!!binary aGVsbG8=", "2024-01-31", "2024-01-31T10:00:00Z",
    "!!set {a, b}", "&anchor [1, *anchor]", "*undefined", "1e400", "-.inf", ".nan", "0x1F", "0o17", "1_000",
    "~", "'quoted: colon'", "\"\\u00e9\"", "? [complex, key]\n: 1", "!!str 3", "!!int '12'", "{a: 1, a: 2}",
    "[1, 2", "key: value\n  bad indent: 1", "\t", "---\n---\na: 1", "%YAML 1.1\n---\n1", "|\n  block text",
    "!!timestamp 2001-12-14", "!!float '1'", "!custom 3", "{? x}", "- - - 1",
]


@st.composite
def yaml_texts(draw: st.DrawFn, document: Any) -> str:
    """YAML text: ``document`` dumped, with one scalar replaced by a special construct or the text cut short."""
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    how = draw(st.sampled_from(["special", "special", "cut", "raw"]))
    if how == "raw":
        return draw(st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>'\"#%@`,? \n\tabc0123é")), max_size=40))
    if how == "cut":
        return text[: draw(st.integers(0, len(text)))]
    lines = text.splitlines() or [""]
    index = draw(st.integers(0, len(lines) - 1))
    head, sep, _ = lines[index].partition(": ")
    special = draw(st.sampled_from(SPECIAL_YAML))
    lines[index] = f"{head}: {special}" if sep else special
    return "\n".join(lines) + "\n"


def loaded_or_config_error(load, path, *files) -> Any:
    """``load(path)``'s result, or ``None`` after a ConfigError that names one of ``files`` (default: ``path``)
    and a key path; any other exception propagates (and fails the test)."""
    try:
        return load(path)
    except ConfigError as exc:
        assert exc.file in {str(f) for f in (files or (path,))}, str(exc)
        assert exc.key_path and str(exc).startswith(f"{exc.file}: {exc.key_path}: "), str(exc)
        return None
