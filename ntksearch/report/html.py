"""A self-contained HTML leaderboard page: inline SVG plots (matplotlib), the quality table and the leaderboard.

Nothing is loaded from the network and no JavaScript runs: the plots are SVG with text drawn as paths,
embedded in the page. Plots: the optimisation history (first objective per trial and the best so far), the
Pareto front (several objectives: the first two), and each score column against confirmed accuracy; scale
quantities spanning two decades or more get log axes.
"""

from __future__ import annotations

import html
import io

import numpy as np
import pandas as pd

from ntksearch.report.quality import score_columns

__all__ = ["leaderboard_html", "svg"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
.table { overflow-x: auto; max-height: 40em; }
table { border-collapse: collapse; font-size: 0.8em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; position: sticky; top: 0; }
"""
_MAX_SCATTERS = 24
_LOG_SPAN = 100.0


def svg(fig) -> str:  # fig: matplotlib.figure.Figure
    """The figure as an inline ``<svg>`` element (no XML prolog), text as paths."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "ntksearch"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def leaderboard_html(frame: pd.DataFrame, quality: pd.DataFrame | None = None, *, title: str = "ntksearch") -> str:
    """The page for a leaderboard ``frame`` (and its proxy-quality table, when there are confirmations)."""
    objectives, directions = frame.attrs.get("objectives", []), frame.attrs.get("directions", [])
    counts = frame["state"].value_counts().to_dict() if "state" in frame else {}
    summary = ", ".join(f"{n} {state.lower()}" for state, n in counts.items()) or "no trials"
    plots = [_history(frame, objectives[0], directions[0])] if objectives and len(frame) else []
    if len(objectives) > 1:
        plots.append(_pareto(frame, objectives[:2]))
    described = ", ".join(f"{o} ({d})" for o, d in zip(objectives, directions, strict=True))
    sections = [f"<h1>{html.escape(title)}</h1>",
                f"<p>Objectives: {html.escape(described)}. Trials: {html.escape(summary)}.</p>"]
    if plots:
        sections += ["<h2>Search</h2>", f'<div class="plots">{"".join(plots)}</div>']
    scatters = _accuracy_scatters(frame)
    if scatters:
        sections += ["<h2>Score vs confirmed accuracy</h2>", f'<div class="plots">{scatters}</div>']
    if quality is not None and len(quality):
        sections += ["<h2>Proxy quality (rank correlation with confirmed accuracy, 95% bootstrap CI)</h2>",
                     _table(quality)]
    sections += ["<h2>Leaderboard</h2>", _table(frame)]
    body = "\n".join(sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def _table(frame: pd.DataFrame) -> str:
    shown = frame.where(frame.notna(), np.nan)  # None in object columns: shown empty too
    for column in shown.columns:  # nullable integers (rank, pareto_front): empty, not <NA>, when missing
        if isinstance(shown[column].dtype, pd.api.extensions.ExtensionDtype):
            shown[column] = shown[column].astype(object).where(shown[column].notna(), "")
    return f'<div class="table">{shown.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}")}</div>'


def _figure(width: float = 4.5, height: float = 3.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot()


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(float)


def _log_if_scale(ax, axis: str, values: np.ndarray) -> None:
    """A log axis for a scale quantity: positive values spanning at least ``_LOG_SPAN``× (NTK trace, Frobenius
    norm, λ_max, parameter counts); on a linear axis they pile up at 0."""
    finite = values[np.isfinite(values)]
    if finite.size >= 2 and finite.min() > 0 and finite.max() >= _LOG_SPAN * finite.min():
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _history(frame: pd.DataFrame, objective: str, direction: str) -> str:
    done = frame[frame["state"] == "COMPLETE"].sort_values("trial")
    fig, ax = _figure()
    x, y = done["trial"].to_numpy(), _numeric(done, objective)
    best = np.fmax.accumulate(y) if direction == "maximize" else np.fmin.accumulate(y)
    ax.plot(x, y, "o", ms=3, alpha=0.6, label="trial")
    ax.step(x, best, where="post", color="C3", label="best so far")
    failed = frame.loc[frame["state"] == "FAIL", "trial"].to_numpy()
    if failed.size and y.size:
        ax.plot(failed, np.full(failed.size, np.nanmin(y)), "x", color="gray", label="failed")
    _log_if_scale(ax, "y", y)
    ax.set(xlabel="trial", ylabel=objective, title="Optimisation history")
    ax.legend(fontsize=7)
    return svg(fig)


def _pareto(frame: pd.DataFrame, objectives: list[str]) -> str:
    done = frame[frame["state"] == "COMPLETE"]
    fig, ax = _figure()
    on_front = done["pareto_front"].to_numpy(float) == 1
    x, y = _numeric(done, objectives[0]), _numeric(done, objectives[1])
    ax.plot(x[~on_front], y[~on_front], "o", ms=3, alpha=0.5, color="gray", label="dominated")
    order = np.argsort(x[on_front])
    ax.plot(x[on_front][order], y[on_front][order], "o-", ms=4, color="C3", label="Pareto front")
    _log_if_scale(ax, "x", x)
    _log_if_scale(ax, "y", y)
    ax.set(xlabel=objectives[0], ylabel=objectives[1], title="Pareto front")
    ax.legend(fontsize=7)
    return svg(fig)


def _accuracy_scatters(frame: pd.DataFrame) -> str:
    if "val_accuracy" not in frame:
        return ""
    accuracy = _numeric(frame, "val_accuracy")
    out = []
    for column in list(score_columns(frame))[:_MAX_SCATTERS]:
        x = _numeric(frame, column)
        ok = np.isfinite(x) & np.isfinite(accuracy)
        if ok.sum() < 2:
            continue
        fig, ax = _figure(3.2, 2.6)
        ax.plot(x[ok], accuracy[ok], "o", ms=4)
        _log_if_scale(ax, "x", x[ok])
        ax.set(xlabel=column, ylabel="val accuracy")
        out.append(svg(fig))
    return "".join(out)
