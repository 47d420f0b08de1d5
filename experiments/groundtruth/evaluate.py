"""How well do zero-cost proxies rank trained accuracy, task by task, and which default score does RULE.md choose?

Inputs (next to this file): every task's ground truth and proxy table (:mod:`tables`). Output: RESULTS.md with

1. the tasks: units, families, seed-to-seed noise ceilings;
2. per task, every proxy's Spearman ρ, Kendall τ, top-10% hit rate and ρ within the top 10% (95% bootstrap
   intervals) over all units and per family (hyperparameter tables add the within-architecture ρ);
3. the pre-registered choice (:mod:`selection`, RULE.md): every candidate's held-out margins over the parameter
   count, the winner, the shipped default, the rule's own nested held-out estimate;
4. the shipped default against the parameter count on every task with paired bootstrap intervals of the margin;
5. the hyperparameter question (which learning rate / init scale) and published anchors beside ours.
Test accuracy never enters a fit; signs are kept.

Usage::

    .venv/bin/python experiments/groundtruth/evaluate.py            # prints and writes RESULTS.md here
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build
import selection
import tables

from ntksearch.proxies import PROXIES
from ntksearch.proxies.score import LinearScore, ScoreTerm, TieBrokenScore
from ntksearch.report.quality import rank_quality

FALLBACK = TieBrokenScore("n_params", "log", "ntk_complexity", "log", -1)  # RULE.md's size-anchored default
REPORTED = ("n_params", "synflow", "jacob_cov", "snip", "naswot", "zico", "meco", "swap", "az_nas", "vote3",
            "ntk_condition", "ntk_complexity", "lin_val_accuracy")
# NAS-Bench-201 CIFAR-10, all 15,625 cells (anchors.md): Spearman ρ / Kendall τ as published
NB201_ANCHORS = {"n_params": "ρ 0.75, τ 0.58", "synflow": "ρ 0.74, τ 0.57", "jacob_cov": "ρ 0.73",
                 "snip": "ρ 0.60", "naswot": "ρ ≈ 0.79, τ 0.56", "vote3": "ρ 0.82", "zico": "τ 0.59",
                 "az_nas": "ρ 0.91, τ 0.74", "ntk_condition": "TE-NAS τ 0.54"}


def _fmt(stats: dict, name: str) -> str:
    value, low, high = stats[name], stats[f"{name}_low"], stats[f"{name}_high"]
    return "—" if not np.isfinite(value) else f"{value:+.2f} [{low:+.2f}, {high:+.2f}]"


def proxy_rows(frame: pd.DataFrame, n_resamples: int) -> list[str]:
    """One markdown row per registered proxy present in the frame, best ρ first."""
    families = sorted(frame.family.unique())
    rows = []
    for name, proxy in PROXIES.items():
        if name not in frame:
            continue
        x = selection.transformed(frame, name)
        y = frame["accuracy"].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < selection.MIN_ROWS or np.ptp(x[ok]) == 0:
            continue
        stats = rank_quality(x[ok], y[ok], sign=proxy.sign, n_resamples=n_resamples)
        fam = []
        for f in families:
            part = ok & (frame.family == f).to_numpy()
            fam.append(f"{selection.spearman(x[part], y[part]):+.2f}" if part.sum() >= 3 else "—")
        extra = []
        if (frame["variant"] != "").any():
            w = selection.within_architecture(np.where(ok, proxy.sign * x if proxy.sign else x, np.nan), frame)
            extra = [f"{w['rho']:+.2f}", f"{w['best_first']:.2f}"]
        rows.append((stats["spearman"], f"| {name} | {_fmt(stats, 'spearman')} | {_fmt(stats, 'kendall')} | "
                     f"{_fmt(stats, 'top10_hit')} | {_fmt(stats, 'top10_spearman')} | {' | '.join(fam + extra)} |"))
    return [r for _, r in sorted(rows, key=lambda r: -r[0] if np.isfinite(r[0]) else np.inf)]


def task_section(task: str, frame: pd.DataFrame, folder: Path, n_resamples: int) -> list[str]:
    families = sorted(frame.family.unique())
    counts = ", ".join(f"{f} {int((frame.family == f).sum())}" for f in families)
    ceiling = tables.noise_ceiling(task, folder)
    hp = (frame["variant"] != "").any()
    head = ["proxy", "ρ (all)", "τ (all)", "top-10% hit", "ρ in top 10%", *(f"ρ {f}" for f in families)]
    if hp:
        head += ["ρ within arch.", "best config first"]
    return [f"### {task}: {len(frame)} units ({counts}), mean test accuracy {frame.accuracy.mean():.3f}", "",
            "Seed-to-seed noise ceiling (Spearman ρ of the two seeds' test accuracies): "
            + (", ".join(f"{k} {v:.2f}" for k, v in ceiling.items()) or "—") + ".", "",
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head), *proxy_rows(frame, n_resamples), ""]


def paired_margin(x: np.ndarray, frame: pd.DataFrame, n_resamples: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ρ(x) − ρ(n_params), rows resampled jointly."""
    keep = selection.held_out_rows(x, frame)
    a, b, y = x[keep], selection.transformed(frame, "n_params")[keep], frame["accuracy"].to_numpy(float)[keep]
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_resamples, len(y)))
    diffs = [selection.spearman(a[i], y[i]) - selection.spearman(b[i], y[i]) for i in idx]
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def selection_section(frames: dict[str, pd.DataFrame], cands: list[selection.Candidate], n_resamples: int
                      ) -> tuple[list[str], LinearScore | TieBrokenScore, str]:
    winner, table = selection.choose(cands, frames)
    tasks = list(frames)
    lines = ["## The pre-registered choice (RULE.md)", "",
             "Held-out margin = ρ(candidate) − ρ(n_params) on the held-out task's rows; fitted numbers are fit on "
             "the other tasks' validation accuracy. Sorted by the worst held-out margin (the criterion).", "",
             "| candidate | kind | fitted | worst | mean | " + " | ".join(tasks) + " |",
             "|---|---|---|---|---|---|" + "---|" * (len(tasks) - 1)]
    for _, row in table.iterrows():
        cells = [f"{row[f'margin:{t}']:+.3f}" if np.isfinite(row[f"margin:{t}"]) else "—" for t in tasks]
        kind = row.kind + ("" if row.eligible else " (not eligible)")
        lines.append(f"| {row.candidate} | {kind} | {row.fitted} | {row.worst:+.3f} | {row['mean']:+.3f} | "
                     + " | ".join(cells) + " |")
    worst = table[table.candidate == winner.name].iloc[0].worst
    if worst > 0:
        default: LinearScore | TieBrokenScore = (
            selection.fit(winner, list(frames.values())) if winner.kind == "linear" else
            LinearScore((ScoreTerm(winner.terms[0], selection.transform_of(winner.terms[0]), 0.0, 1.0,
                                   float(winner.signs[0])),)))
        verdict = (f"The winner `{winner.name}` beats the parameter count on every held-out task (worst margin "
                   f"{worst:+.3f}); it is the shipped default, refit on all {len(frames)} tasks.")
        name = winner.name
    else:
        default, name = FALLBACK, "size-anchored (n_params, ties broken by ntk_complexity)"
        shortfalls = [f"`{r.candidate}` {r.worst:+.3f} ({min(tasks, key=lambda t, r=r: r[f'margin:{t}'])})"
                      for _, r in table[table.eligible].head(5).iterrows()]
        verdict = (f"No eligible candidate beats the parameter count on every held-out task: the best worst "
                   f"margins are {', '.join(shortfalls)}. The shipped default is the size-anchored score: "
                   "the parameter count, with exact ties broken by the NTK complexity.")
    lines += ["", f"**Winner:** `{winner.name}`. {verdict}", ""]
    nest = selection.nested(cands, frames)
    lines += ["### The rule's own held-out estimate (nested leave-one-task-out)", "",
              "For each task: the rule chooses on the other five tasks (inner leave-one-task-out), the chosen "
              "candidate is refit on them and scored on this task.", "",
              "| held-out task | chosen on the others | n | ρ | ρ n_params | margin |", "|---|---|---|---|---|---|"]
    for _, r in nest.iterrows():
        lines.append(f"| {r.task} | {r.chosen} | {r.n} | {r.rho:+.3f} | {r.rho_params:+.3f} | {r.margin:+.3f} |")
    lines += ["", f"Worst nested margin {nest.margin.min():+.3f}, mean {nest.margin.mean():+.3f}.", ""]
    lines += default_section(name, default, winner, frames, n_resamples)
    return lines, default, name


def default_section(name: str, default: LinearScore | TieBrokenScore, winner: selection.Candidate,
                    frames: dict[str, pd.DataFrame], n_resamples: int) -> list[str]:
    lines = [f"### The shipped default ({name}) against the parameter count", "",
             "Held-out scores (a fitted default is refit without the task it is scored on). Cells: value "
             "[95% bootstrap interval].", "",
             "| task | n | ρ default | ρ n_params | margin [paired 95%] | τ default | τ n_params | top-10% hit "
             "default / n_params | ρ in top 10% default / n_params |", "|---|---|---|---|---|---|---|---|---|"]
    for task, test in frames.items():
        if isinstance(default, TieBrokenScore):
            x = np.array([default({p: row.get(p, np.nan) for p in default.proxies}) for _, row in test.iterrows()])
        else:
            x = selection.candidate_scores(winner, [f for t, f in frames.items() if t != task], test)
        keep = selection.held_out_rows(x, test)
        y = test["accuracy"].to_numpy(float)[keep]
        s = rank_quality(x[keep], y, n_resamples=n_resamples)
        p = rank_quality(selection.transformed(test, "n_params")[keep], y, n_resamples=n_resamples)
        low, high = paired_margin(x, test, n_resamples)
        lines.append(f"| {task} | {int(keep.sum())} | {_fmt(s, 'spearman')} | {_fmt(p, 'spearman')} | "
                     f"{s['spearman'] - p['spearman']:+.3f} [{low:+.3f}, {high:+.3f}] | {s['kendall']:+.2f} | "
                     f"{p['kendall']:+.2f} | {s['top10_hit']:.2f} / {p['top10_hit']:.2f} | "
                     f"{s['top10_spearman']:+.2f} / {p['top10_spearman']:+.2f} |")
    return [*lines, ""]


def hyperparameter_section(frames: dict[str, pd.DataFrame], cands: list[selection.Candidate]) -> list[str]:
    hp = {t: f for t, f in frames.items() if (f["variant"] != "").any()}
    lines = []
    for task, frame in hp.items():
        lines += [f"## Which learning rate and init scale? ({task})", "",
                  "Per architecture, the candidate's Spearman ρ with accuracy over its configurations, averaged "
                  "over architectures, and the fraction of architectures whose best configuration it ranks first "
                  f"(chance {1 / frame.groupby('arch_id').size().median():.3f}). Fitted candidates are fit on the "
                  "other tasks.", "", "| candidate | ρ within architecture | best configuration first |",
                  "|---|---|---|"]
        rows = []
        for cand in cands:
            x = selection.candidate_scores(cand, [f for t, f in frames.items() if t != task], frame)
            w = selection.within_architecture(x, frame)
            if np.isfinite(w["rho"]):
                rows.append((w["rho"], f"| {cand.name} | {w['rho']:+.3f} | {w['best_first']:.2f} |"))
        lines += [r for _, r in sorted(rows, key=lambda r: -r[0])] + [""]
    return lines


def anchors_section(frames: dict[str, pd.DataFrame], cands: list[selection.Candidate]) -> list[str]:
    frame = frames.get("nb201_fashion_mnist")
    if frame is None:
        return []
    lines = ["## Beside the NAS-Bench-201 literature", "",
             "Our NB201 table (C = 8, N = 1 cells, Fashion-MNIST 14×14, 4 epochs of AdamW) next to published "
             "figures on NAS-Bench-201 CIFAR-10 (all 15,625 cells, 200 epochs; different data, budget and "
             "macro skeleton, so only the ordering of proxies compares).", "",
             "| proxy | ours: ρ | ours: τ | published (NB201 CIFAR-10) |", "|---|---|---|---|"]
    by_name = {c.name: c for c in cands}
    for name in REPORTED:
        if name not in by_name:
            continue
        x = selection.candidate_scores(by_name[name], [], frame)
        keep = selection.held_out_rows(x, frame)
        if keep.sum() < selection.MIN_ROWS:
            continue
        s = rank_quality(x[keep], frame["accuracy"].to_numpy(float)[keep], n_resamples=200)
        lines.append(f"| {name} | {s['spearman']:+.2f} | {s['kendall']:+.2f} | {NB201_ANCHORS.get(name, '—')} |")
    return [*lines, ""]


def coverage_section(frames: dict[str, pd.DataFrame], folder: Path) -> list[str]:
    """Units each task was planned with (RULE.md), trained (every seed), and scored by every proxy."""
    lines = ["## Coverage", "",
             "Units planned (RULE.md), trained with every seed, joined to a proxy row, and scored by the published and "
             "linearised proxies (`zico` and `lin_val_accuracy` present); a proxy "
             "table computed for the first architectures of each family in sampling order covers a random "
             "subset. Every statistic below uses the rows a candidate has, compared with the parameter count on "
             "the same rows.", "", "| task | planned | trained | with proxies | with published + linearised |",
             "|---|---|---|---|---|"]
    for task in tables.TASKS:
        spec = build.TASKS[task]
        planned = sum(spec.counts.values()) * max(1, len(spec.variants))
        path = folder / f"{task}.csv"
        trained = 0
        if path.exists():
            gt = tables.read_table(path)
            trained = int((gt.groupby(tables.KEYS).seed.nunique() == gt.seed.nunique()).sum()) if len(gt) else 0
        frame = frames.get(task)
        scored = 0 if frame is None else len(frame)
        names = ["zico", "lin_val_accuracy"]
        full = 0 if frame is None or not set(names) <= set(frame) else int(frame[names].notna().all(axis=1).sum())
        lines.append(f"| {task} | {planned} | {trained} | {scored} | {full} |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=tables.HERE, help="folder of the ground truth and proxy CSVs")
    parser.add_argument("--out", type=Path, default=tables.HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    frames = {t: f for t in tables.TASKS if (f := tables.load_task(t, args.dir)) is not None}
    if not frames:
        raise SystemExit("no ground truth found: run build.py and proxies.py first")
    missing = [t for t in tables.TASKS if t not in frames]
    cands = selection.candidate_list({name: p.sign for name, p in PROXIES.items()})
    lines = ["# Proxy quality on the ground truth", "",
             "Generated by `experiments/groundtruth/evaluate.py` from the committed CSVs. Target: test accuracy "
             "averaged over the seeds; fits use validation accuracy only. Each cell: value [95% bootstrap "
             "interval]. Top-10% hit: fraction of the 10% most accurate units that the proxy (read in its "
             "registry sign) also ranks in its top 10% (chance ≈ 0.10).", ""]
    if missing:
        lines += [f"**Incomplete:** no proxy table yet for {', '.join(missing)}; the choice below is not the "
                  "pre-registered one until every task is present.", ""]
    lines += [*coverage_section(frames, args.dir), "## Tasks", ""]
    for task, frame in frames.items():
        lines += task_section(task, frame, args.dir, args.resamples)
    body, default, name = selection_section(frames, cands, args.resamples)
    lines += body + hyperparameter_section(frames, cands) + anchors_section(frames, cands)
    lines += ["## Final constants", "", f"Shipped default: {name}.", "", "```python", repr(default), "```", ""]
    text = "\n".join(lines)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
