"""Reports of a search: ranked leaderboards, their exports (CSV, Parquet, Markdown, JSON, HTML), proxy quality."""

from ntksearch.report.export import FORMATS, export_leaderboard, markdown_table
from ntksearch.report.html import leaderboard_html
from ntksearch.report.leaderboard import leaderboard_frame, pareto_ranks
from ntksearch.report.quality import proxy_quality

__all__ = [
    "FORMATS",
    "export_leaderboard",
    "leaderboard_frame",
    "leaderboard_html",
    "markdown_table",
    "pareto_ranks",
    "proxy_quality",
]
