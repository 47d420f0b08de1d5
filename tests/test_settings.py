"""Declared settings: validation and the reference derived from one field declaration."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ntksearch.settings import check_value, kinds_of, parse_settings, reference_rows, setting
from ntksearch.validation import ConfigError, Node


@dataclass(frozen=True)
class Options:
    rate: float | str = setting("auto", minimum=0, exclusive_minimum=True, choices=("auto",), doc="a rate")
    steps: int = setting(10, minimum=1, doc="how many")
    beta: float = setting(0.0, minimum=0, maximum=1, exclusive_maximum=True, doc="momentum")
    size: int | None = setting(None, minimum=1, doc="optional size")
    flag: bool = setting(True, doc="a switch")


def parse(doc: object) -> Options:
    return parse_settings(Node(doc, "cfg.yaml", "opts"), Options)


def test_values_are_checked_against_their_declaration() -> None:
    assert parse_settings(None, Options) == Options() == parse({})
    assert parse({"rate": 0.5, "steps": 3, "beta": 0.9, "size": None, "flag": False}) == Options(0.5, 3, 0.9, None,
                                                                                                  False)
    assert parse({"rate": "auto", "size": 4}) == Options(size=4)


@pytest.mark.parametrize(("doc", "where", "fragment"), [
    ({"rate": 0}, "opts.rate", "must be > 0"),
    ({"rate": "fast"}, "opts.rate", "'fast' is not allowed"),
    ({"steps": 0}, "opts.steps", "below the minimum 1"),
    ({"steps": 1.5}, "opts.steps", "expected an integer"),
    ({"beta": 1}, "opts.beta", "must be in [0, 1)"),
    ({"size": 0}, "opts.size", "below the minimum 1"),
    ({"flag": "yes"}, "opts.flag", "expected true or false"),
    ({"stepz": 2}, "opts.stepz", "beta, flag, rate, size, steps"),
])
def test_bad_values_name_the_key_and_what_is_allowed(doc: dict, where: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(doc)
    assert info.value.key_path == where and fragment in info.value.message


def test_reference_rows_show_type_default_and_bounds() -> None:
    rows = reference_rows(Options, "x")
    assert rows[0] == "| `x.rate` | float or str | `auto` | > 0 or auto | a rate |"
    assert rows[2] == "| `x.beta` | float | `0.0` | [0, 1) | momentum |"
    assert rows[3] == "| `x.size` | int | `null` | ≥ 1 or null | optional size |"
    assert rows[4] == "| `x.flag` | bool | `true` | true, false | a switch |"


@pytest.mark.parametrize(("annotation", "value", "expected"), [
    ("int", 3, 3), ("int | None", None, None), ("float", 2, 2.0), ("str", "a", "a"), ("bool", False, False)])
def test_values_are_checked_against_a_plain_annotation(annotation: str, value: object, expected: object) -> None:
    got = check_value(Node(value, "cfg.yaml", "dataset.option"), kinds_of(annotation))
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("annotation", "value", "fragment"), [
    ("int", 1.5, "expected an integer"), ("int", None, "expected an integer"), ("float", "x", "expected a number"),
    ("str", 3, "expected a string")])
def test_bad_values_for_an_annotation_name_the_key(annotation: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=r"cfg\.yaml: dataset\.option: ") as info:
        check_value(Node(value, "cfg.yaml", "dataset.option"), kinds_of(annotation))
    assert fragment in str(info.value)
