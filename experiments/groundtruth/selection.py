"""The pre-registered rule that chooses ntksearch's default score (RULE.md next to this file, word for word).

Everything here is a pure function of task frames (:func:`tables.load_task`): one frame per task with one row
per unit (an architecture, or an architecture × hyperparameter variant), ``accuracy`` (test, seed-averaged:
the target), ``val_accuracy`` (what fits may use) and one column per proxy.

* :func:`candidate_list` — the candidates of RULE.md: single proxies read in their registry sign, fitted
  linear scores of at most four terms (K − 1 fitted numbers), population rank aggregates (not eligible).
* :func:`candidate_scores` — a candidate's scores on a held-out task, its numbers fit on the training tasks.
* :func:`margins` — leave-one-task-out: ρ of the candidate and of the parameter count on each held-out task.
* :func:`choose` — the winner: the eligible candidate with the largest worst held-out margin.
* :func:`nested` — the rule's own held-out performance: the choice repeated inside an outer
  leave-one-task-out loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats

from ntksearch.proxies.score import TRANSFORMS, LinearScore, ScoreTerm, fit_linear_score

__all__ = ["LINEAR_SETS", "LOG_PROXIES", "MIN_ROWS", "RANK_SETS", "Candidate", "candidate_list",
           "candidate_scores", "choose", "margins", "nested", "spearman", "transform_of", "within_architecture"]

MIN_ROWS = 10  # a held-out task with fewer usable rows leaves the candidate's margin undefined there
RIDGE = 1e-6
LOG_PROXIES = frozenset({
    "n_params", "flops", "grad_norm", "snip", "fisher", "swap", "ntk_trace", "ntk_frobenius", "ntk_effective_rank",
    "ntk_lambda_max", "ntk_condition", "max_stable_lr", "ntk_complexity", "lin_train_loss", "lin_val_loss",
})
LINEAR_SETS: dict[str, tuple[str, ...]] = {
    "size+complexity": ("n_params", "ntk_complexity"),
    "size+lin_val_accuracy": ("n_params", "lin_val_accuracy"),
    "size+lin_train_loss": ("n_params", "lin_train_loss"),
    "size+effective_rank": ("n_params", "ntk_effective_rank"),
    "size+alignment": ("n_params", "ntk_label_alignment_centred"),
    "size+condition": ("n_params", "ntk_condition"),
    "size+zico": ("n_params", "zico"),
    "size+meco": ("n_params", "meco"),
    "size+swap": ("n_params", "swap"),
    "size+az_trainability": ("n_params", "az_trainability"),
    "size+jacob_cov": ("n_params", "jacob_cov"),
    "size+flops": ("n_params", "flops"),
    "size+linearised": ("n_params", "ntk_complexity", "lin_val_accuracy", "lin_train_loss"),
    "size+ntk_moments": ("n_params", "ntk_effective_rank", "ntk_label_alignment_centred", "ntk_condition"),
    "published": ("zico", "meco", "swap", "az_trainability"),
}
RANK_SETS: dict[str, tuple[tuple[str, ...], str]] = {  # name → (proxies, aggregation)
    "az_nas": (("az_expressivity", "az_progressivity", "az_trainability", "az_complexity"), "log_rank"),
    "vote3": (("synflow", "jacob_cov", "snip"), "mean_rank"),
}


def transform_of(proxy: str) -> str:
    """The transform RULE.md fixes for a proxy: ``log`` for positive scale quantities, else ``identity``."""
    return "log" if proxy in LOG_PROXIES else "identity"


def transformed(frame: pd.DataFrame, proxy: str) -> np.ndarray:
    """The proxy's column under its transform; NaN where missing, non-finite, or ≤ 0 under a log."""
    if proxy not in frame:
        return np.full(len(frame), np.nan)
    fn = TRANSFORMS[transform_of(proxy)]
    out = np.array([fn(float(v)) if np.isfinite(float(v)) else np.nan for v in frame[proxy]], dtype=float)
    out[~np.isfinite(out)] = np.nan
    return out


@dataclass(frozen=True)
class Candidate:
    """A candidate score. ``kind``: ``single`` (one proxy times its sign), ``linear`` (fitted linear score of
    ``terms``), ``rank`` (population rank aggregate of ``terms`` read in ``signs``, by ``aggregation``)."""

    name: str
    kind: str
    terms: tuple[str, ...]
    signs: tuple[int, ...] = ()
    aggregation: str = ""

    @property
    def fitted(self) -> int:
        """Fitted numbers that matter for ranking: K − 1 weights of a K-term linear score, else 0."""
        return len(self.terms) - 1 if self.kind == "linear" else 0

    @property
    def eligible(self) -> bool:
        """Stationary (a candidate's score depends on it alone): may be the default score."""
        return self.kind != "rank"


def candidate_list(signs: Mapping[str, int]) -> list[Candidate]:
    """RULE.md's candidates given the registry's proxy signs (proxies with sign 0 are not read in a direction)."""
    out = [Candidate(name, "single", (name,), (sign,)) for name, sign in signs.items() if sign != 0]
    out += [Candidate(name, "linear", terms) for name, terms in LINEAR_SETS.items()]
    out += [Candidate(name, "rank", terms, tuple(signs.get(t, 1) or 1 for t in terms), aggregation)
            for name, (terms, aggregation) in RANK_SETS.items()]
    return out


def _fit_rows(candidate: Candidate, train: Sequence[pd.DataFrame]) -> tuple[pd.DataFrame, dict, np.ndarray]:
    pooled = pd.concat(train, ignore_index=True)
    cols = {t: transformed(pooled, t) for t in candidate.terms}
    keep = np.isfinite(pooled["val_accuracy"].to_numpy(float))
    for col in cols.values():
        keep &= np.isfinite(col)
    return pooled, cols, keep


def fittable(candidate: Candidate, train: Sequence[pd.DataFrame]) -> bool:
    """Whether the training tasks have enough rows with every term defined (MIN_ROWS per fitted number)."""
    return bool(train) and int(_fit_rows(candidate, train)[2].sum()) >= MIN_ROWS * len(candidate.terms)


def fit(candidate: Candidate, train: Sequence[pd.DataFrame]) -> LinearScore:
    """Fit a linear candidate on the training tasks' validation accuracy (RULE.md: within-task differences)."""
    pooled, cols, keep = _fit_rows(candidate, train)
    # the transforms are already applied: fit identity terms on the transformed columns, then relabel
    fitted = fit_linear_score({t: c[keep] for t, c in cols.items()}, pooled["val_accuracy"].to_numpy(float)[keep],
                              [(t, "identity") for t in candidate.terms], method="ridge", alpha=RIDGE,
                              groups=pooled["task"].to_numpy()[keep])
    return LinearScore(tuple(ScoreTerm(term.proxy, transform_of(term.proxy), term.mean, term.std, term.weight)
                             for term in fitted.terms))


def candidate_scores(candidate: Candidate, train: Sequence[pd.DataFrame], test: pd.DataFrame) -> np.ndarray:
    """(rows,) scores of ``test``'s rows, higher = better expected accuracy; NaN where not computable."""
    if candidate.kind == "single":
        return candidate.signs[0] * transformed(test, candidate.terms[0])
    if candidate.kind == "linear":
        if any(t not in test for t in candidate.terms) or not fittable(candidate, train):
            return np.full(len(test), np.nan)
        score = fit(candidate, train)
        cols = np.stack([transformed(test, t) for t in candidate.terms], axis=1)
        weights = np.array([term.weight / term.std for term in score.terms])
        return cols @ weights  # the standardisation offsets do not change a ranking
    ranks = []
    for term, sign in zip(candidate.terms, candidate.signs, strict=True):
        col = sign * transformed(test, term)
        rank = scipy.stats.rankdata(np.where(np.isnan(col), -np.inf, col))  # 1 = worst … N = best
        ranks.append(np.where(np.isnan(col), np.nan, rank))
    stacked = np.stack(ranks, axis=1)
    if candidate.aggregation == "log_rank":  # AZ-NAS: Σ_m log(rank_m / N)
        return np.sum(np.log(stacked / len(test)), axis=1)
    return np.mean(stacked, axis=1)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman ρ (NaN for constant input)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(scipy.stats.spearmanr(x, y).statistic)


def held_out_rows(x: np.ndarray, frame: pd.DataFrame) -> np.ndarray:
    """Rows where the candidate, the parameter count and the target are all defined."""
    return np.isfinite(x) & np.isfinite(transformed(frame, "n_params")) & np.isfinite(frame["accuracy"].to_numpy(float))


def margins(candidate: Candidate, frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Leave-one-task-out: per held-out task, ``n``, ``rho`` (candidate), ``rho_params`` and ``margin``."""
    rows = []
    for task, test in frames.items():
        x = candidate_scores(candidate, [f for t, f in frames.items() if t != task], test)
        keep = held_out_rows(x, test)
        y = test["accuracy"].to_numpy(float)[keep]
        rho, rho_params = math.nan, math.nan
        if keep.sum() >= MIN_ROWS:
            rho, rho_params = spearman(x[keep], y), spearman(transformed(test, "n_params")[keep], y)
        rows.append({"task": task, "n": int(keep.sum()), "rho": rho, "rho_params": rho_params,
                     "margin": rho - rho_params})
    return pd.DataFrame(rows)


def choose(candidates: Sequence[Candidate], frames: Mapping[str, pd.DataFrame]) -> tuple[Candidate, pd.DataFrame]:
    """The winner among the eligible candidates and the table of every candidate's held-out margins.

    Table: one row per candidate with ``worst`` (−inf when a task's margin is undefined), ``mean``, ``fitted``,
    ``eligible`` and one ``margin:<task>`` column per task; sorted best first by (worst, −fitted, mean).
    """
    rows = []
    for cand in candidates:
        m = margins(cand, frames)
        values = m["margin"].to_numpy(float)
        worst = float(np.min(values)) if np.all(np.isfinite(values)) else -math.inf
        rows.append({"candidate": cand.name, "kind": cand.kind, "fitted": cand.fitted, "eligible": cand.eligible,
                     "worst": worst, "mean": float(np.nanmean(values)) if np.any(np.isfinite(values)) else math.nan,
                     **{f"margin:{t}": v for t, v in zip(m["task"], values, strict=True)},
                     **{f"rho:{t}": v for t, v in zip(m["task"], m["rho"], strict=True)}})
    table = pd.DataFrame(rows)
    table["_fitted"] = -table["fitted"]
    table = table.sort_values(["worst", "_fitted", "mean"], ascending=False, ignore_index=True).drop(columns="_fitted")
    by_name = {c.name: c for c in candidates}
    winner = by_name[table[table.eligible].iloc[0]["candidate"]]
    return winner, table


def nested(candidates: Sequence[Candidate], frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The rule's held-out performance: for each task, choose on the other tasks, then score this one."""
    rows = []
    for task, test in frames.items():
        inner = {t: f for t, f in frames.items() if t != task}
        chosen, _ = choose(candidates, inner)
        x = candidate_scores(chosen, list(inner.values()), test)
        keep = held_out_rows(x, test)
        y = test["accuracy"].to_numpy(float)[keep]
        rho, rho_params = spearman(x[keep], y), spearman(transformed(test, "n_params")[keep], y)
        rows.append({"task": task, "chosen": chosen.name, "n": int(keep.sum()), "rho": rho,
                     "rho_params": rho_params, "margin": rho - rho_params})
    return pd.DataFrame(rows)


def within_architecture(x: np.ndarray, frame: pd.DataFrame) -> dict[str, float]:
    """Hyperparameter tables: mean over architectures of the within-architecture Spearman ρ between scores and
    accuracy, and the fraction of architectures whose best configuration the score also ranks first."""
    rhos, hits, count = [], [], 0
    for _, idx in frame.groupby("arch_id").indices.items():
        xs, ys = x[idx], frame["accuracy"].to_numpy(float)[idx]
        ok = np.isfinite(xs) & np.isfinite(ys)
        if ok.sum() < 3:
            continue
        count += 1
        rhos.append(spearman(xs[ok], ys[ok]))
        hits.append(float(np.argmax(xs[ok]) == np.argmax(ys[ok])) if np.ptp(xs[ok]) > 0 else math.nan)
    rhos_arr, hits_arr = np.array(rhos, float), np.array(hits, float)
    return {"archs": count,
            "rho": float(np.nanmean(rhos_arr)) if np.any(np.isfinite(rhos_arr)) else math.nan,
            "best_first": float(np.nanmean(hits_arr)) if np.any(np.isfinite(hits_arr)) else math.nan}
