"""A throwaway PostgreSQL server on loopback for the multi-worker tests.

Uses ``NTKSEARCH_TEST_POSTGRES_URL`` when set; otherwise starts a fresh cluster from Debian's ``postgresql``
binaries (installed by ``scripts/system-deps.sh``) in a temporary directory, on a free port, owned by the
``postgres`` system user when the tests run as root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV_URL = "NTKSEARCH_TEST_POSTGRES_URL"


class PostgresUnavailable(RuntimeError):
    """No server URL is configured and no PostgreSQL binaries are installed."""


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise PostgresUnavailable("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL of an empty database on a running server; stop and delete it afterwards."""
    if os.environ.get(ENV_URL):
        yield os.environ[ENV_URL]
        return
    bin_dir = _bin_dir()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    workdir = Path(tempfile.mkdtemp(prefix="ntksearch-pg-"))
    data = workdir / "data"
    port = _free_port()
    if as_root:
        shutil.chown(workdir, "postgres", "postgres")
    run = lambda *args: subprocess.run([*prefix, *map(str, args)], check=True, capture_output=True, text=True)
    try:
        run(bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "ntksearch", "--no-sync")
        run(bin_dir / "pg_ctl", "-D", data, "-w", "-l", workdir / "log",
            "-o", f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        run(bin_dir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "ntksearch", "ntksearch")
        yield f"postgresql+psycopg2://ntksearch@127.0.0.1:{port}/ntksearch"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
