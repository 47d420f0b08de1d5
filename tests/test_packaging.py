"""The installed package's metadata: one version, the PostgreSQL driver only as an extra."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import ntksearch

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def test_version_is_written_once() -> None:
    assert ntksearch.__version__ == metadata.version("ntksearch") == PYPROJECT["project"]["version"]


def test_postgres_driver_is_an_extra() -> None:
    requires = metadata.requires("ntksearch") or []
    drivers = [r for r in requires if r.lower().startswith(("psycopg", "asyncpg", "pg8000"))]
    assert drivers, "the postgres extra declares a driver"
    assert all('extra == "postgres"' in r for r in drivers), drivers  # `pip install .` installs none of them
    assert not any("psycopg" in d for d in PYPROJECT["project"]["dependencies"])
