"""Summarise a ground-truth CSV written by build.py: sizes, accuracies, costs and the seed-to-seed noise ceiling.

The noise ceiling is Spearman's ρ between the test accuracies of seed 0 and seed 1 over the architectures
trained with both seeds (overall and per family): no proxy can be expected to rank the architectures by one
seed's accuracy better than another seed of the same training does.

Usage: ``.venv/bin/python experiments/groundtruth/summarise.py experiments/groundtruth/fashion_mnist.csv``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr


def load(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    hashes = df["recipe_hash"].unique()
    if len(hashes) != 1:
        raise SystemExit(f"{path}: rows of {len(hashes)} recipes ({', '.join(hashes)}); expected one")
    return df


def noise_ceiling(df: pd.DataFrame, metric: str = "test_accuracy", seeds: tuple[int, int] = (0, 1)
                  ) -> pd.DataFrame:
    """Spearman ρ and Kendall τ between two seeds' ``metric`` per family and overall."""
    ok = df[df["error"].isna()]
    wide = ok.pivot_table(index=["family", "arch_id"], columns="seed", values=metric).dropna()
    wide = wide[[seeds[0], seeds[1]]]
    out = []
    groups = [("all", wide)] + [(f, g) for f, g in wide.groupby(level="family", sort=False)]
    for name, g in groups:
        a, b = g[seeds[0]].to_numpy(), g[seeds[1]].to_numpy()
        out.append({"family": name, "n_archs": len(g), "spearman": spearmanr(a, b).statistic,
                    "kendall": kendalltau(a, b).statistic, "mean_abs_diff": float(np.mean(np.abs(a - b)))})
    return pd.DataFrame(out)


def summary(df: pd.DataFrame) -> str:
    lines = []
    ok = df[df["error"].isna()]
    lines.append(f"recipe {df['recipe_hash'].iloc[0]}, dataset {df['dataset'].iloc[0]}: {len(df)} rows, "
                 f"{df['arch_id'].nunique()} architectures, seeds {sorted(df['seed'].unique())}, "
                 f"{int(df['error'].notna().sum())} errors, {int((ok['diverged'] == True).sum())} diverged")  # noqa: E712
    fam = ok.groupby("family", sort=False).agg(
        archs=("arch_id", "nunique"), rows=("seed", "size"),
        test_mean=("test_accuracy", "mean"), test_min=("test_accuracy", "min"),
        test_median=("test_accuracy", "median"), test_max=("test_accuracy", "max"),
        mflops_median=("flops", lambda f: np.median(f) / 1e6), params_median=("n_params", "median"))
    lines += ["", "accuracy by family:", fam.to_string(float_format=lambda v: f"{v:.4f}")]
    # cost: seed rows after the first of an architecture reuse its compiled step, so they measure training only
    first = df.sort_values("seed").groupby("arch_id").head(1)
    later = df.drop(first.index)
    cost = pd.DataFrame({
        "wall_s_first_seed": first.groupby("family", sort=False)["total_seconds"].mean(),
        "wall_s_other_seeds": later.groupby("family", sort=False)["total_seconds"].mean(),
        "cpu_s_first_seed": first.groupby("family", sort=False)["cpu_seconds"].mean(),
        "cpu_s_other_seeds": later.groupby("family", sort=False)["cpu_seconds"].mean(),
        "cpu_s_total": df.groupby("family", sort=False)["cpu_seconds"].sum(),
    })
    lines += ["", "cost per row (mean; first seed includes compilation):",
              cost.to_string(float_format=lambda v: f"{v:.1f}"),
              f"total: {df['cpu_seconds'].sum() / 3600:.2f} CPU-hours, {df['total_seconds'].sum() / 3600:.2f} "
              "worker-hours (wall, summed over workers)"]
    start = pd.to_datetime(df["finished_at"]).min() - pd.to_timedelta(first["total_seconds"].iloc[0], unit="s")
    lines.append(f"first row finished {df['finished_at'].min()}, last {df['finished_at'].max()}, "
                 f"~{(pd.to_datetime(df['finished_at']).max() - start).total_seconds() / 3600:.2f} h")
    for metric in ("test_accuracy", "val_accuracy"):
        lines += ["", f"seed-to-seed noise ceiling ({metric}, seed 0 vs seed 1):",
                  noise_ceiling(df, metric).to_string(index=False, float_format=lambda v: f"{v:.4f}")]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", type=Path, nargs="+")
    for path in p.parse_args().csv:
        print(f"== {path}")
        print(summary(load(path)))
        print()


if __name__ == "__main__":
    main()
