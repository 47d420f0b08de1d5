"""How well do zero-cost proxies rank trained accuracy? The proxy-quality tables and the default score's choice.

Inputs (committed next to this file): the ground truth ``<dataset>.csv`` (``build.py``: test accuracy of each
architecture for 2 seeds) and the proxies ``proxies_<dataset>.csv`` (``proxies.py``: every registered proxy of
each architecture at seed 0's initialisation). The target is an architecture's test accuracy averaged over
its seeds; scores are fit on validation accuracy (also averaged over seeds) and judged on test accuracy,
so the test set never enters a fit. Everything below is computed from those files in a few minutes; nothing
is tuned by hand.

1. **Proxy table**: for every proxy, Spearman ρ, Kendall τ, the top-10% hit rate and ρ within the top 10%
   (:func:`ntksearch.report.quality.rank_quality`, 95% bootstrap intervals), over all architectures and per
   family, per dataset. Signs are kept.
2. **Default score**: candidate scores are pre-declared sets of proxies combined by
   :func:`ntksearch.proxies.score.fit_linear_score` (``vote`` or ``ridge``). Each is fit on training rows and
   scored on held-out rows only: leave-one-family-out within each dataset (fit on two families, test on the
   third) and leave-one-dataset-out (fit on one dataset, test on the other). The chosen score is the eligible
   candidate (needing nothing but ``apply_fn``) with the best mean held-out ρ over all folds; its held-out
   numbers are reported beside the parameter count's on the same rows. (Choosing the best of a handful of
   candidates by the same folds makes the chosen score's held-out numbers slightly optimistic; the list of
   candidates is fixed here, before seeing the results, to keep that small.) The final constants are then
   fit on all rows of both datasets and printed as a ``LinearScore``.

Usage::

    .venv/bin/python experiments/groundtruth/evaluate.py            # prints and writes RESULTS.md here
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

from ntksearch.proxies import PROXIES
from ntksearch.proxies.score import TRANSFORMS, LinearScore, fit_linear_score
from ntksearch.report.quality import STATISTICS, rank_quality

HERE = Path(__file__).resolve().parent
DATASETS = ("fashion_mnist", "digits")
FAMILIES = ("mlp", "cnn", "rnn")
LOG_PROXIES = {"n_params", "flops", "grad_norm", "snip", "ntk_trace", "ntk_frobenius", "ntk_effective_rank",
               "ntk_lambda_max", "ntk_condition", "max_stable_lr"}
NTK = ["ntk_trace", "ntk_frobenius", "ntk_effective_rank", "ntk_label_alignment", "ntk_label_alignment_centred",
       "ntk_condition"]
BASELINES = ["n_params", "flops", "grad_norm", "snip", "synflow"]
CANDIDATES: dict[str, list[str]] = {  # fixed before looking at held-out results
    "ntk_rank_align": ["ntk_effective_rank", "ntk_label_alignment_centred"],
    "ntk_rank_align_params": ["ntk_effective_rank", "ntk_label_alignment_centred", "n_params"],
    "ntk_all": NTK,
    "ntk_all_params": [*NTK, "n_params"],
    "all_apply_fn": NTK + BASELINES,
    "all_with_naswot": [*NTK, *BASELINES, "naswot"],
}


def transform_of(proxy: str) -> str:
    return "log" if proxy in LOG_PROXIES else "identity"


def load(folder: Path, dataset: str) -> pd.DataFrame | None:
    """One row per architecture: proxies, mean test and validation accuracy over its seeds (None without files)."""
    gt_path, px_path = folder / f"{dataset}.csv", folder / f"proxies_{dataset}.csv"
    if not (gt_path.exists() and px_path.exists()):
        return None
    gt = pd.read_csv(gt_path)
    gt = gt[gt["error"].isna() | (gt["error"] == "")]
    acc = gt.groupby("arch_id").agg(accuracy=("test_accuracy", "mean"), val_accuracy=("val_accuracy", "mean"),
                                    seeds=("seed", "nunique"), family=("family", "first"))
    px = pd.read_csv(px_path)
    px = px[px["error"].isna() | (px["error"] == "")].drop(columns=["family", "dataset", "error"])
    frame = acc.join(px.set_index("arch_id"), how="inner").reset_index()
    frame["dataset"] = dataset
    return frame


def noise_ceiling(folder: Path, dataset: str) -> dict[str, float]:
    """Spearman ρ between the two seeds' test accuracies, overall and per family."""
    gt = pd.read_csv(folder / f"{dataset}.csv")
    wide = gt.pivot_table(index=["arch_id", "family"], columns="seed", values="test_accuracy").dropna()
    out = {"all": scipy.stats.spearmanr(wide.iloc[:, 0], wide.iloc[:, 1]).statistic}
    for family, part in wide.groupby(level="family"):
        out[family] = scipy.stats.spearmanr(part.iloc[:, 0], part.iloc[:, 1]).statistic
    return out


def _finite(frame: pd.DataFrame, proxies: list[str]) -> pd.DataFrame:
    keep = np.ones(len(frame), bool)
    for p in proxies:
        t = np.array([TRANSFORMS[transform_of(p)](float(v)) for v in frame[p]])
        keep &= np.isfinite(t)
    return frame[keep]


def proxy_table(frame: pd.DataFrame, n_resamples: int) -> pd.DataFrame:
    """rank_quality of every proxy, over all rows and per family."""
    rows = []
    for scope, part in [("all", frame), *((f, frame[frame.family == f]) for f in FAMILIES)]:
        for name, proxy in PROXIES.items():
            pairs = part[[name, "accuracy"]].to_numpy(float)
            pairs = pairs[np.isfinite(pairs).all(axis=1)]
            if len(pairs) < 10:
                continue
            stats = rank_quality(pairs[:, 0], pairs[:, 1], sign=proxy.sign, n_resamples=n_resamples)
            rows.append({"scope": scope, "proxy": name, "n": len(pairs), **stats})
    return pd.DataFrame(rows)


def folds(frames: dict[str, pd.DataFrame]) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(name, train, test): leave one family out within each dataset, and leave one dataset out."""
    out = []
    for dataset, frame in frames.items():
        for family in FAMILIES:
            out.append((f"{dataset}: hold out {family}", frame[frame.family != family], frame[frame.family == family]))
    if len(frames) == 2:
        (a, fa), (b, fb) = frames.items()
        out += [(f"fit {a}, test {b}", fa, fb), (f"fit {b}, test {a}", fb, fa)]
    return [(name, train, test) for name, train, test in out if min(len(train), len(test)) >= 10]


def held_out(frames: dict[str, pd.DataFrame], n_resamples: int) -> pd.DataFrame:
    """Held-out statistics of every candidate score (and of each single proxy, unfitted) on every fold."""
    rows = []
    for fold, train, test in folds(frames):
        for name, proxies in CANDIDATES.items():
            tr, te = _finite(train, proxies), _finite(test, proxies)
            for method in ("vote", "ridge"):
                score = fit_linear_score({p: tr[p].to_numpy() for p in proxies}, tr["val_accuracy"].to_numpy(),
                                         [(p, transform_of(p)) for p in proxies], method=method)
                x = np.array([score({p: row[p] for p in proxies}) for _, row in te.iterrows()])
                stats = rank_quality(x, te["accuracy"].to_numpy(), n_resamples=n_resamples)
                rows.append({"fold": fold, "candidate": f"{name}/{method}", "n": len(te), **stats})
        for proxy in ["n_params", "naswot", "ntk_effective_rank", "synflow"]:
            te = _finite(test, [proxy])
            stats = rank_quality(te[proxy].to_numpy(float), te["accuracy"].to_numpy(), sign=PROXIES[proxy].sign,
                                 n_resamples=n_resamples)
            rows.append({"fold": fold, "candidate": proxy, "n": len(te), **stats})
    return pd.DataFrame(rows)


def _fmt(row: pd.Series, stat: str) -> str:
    value, low, high = row[stat], row[f"{stat}_low"], row[f"{stat}_high"]
    return "—" if not np.isfinite(value) else f"{value:+.2f} [{low:+.2f}, {high:+.2f}]"


def markdown(folder: Path, frames: dict[str, pd.DataFrame], tables: dict[str, pd.DataFrame],
             folds_frame: pd.DataFrame, chosen: str, final: LinearScore) -> str:
    lines = ["# Proxy quality on the ground truth", "",
             "Generated by `experiments/groundtruth/evaluate.py` from the committed CSVs. Target: test accuracy "
             "averaged over 2 seeds (scores are fit on validation accuracy only). Each cell: value [95% bootstrap "
             "interval]. Top-10% hit: fraction of the 10% "
             "most accurate architectures that the proxy (in its expected direction) also ranks in its top 10% "
             "(chance ≈ 0.10).", ""]
    for dataset, frame in frames.items():
        ceiling = noise_ceiling(folder, dataset)
        lines += [f"## {dataset}: {len(frame)} architectures "
                  f"({', '.join(f'{f} {int((frame.family == f).sum())}' for f in FAMILIES)})", "",
                  "Seed-to-seed noise ceiling (Spearman ρ between the two seeds' accuracies): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in ceiling.items()) + ".", "",
                  "| proxy | ρ (all) | τ (all) | top-10% hit | ρ in top 10% | ρ mlp | ρ cnn | ρ rnn |",
                  "|---|---|---|---|---|---|---|---|"]
        table = tables[dataset]
        overall = table[table.scope == "all"].sort_values("spearman", ascending=False)
        for _, row in overall.iterrows():
            fam = {f: table[(table.scope == f) & (table.proxy == row.proxy)] for f in FAMILIES}
            fam_cells = [f"{r.iloc[0].spearman:+.2f}" if len(r) else "—" for r in fam.values()]
            lines.append(f"| {row.proxy} | {_fmt(row, 'spearman')} | {_fmt(row, 'kendall')} | "
                         f"{_fmt(row, 'top10_hit')} | {_fmt(row, 'top10_spearman')} | {' | '.join(fam_cells)} |")
        lines.append("")
    summary = folds_frame.groupby("candidate")[list(STATISTICS)].mean().sort_values("spearman", ascending=False)
    lines += ["## Held-out comparison of candidate default scores", "",
              "Mean over the held-out folds (leave one family out within each dataset; leave one dataset out) of "
              "each statistic on the held-out rows. Fitted candidates are `<proxy set>/<vote|ridge>`; single proxies "
              "are not fitted. `all_with_naswot` needs activation patterns and is not eligible as the default score.",
              "", "| candidate | ρ | τ | top-10% hit | ρ in top 10% |", "|---|---|---|---|---|"]
    for name, row in summary.iterrows():
        mark = " **(chosen)**" if name == chosen else ""
        lines.append(f"| {name}{mark} | {row.spearman:+.3f} | {row.kendall:+.3f} | {row.top10_hit:.3f} | "
                     f"{row.top10_spearman:+.3f} |")
    per_fold = folds_frame[folds_frame.candidate.isin([chosen, "n_params"])]
    lines += ["", f"Per fold, the chosen score `{chosen}` against the parameter count on the same held-out rows:", "",
              "| fold | n | score ρ | n_params ρ | score top-10% hit | n_params top-10% hit |",
              "|---|---|---|---|---|---|"]
    for fold, part in per_fold.groupby("fold", sort=False):
        s, p = part[part.candidate == chosen].iloc[0], part[part.candidate == "n_params"].iloc[0]
        lines.append(f"| {fold} | {s.n} | {_fmt(s, 'spearman')} | {_fmt(p, 'spearman')} | "
                     f"{s.top10_hit:.2f} | {p.top10_hit:.2f} |")
    lines += ["", "Final constants (fit on the validation accuracy of all rows of both datasets):", "",
              "```python", repr(final), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=HERE, help="folder holding the ground truth and proxy CSVs")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    frames = {d: f for d in DATASETS if (f := load(args.dir, d)) is not None}
    if not frames:
        raise SystemExit("no ground truth found: run build.py and proxies.py first")
    tables = {d: proxy_table(f, args.resamples) for d, f in frames.items()}
    folds_frame = held_out(frames, args.resamples)
    if folds_frame.empty:
        raise SystemExit("too few rows for any held-out fold (each side needs 10 architectures)")
    fitted = folds_frame.candidate.str.contains("/")
    eligible = folds_frame[fitted & ~folds_frame.candidate.str.startswith("all_with_naswot")]
    chosen = eligible.groupby("candidate")["spearman"].mean().idxmax()
    name, method = chosen.split("/")
    proxies = CANDIDATES[name]
    pooled = _finite(pd.concat(frames.values(), ignore_index=True), proxies)
    final = fit_linear_score({p: pooled[p].to_numpy() for p in proxies}, pooled["val_accuracy"].to_numpy(),
                             [(p, transform_of(p)) for p in proxies], method=method)
    text = markdown(args.dir, frames, tables, folds_frame, chosen, final)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
