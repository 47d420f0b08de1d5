"""Declared settings: one dataclass field carries a setting's type, default, allowed values and documentation.

A settings class (``NTKOptions``, ``LinearisedOptions``, ``ConfirmSpec``...) declares each field with
:func:`setting`; YAML validation (:func:`parse_settings`) and the README's config reference
(:func:`reference_rows`) are derived from those declarations, so adding a setting is one edit and the
Python API, the config files and the documentation cannot drift apart.

The type comes from the field's annotation: ``int``, ``float``, ``bool``, ``str`` or a union of them with
``None`` (a YAML ``null``), e.g. ``float | str`` for a number or one of ``choices`` (``learning_rate: auto``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from ntksearch.validation import Node

__all__ = [
    "Allowed",
    "check_settings",
    "check_value",
    "declared_settings",
    "kinds_of",
    "parse_settings",
    "reference_rows",
    "setting",
]


@dataclass(frozen=True)
class Allowed:
    """What a setting allows besides its type: a range (open or closed at either end) and string choices (a
    tuple, or a registry dict whose keys are read when a value is checked, so later registrations count)."""

    doc: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: Collection[str] | None = None

    def describe(self, kinds: frozenset[str]) -> str:
        """``[0, 1)``, ``≥ 1``, ``> 0``, ``auto, exact``... as the reference shows it."""
        parts = []
        if self.minimum is not None and self.maximum is not None:
            parts.append(f"{'(' if self.exclusive_minimum else '['}{self.minimum:g}, {self.maximum:g}"
                         f"{')' if self.exclusive_maximum else ']'}")
        elif self.minimum is not None:
            parts.append(f"{'>' if self.exclusive_minimum else '≥'} {self.minimum:g}")
        elif self.maximum is not None:
            parts.append(f"{'<' if self.exclusive_maximum else '≤'} {self.maximum:g}")
        if self.choices:
            parts.append(", ".join(self.choices))
        if "bool" in kinds:
            parts.append("true, false")
        if "None" in kinds:
            parts.append("null")
        return " or ".join(parts)


def setting(default: Any = dataclasses.MISSING, *, doc: str, minimum: float | None = None,
            maximum: float | None = None, exclusive_minimum: bool = False, exclusive_maximum: bool = False,
            choices: Collection[str] | None = None) -> Any:
    """A dataclass field declaring a setting (module docstring)."""
    allowed = Allowed(doc, minimum, maximum, exclusive_minimum, exclusive_maximum, choices)
    return dataclasses.field(default=default, metadata={"setting": allowed})


def kinds_of(annotation: Any) -> frozenset[str]:
    """The type names of an annotation as a string: ``"int | None"`` → {int, None}."""
    return frozenset(part.strip() for part in str(annotation).split("|"))


def declared_settings(cls: type) -> Iterator[tuple[dataclasses.Field, Allowed, frozenset[str]]]:
    """Each setting field of ``cls`` with its declaration and its type names, in field order."""
    for f in dataclasses.fields(cls):
        if "setting" in f.metadata:
            yield f, f.metadata["setting"], kinds_of(f.type)


def check_value(node: Node, kinds: frozenset[str], allowed: Allowed = Allowed("")) -> Any:
    """``node``'s value checked against the type names ``kinds`` (:func:`kinds_of`) and ``allowed``; a
    ConfigError at the node names the bad value and what is allowed."""
    value = node.value
    if value is None and "None" in kinds:
        return None
    if isinstance(value, str) and "str" in kinds:
        return node.string(choices=allowed.choices)
    if "bool" in kinds:
        return node.boolean()
    low, high = allowed.minimum, allowed.maximum
    if "int" in kinds and "float" not in kinds:
        return node.integer(minimum=None if low is None else int(low), maximum=None if high is None else int(high))
    if "float" not in kinds:
        return node.string(choices=allowed.choices)
    checked = node.number(minimum=low, maximum=None if allowed.exclusive_maximum else high,
                          exclusive_minimum=allowed.exclusive_minimum)
    if allowed.exclusive_maximum and high is not None and checked >= high:
        raise node.error(f"{value!r} is not allowed; it must be in {allowed.describe(frozenset())}")
    return checked


def check_settings(node: Node, cls: type) -> dict[str, Any]:
    """The values of a YAML mapping whose keys are ``cls``'s settings, each checked against its declaration;
    unknown keys raise a ConfigError listing the allowed ones."""
    declared = {f.name: (allowed, kinds) for f, allowed, kinds in declared_settings(cls)}
    keys = node.mapping(optional=declared)
    return {key: check_value(node[key], declared[key][1], declared[key][0]) for key in keys}


def parse_settings(node: Node | None, cls: type) -> Any:
    """``cls(**values)`` from a YAML mapping (:func:`check_settings`); absent keys keep their defaults."""
    return cls() if node is None else cls(**check_settings(node, cls))


def reference_rows(cls: type, prefix: str) -> list[str]:
    """Markdown table rows ``| prefix.key | type | default | allowed | meaning |`` of ``cls``'s settings."""
    rows = []
    for f, allowed, kinds in declared_settings(cls):
        default = "required" if f.default is dataclasses.MISSING else "null" if f.default is None else f.default
        if isinstance(default, bool):
            default = str(default).lower()
        kind = " or ".join(sorted(kinds - {"None"}))
        rows.append(f"| `{prefix}.{f.name}` | {kind} | `{default}` | {allowed.describe(kinds) or 'any'} | "
                    f"{allowed.doc} |")
    return rows
