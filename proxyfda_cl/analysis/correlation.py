"""Forgetting against feature distances (METHOD.md, Metrics: Correlation).

Across all (run, experience, dataset) points, Pearson and Spearman correlation of forgetting
``P[0][d] - P[t][d]`` with OTDD and with the L2 feature distance, each with a bootstrap
percentile confidence interval (``bootstrap.bootstrap_interval``: the points resampled with
replacement, fixed seed).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from scipy import stats

from ..core.errors import DataError
from .bootstrap import bootstrap_interval
from .records import as_record
from .tables import interval, markdown_table, number

__all__ = ["correlate", "forgetting_points", "correlation_table", "correlation_cells",
           "correlation_markdown"]


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson r along ``axis``; NaN where a side is constant."""
    xc = x - x.mean(axis, keepdims=True)
    yc = y - y.mean(axis, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis) * (yc * yc).sum(axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (xc * yc).sum(axis) / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


def _spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman rho along ``axis``: Pearson r of the ranks (ties averaged)."""
    return _pearson(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis)


def correlate(x: Sequence[float], y: Sequence[float], *, n_boot: int = 1000, seed: int = 0,
              ci: float = 0.95) -> dict:
    """Pearson and Spearman correlation with bootstrap percentile confidence intervals.

    Args:
        x, y: paired observations (same length).
        n_boot: bootstrap resamples of the pairs; 0 skips the intervals.
        seed: resampling seed.
        ci: interval coverage, e.g. 0.95.

    Returns:
        ``{"pearson", "pearson_p", "pearson_ci", "spearman", "spearman_p", "spearman_ci",
        "n", "n_boot", "ci"}``; values are NaN when ``n < 3`` or an input is constant, and
        resamples with a constant side are left out of the intervals.
    """
    xa, ya = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"correlate: x and y differ in length ({len(xa)} vs {len(ya)})")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"correlate: ci must be in (0, 1), got {ci}")
    n = len(xa)
    out = {"pearson": math.nan, "pearson_p": math.nan, "pearson_ci": [math.nan, math.nan],
           "spearman": math.nan, "spearman_p": math.nan, "spearman_ci": [math.nan, math.nan],
           "n": n, "n_boot": int(n_boot), "ci": ci}
    if n < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return out
    pr, sr = stats.pearsonr(xa, ya), stats.spearmanr(xa, ya)
    out.update(pearson=float(pr.statistic), pearson_p=float(pr.pvalue),
               spearman=float(sr.statistic), spearman_p=float(sr.pvalue))
    if n_boot > 0:
        for name, statistic in (("pearson", _pearson), ("spearman", _spearman)):
            out[f"{name}_ci"] = list(bootstrap_interval((xa, ya), statistic, n_boot=n_boot,
                                                        seed=seed, ci=ci))
    return out


def forgetting_points(records: Iterable, *, held_out: bool = False) -> list[dict]:
    """One point per (run, experience t, dataset d) in each record's ``distances``.

    With ``held_out``, only datasets not trained on by experience t (later tasks and probes,
    the ones Δ_LP averages) give points: concept forgetting without the gains of training.

    ``forgetting = P[0][d] - P[t][d]`` with ``d`` looked up in ``P_columns`` (the run-record
    schema in :mod:`proxyfda_cl.core.record`). Entries whose ``otdd`` or ``l2`` is null, or whose
    probe accuracies are null, are skipped. Records are ``Record``s or record dicts.

    Returns:
        dicts ``{run, strategy, seed, experience, dataset, forgetting, otdd, l2, knn_loss}``;
        ``knn_loss = 1 - knn_overlap`` (None for records written before it existed).

    Raises:
        DataError: a record lacks ``matrices.P``/``P_columns``, has a malformed distance
            entry, or names an unknown dataset or experience.
    """
    points = []
    for rec in map(as_record, records):
        run = rec.id
        if "distances" in rec.issues:
            raise DataError(f"record {run}: {rec.issues['distances']}; the record is "
                            "inconsistent")
        if not rec.distances:
            continue
        p, cols = rec.P, rec.P_columns
        if p is None or cols is None:
            raise DataError(f"record {run}: distances without matrices.P/P_columns; "
                            "re-run or drop the record")
        stream = rec.stream or rec.R_columns or []
        for e in rec.distances:
            if e.otdd is None or e.l2 is None:
                continue
            t, d = e.experience, e.dataset
            if held_out and t is not None and d in stream[:t]:
                continue
            j = cols.index(d) if d in cols else None
            if j is None or t is None or not 0 < t < len(p) or j >= min(len(p[0]), len(p[t])):
                raise DataError(f"record {run}: distance entry (experience {t}, dataset {d}) "
                                "has no row/column in matrices.P; the record is inconsistent")
            p0, pt = p[0][j], p[t][j]
            if p0 is None or pt is None:
                continue
            points.append({"run": run, "strategy": rec.strategy, "seed": rec.seed,
                           "experience": t, "dataset": d, "forgetting": p0 - pt,
                           "otdd": e.otdd, "l2": e.l2,
                           "knn_loss": None if e.knn_overlap is None else 1.0 - e.knn_overlap})
    return points


def correlation_table(records: Iterable, *, n_boot: int = 1000, seed: int = 0,
                      held_out: bool = False) -> dict:
    """Correlation of forgetting with OTDD and with L2 over every point of ``records``
    (only held-out datasets' points with ``held_out``, see ``forgetting_points``).

    Returns:
        ``{"otdd": correlate(otdd, forgetting), "l2": correlate(l2, forgetting)}``, plus
        ``"knn_loss"`` (``1 - knn_overlap``, over the points that have it) when any point
        has it; the number of points is each entry's ``n``.
    """
    pts = forgetting_points(records, held_out=held_out)
    forg = [q["forgetting"] for q in pts]
    out = {"otdd": correlate([q["otdd"] for q in pts], forg, n_boot=n_boot, seed=seed),
           "l2": correlate([q["l2"] for q in pts], forg, n_boot=n_boot, seed=seed)}
    knn = [q for q in pts if q["knn_loss"] is not None]
    if knn:
        out["knn_loss"] = correlate([q["knn_loss"] for q in knn], [q["forgetting"] for q in knn],
                                    n_boot=n_boot, seed=seed)
    return out


def correlation_cells(c: dict) -> list[str]:
    """Pearson r, its interval, Spearman rho and its interval of one ``correlate`` result, as
    the tables print them (3 decimals, signed; ``—`` where undefined)."""
    return [number(c["pearson"], 3, sign=True), interval(c["pearson_ci"], 3),
            number(c["spearman"], 3, sign=True), interval(c["spearman_ci"], 3)]


def correlation_markdown(table: dict) -> str:
    """``correlation_table``'s result as a markdown table (r, rho and their 95% CIs)."""
    names = {"otdd": "OTDD", "l2": "L2", "knn_loss": "1 − kNN overlap"}
    rows = [[names[n], str(table[n]["n"])] + correlation_cells(table[n])
            for n in names if n in table]
    return (f"Forgetting (P[0][d] - P[t][d]) against feature distance over "
            f"{table['otdd']['n']} (run, experience, dataset) points; "
            f"{int(100 * table['otdd'].get('ci', 0.95))}% bootstrap intervals.\n\n"
            + markdown_table(["distance", "n", "Pearson r", "CI", "Spearman rho", "CI"], rows,
                             "-rr-r-"))
