"""Reading stored studies needs the trial-attribute names, not the search stack (configs, objective, study)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ntksearch


def test_importing_report_imports_only_the_attribute_names_of_search() -> None:
    code = "import sys, ntksearch.report; print(sorted(m for m in sys.modules if m.startswith('ntksearch.search')))"
    env = {**os.environ, "PYTHONPATH": str(Path(ntksearch.__file__).parents[1])}  # this checkout's ntksearch
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "['ntksearch.search', 'ntksearch.search.attrs']"


def test_search_names_are_imported_on_first_use() -> None:
    import ntksearch.search as search
    from ntksearch.search.proxy_objective import ProxyObjective
    from ntksearch.search.study import retry_links

    assert search.ProxyObjective is ProxyObjective and search.attrs.retry_links is retry_links
    assert set(search.__all__) <= set(dir(search))
    assert all(getattr(search, name) is not None for name in search.__all__)
