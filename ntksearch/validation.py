"""Validation of YAML documents (search spaces, experiment configs) with precise error messages.

Every problem raises :class:`ConfigError` naming the file, the key path (``layers.width.high``) and what is
allowed. The helpers below are the only way the spaces and config loaders inspect raw YAML, so every message
has the same shape.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "Node",
    "is_file",
    "load_yaml",
    "path_problem",
]


class ConfigError(ValueError):
    """A malformed space or config: ``<file>: <key.path>: <message>``."""

    def __init__(self, file: str | Path | None, key_path: str, message: str):
        self.file = str(file) if file is not None else "<memory>"
        self.key_path = key_path or "<root>"
        self.message = message
        super().__init__(f"{self.file}: {self.key_path}: {message}")


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error becomes a :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read file ({exc.strerror or exc})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(path, "", f"invalid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:  # PyYAML's scalar constructors on
        # malformed tagged values (!!int 'x', some !!timestamp) raise these instead of a YAMLError
        raise ConfigError(path, "", f"invalid YAML: {type(exc).__name__}: {exc}") from exc


class Node:
    """A value inside a YAML document together with its file and key path, for precise errors.

    Example::

        root = Node(load_yaml(path), path)
        cfg = root.mapping(required={"dataset"}, optional={"seed", "trials"})
        seed = root["seed"].integer(minimum=0) if "seed" in cfg else 0
    """

    def __init__(self, value: Any, file: str | Path | None, path: str = ""):
        self.value = value
        self.file = file
        self.path = path

    def error(self, message: str) -> ConfigError:
        return ConfigError(self.file, self.path, message)

    def child(self, key: str | int) -> Node:
        sub = f"{self.path}.{key}" if self.path and isinstance(key, str) else (
            f"{self.path}[{key}]" if isinstance(key, int) else str(key)
        )
        value = self.value[key]
        return Node(value, self.file, sub)

    def __getitem__(self, key: str | int) -> Node:
        return self.child(key)

    def __contains__(self, key: str) -> bool:
        return isinstance(self.value, Mapping) and key in self.value

    def get(self, key: str) -> Node | None:
        return self.child(key) if key in self else None

    # -- shape checks --------------------------------------------------------------------------------------
    def mapping(self, *, required: Collection[str] = (), optional: Collection[str] = ()) -> dict[str, Any]:
        """Check a mapping with exactly the allowed keys; unknown keys are errors."""
        if not isinstance(self.value, Mapping):
            raise self.error(f"expected a mapping, got {_describe(self.value)}")
        allowed = set(required) | set(optional)
        for key in self.value:
            if not isinstance(key, str):
                raise self.error(f"keys must be strings, got {key!r}")
            if allowed and key not in allowed:
                raise ConfigError(self.file, f"{self.path}.{key}" if self.path else key,
                                  f"unknown key; allowed here: {', '.join(sorted(allowed))}")
        missing = sorted(set(required) - set(self.value))
        if missing:
            raise self.error(f"missing required key(s): {', '.join(missing)}")
        return dict(self.value)

    def sequence(self, *, min_length: int = 0) -> list[Any]:
        if not isinstance(self.value, list):
            raise self.error(f"expected a list, got {_describe(self.value)}")
        if len(self.value) < min_length:
            raise self.error(f"expected at least {min_length} item(s), got {len(self.value)}")
        return list(self.value)

    def items(self) -> list[Node]:
        """Child nodes of a list."""
        return [self.child(i) for i in range(len(self.sequence()))]

    def string(self, *, choices: Collection[str] | None = None) -> str:
        if not isinstance(self.value, str):
            raise self.error(f"expected a string, got {_describe(self.value)}")
        if choices is not None and self.value not in choices:
            raise self.error(f"{self.value!r} is not allowed; choose one of: {', '.join(sorted(choices))}")
        return self.value

    def file_path(self) -> Path:
        """A file-system path (``~`` expanded): a non-empty string without NUL characters."""
        text = self.string()
        problem = path_problem(text)
        if problem:
            raise self.error(problem)
        return Path(text).expanduser()

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.error(f"expected true or false, got {_describe(self.value)}")
        return self.value

    def integer(self, *, minimum: int | None = None, maximum: int | None = None) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.error(f"expected an integer, got {_describe(self.value)}")
        _check_range(self, self.value, minimum, maximum)
        return self.value

    def number(self, *, minimum: float | None = None, maximum: float | None = None,
               exclusive_minimum: bool = False) -> float:
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise self.error(f"expected a number, got {_describe(self.value)}")
        value = float(self.value)
        if value != value or value in (float("inf"), float("-inf")):
            raise self.error(f"expected a finite number, got {self.value!r}")
        if exclusive_minimum and minimum is not None and value <= minimum:
            raise self.error(f"{self.value!r} must be > {minimum}")
        _check_range(self, value, None if exclusive_minimum else minimum, maximum)
        return value


def path_problem(text: str) -> str | None:
    """Why ``text`` cannot name a file (empty, a NUL character, an unknown ``~user``), or ``None``."""
    if not text:
        return "expected a file path, got an empty string"
    if "\x00" in text:
        return f"{text!r} is not a file path: it contains a NUL character"
    try:
        Path(text).expanduser()
    except RuntimeError as exc:
        return f"{text!r} is not a file path: {exc}"
    return None


def is_file(path: Path) -> bool:
    """``path.is_file()``, and False (not an OSError) where the name itself is unusable: too long, ..."""
    try:
        return path.is_file()
    except OSError:
        return False


def _check_range(node: Node, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise node.error(f"{value!r} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise node.error(f"{value!r} is above the maximum {maximum}")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping | list):
        return type(value).__name__
    return f"{type(value).__name__} {value!r}"
