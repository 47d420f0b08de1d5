"""Write a leaderboard in several formats: CSV, Parquet, Markdown, JSON and a self-contained HTML page.

``leaderboard.<ext>`` holds every column (the Markdown file the main ones, to stay readable); with
confirmations, ``proxy_quality.csv`` holds the proxy-quality table, which the Markdown and HTML files show too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import optuna
import pandas as pd

from ntksearch.report.html import leaderboard_html
from ntksearch.report.leaderboard import leaderboard_frame
from ntksearch.report.quality import proxy_quality

__all__ = ["FORMATS", "export_leaderboard", "markdown_table"]

_MARKDOWN_COLUMNS = ["rank", "trial", "state", "fail_reason", "pareto_front", "rank_aggregate", "val_accuracy",
                     "diverged", "arch", "n_params", "flops"]


def _csv(frame: pd.DataFrame, quality: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False)


def _parquet(frame: pd.DataFrame, quality: pd.DataFrame, path: Path) -> None:
    import pyarrow

    out = frame.copy()
    for column in [c for c in out.columns if pd.api.types.is_object_dtype(out[c])]:  # mixed types: as text
        try:
            pyarrow.array(out[column], from_pandas=True)
        except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):
            out[column] = out[column].map(lambda v: None if v is None or v is pd.NA else str(v))
    out.to_parquet(path, index=False)


def _json(frame: pd.DataFrame, quality: pd.DataFrame, path: Path) -> None:
    frame.to_json(path, orient="records", indent=2)


def _markdown(frame: pd.DataFrame, quality: pd.DataFrame, path: Path) -> None:
    columns = [c for c in [*_MARKDOWN_COLUMNS[:4], *frame.attrs.get("objectives", []), *_MARKDOWN_COLUMNS[4:]]
               if c in frame]
    text = f"# Leaderboard: {frame.attrs.get('study', '')}\n\n{markdown_table(frame[columns])}"
    if len(quality):
        text += f"\n## Proxy quality (rank correlation with confirmed accuracy)\n\n{markdown_table(quality)}"
    path.write_text(text)


def _html(frame: pd.DataFrame, quality: pd.DataFrame, path: Path) -> None:
    path.write_text(leaderboard_html(frame, quality, title=f"ntksearch leaderboard: {frame.attrs.get('study', '')}"))


FORMATS: dict[str, tuple[str, Callable[[pd.DataFrame, pd.DataFrame, Path], None]]] = {
    "csv": ("leaderboard.csv", _csv),
    "parquet": ("leaderboard.parquet", _parquet),
    "md": ("leaderboard.md", _markdown),
    "json": ("leaderboard.json", _json),
    "html": ("leaderboard.html", _html),
}


def export_leaderboard(study_or_frame: optuna.Study | pd.DataFrame, out_dir: str | Path, *,
                       formats: Iterable[str] = tuple(FORMATS)) -> dict[str, Path]:
    """Write the leaderboard of a study (or a :func:`leaderboard_frame`) to ``out_dir``.

    Args:
      formats: keys of :data:`FORMATS` (csv, parquet, md, json, html).
    Returns: format → written file (``quality`` → ``proxy_quality.csv`` when there are confirmations).
    """
    formats = list(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(unknown)}; choose from: {', '.join(FORMATS)}")
    frame = study_or_frame if isinstance(study_or_frame, pd.DataFrame) else leaderboard_frame(study_or_frame)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    quality = proxy_quality(frame)
    written = {}
    for name in formats:
        filename, write = FORMATS[name]
        write(frame, quality, out_dir / filename)
        written[name] = out_dir / filename
    quality_file = out_dir / "proxy_quality.csv"
    if len(quality):
        quality.to_csv(quality_file, index=False)
        written["quality"] = quality_file
    else:  # not an earlier run's table beside this leaderboard
        quality_file.unlink(missing_ok=True)
    return written


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (numbers to 4 significant digits, missing values empty)."""
    def cell(value: object) -> str:
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return ""
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"
