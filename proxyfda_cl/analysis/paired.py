"""Paired comparison of strategies against a baseline, with bootstrap confidence intervals.

Two runs are a pair when they share benchmark, backbone and seed: the same data, the same
pre-trained encoder and the same random draws, so their difference isolates the strategy.
For each strategy the differences ``metric(strategy) - metric(baseline)`` over all its pairs
(every benchmark and seed in the folder, or one benchmark) are averaged, with a bootstrap
percentile interval over the pairs (``bootstrap.bootstrap_interval``: resampled with
replacement, each group from its own generator with the same fixed seed).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..core.typed_record import METRICS
from .bootstrap import bootstrap_interval
from .records import describe, group_records, report
from .tables import interval, markdown_table, number

__all__ = ["paired_differences", "paired_comparison", "paired_markdown"]


def paired_differences(records: list, baseline: str, metric: str = "delta_lp",
                       problems: Optional[list] = None) -> dict[str, list[dict]]:
    """``{strategy: [{benchmark, backbone, seed, diff}, ...]}`` against ``baseline``.

    Args:
        records: run records (``read_results``); incomplete ones are reported and skipped.
        baseline: the strategy label to compare against (``naive``, ``fda(k=16)``).
        metric: a key of ``metrics.final`` (``a_lp``, ``delta_lp``, ...).
        problems: list that collects one line per skipped record.
    Raises:
        ValueError: ``metric`` is not a leaderboard metric.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    values: dict[str, dict[tuple, float]] = {}
    for bench, strats in group_records(records, problems).items():
        for strat, recs in strats.items():
            for rec in recs:
                if "final" in rec.issues:
                    report(problems, f"record {describe(rec)}: {rec.issues['final']}; skipped")
                    continue
                v = getattr(rec.final, metric)
                if v is not None:
                    values.setdefault(strat, {})[(bench, str(rec.backbone), rec.seed)] = v
    base = values.get(baseline, {})
    out = {}
    for strat, vals in values.items():
        if strat == baseline:
            continue
        keys = sorted((k for k in vals if k in base), key=str)
        out[strat] = [{"benchmark": k[0], "backbone": k[1], "seed": k[2],
                       "diff": vals[k] - base[k]} for k in keys]
    return out


def paired_comparison(records: list, baseline: str = "naive", metric: str = "delta_lp", *,
                      by_benchmark: bool = False, n_boot: int = 2000, seed: int = 0,
                      ci: float = 0.95, problems: Optional[list] = None) -> list[dict]:
    """Mean paired difference to ``baseline`` per strategy, with a bootstrap CI.

    Args:
        records, baseline, metric, problems: see ``paired_differences``.
        by_benchmark: one row per (benchmark, strategy) instead of pooling all benchmarks.
        n_boot: bootstrap resamples of the pairs (0: no interval).
        seed: resampling seed.
        ci: interval coverage.
    Returns:
        Rows sorted by benchmark and decreasing mean, each ``{benchmark ("all" when pooled),
        strategy, baseline, metric, n, mean, ci_low, ci_high}``; ``ci_*`` are NaN for fewer
        than 2 pairs or ``n_boot = 0``.
    """
    rows = []
    for strat, pairs in paired_differences(records, baseline, metric, problems).items():
        groups: dict[str, list[float]] = {}
        for p in pairs:
            groups.setdefault(p["benchmark"] if by_benchmark else "all", []).append(p["diff"])
        for bench, diffs in groups.items():
            d = np.asarray(diffs, dtype=np.float64)
            lo, hi = bootstrap_interval((d,), np.mean, n_boot=n_boot, seed=seed, ci=ci)
            rows.append({"benchmark": bench, "strategy": strat, "baseline": baseline,
                         "metric": metric, "n": int(len(d)), "mean": float(d.mean()),
                         "ci_low": lo, "ci_high": hi})
    rows.sort(key=lambda r: (r["benchmark"], -r["mean"], r["strategy"]))
    return rows


def paired_markdown(rows: list[dict]) -> str:
    """``paired_comparison`` rows as a markdown table, in percentage points."""
    if not rows:
        return "No pairs: no strategy shares benchmark, backbone and seed with the baseline."
    r0 = rows[0]
    table = markdown_table(
        ["benchmark", "strategy", "pairs", "mean", "95% CI"],
        [[r["benchmark"], r["strategy"], str(r["n"]), number(r["mean"], scale=100, sign=True),
          interval((r["ci_low"], r["ci_high"]), scale=100)] for r in rows], "--rr-")
    return (f"Paired difference in {r0['metric']} against {r0['baseline']} (same benchmark, "
            f"backbone and seed; mean over pairs, 95% bootstrap CI; percentage points).\n\n"
            + table)
