"""Figures from run records: forward transfer, OTDD vs forgetting, accuracy matrices.

Every figure is drawn on an Agg canvas (no pyplot, no global backend change) and written as
PNG and PDF. Every function returns the numbers it drew as plain dicts and lists (fractions,
``None`` where unavailable), so the figures can be checked against the records. Metrics and
the forgetting of a probe point follow METHOD.md, section "Metrics".
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..core.errors import DataError
from ..core.typed_record import Record
from .correlation import correlate, forgetting_points
from .leaderboard import mean_std
from .records import describe, group_records, report
from .tables import finite


def _nan(v: Optional[float]) -> float:
    return float("nan") if v is None else v


def _colours(names) -> dict[str, Any]:
    return {n: colormaps["tab10"](i % 10) for i, n in enumerate(sorted(set(names)))}


def _labels(cols: Optional[list[str]], n: int) -> list[str]:
    """Column names, or ``1..n`` when absent."""
    return cols if cols is not None else [str(i) for i in range(1, n + 1)]


def _dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _save(fig: Figure, out_dir: Path, stem: str, used: set) -> list[str]:
    """Write ``stem.png`` and ``stem.pdf``; a stem already used in this call gets a suffix."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_.") or "figure"
    base, i = stem, 1
    while stem in used:
        i, stem = i + 1, f"{base}_{i + 1}"
    used.add(stem)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    paths = [str(out_dir / f"{stem}.{ext}") for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p, dpi=120)
    return paths


def _transfer(recs: list[Record]) -> dict:
    """Per-experience and final Δ_LP of one strategy's seeds: mean and std of available values."""
    curves = [[e.delta_lp for e in r.per_experience] for r in recs]
    T = max((len(c) for c in curves), default=0)
    ms = [mean_std([c[t] if t < len(c) else None for c in curves]) for t in range(T)]
    fm, fs, _ = mean_std([r.final.delta_lp if r.final else None for r in recs])
    return {"per_experience_mean": [m[0] for m in ms], "per_experience_std": [m[1] for m in ms],
            "final_mean": fm, "final_std": fs, "seeds": [r.seed for r in recs]}


def plot_forward_transfer(records: list, out_dir: str | Path, *,
                          problems: Optional[list] = None) -> dict:
    """Δ_LP per experience (mean ± std band over seeds) and final Δ_LP bars, per benchmark.

    Means skip seeds without a value; the std is the sample std (ddof=1), None with one value.

    Returns:
        ``{benchmark: {strategy: {"per_experience_mean", "per_experience_std", "final_mean",
        "final_std", "seeds"}}, "files": [...]}``.
    """
    out_dir, groups = _dir(out_dir), group_records(records, problems)
    colours = _colours(s for strats in groups.values() for s in strats)
    result: dict[str, Any] = {}
    files: list[str] = []
    used: set = set()
    for bench in sorted(groups):
        data = result[bench] = {s: _transfer(rs) for s, rs in sorted(groups[bench].items())}
        names = max((_labels(r.R_columns, 0) for rs in groups[bench].values() for r in rs),
                    key=len, default=[])
        fig = Figure(figsize=(11, 4.2))
        ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        for strat, d in data.items():
            m = np.array([_nan(v) for v in d["per_experience_mean"]]) * 100
            s = np.array([_nan(v) for v in d["per_experience_std"]]) * 100
            x = np.arange(1, len(m) + 1)
            ax.plot(x, m, marker="o", color=colours[strat], label=strat)
            ax.fill_between(x, m - s, m + s, color=colours[strat], alpha=0.2, linewidth=0)
        T = max((len(d["per_experience_mean"]) for d in data.values()), default=0)
        ax.set_xticks(range(1, T + 1))
        if T and len(names) == T:
            ax.set_xticklabels([f"{i}: {n}" for i, n in enumerate(names, 1)], rotation=30,
                               ha="right", fontsize=8)
        ax.set(xlabel="after experience", ylabel="Δ_LP (points)",
               title=f"{bench}: Δ_LP per experience (mean ± std over seeds)")
        ax.legend(fontsize=8)
        strats = list(data)
        bx.bar(range(len(strats)), [_nan(data[s]["final_mean"]) * 100 for s in strats],
               yerr=[(data[s]["final_std"] or 0.0) * 100 for s in strats],
               color=[colours[s] for s in strats], capsize=4)
        bx.set_xticks(range(len(strats)))
        bx.set_xticklabels(strats, rotation=30, ha="right", fontsize=8)
        bx.set(ylabel="final Δ_LP (points)", title="final Δ_LP (mean ± std over seeds)")
        for a in (ax, bx):
            a.axhline(0, color="k", linewidth=0.8)
        files += _save(fig, out_dir, f"forward_transfer_{bench}", used)
    result["files"] = files
    return result


def _fit(xs: list, ys: list) -> dict:
    """``correlate``'s Pearson r and Spearman rho (None where undefined) and the
    least-squares line drawn through the points."""
    c = correlate(xs, ys, n_boot=0)
    out: dict[str, Any] = {"n": c["n"], "pearson": finite(c["pearson"]),
                           "spearman": finite(c["spearman"]), "slope": None, "intercept": None}
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if len(xs) >= 2 and np.ptp(x) > 0:
        out["slope"], out["intercept"] = (float(v) for v in np.polyfit(x, y, 1))
    return out


def _points(rec: Record, bench: str, strat: str, problems: Optional[list]) -> list[dict]:
    """The record's points of ``forgetting_points``, under its benchmark and strategy label."""
    try:
        pts = forgetting_points([rec])
    except DataError as e:
        report(problems, f"{e}; left out of the OTDD plot")
        return []
    return [{"benchmark": bench, "strategy": strat, "run_id": q["run"],
             "experience": q["experience"], "dataset": q["dataset"], "otdd": q["otdd"],
             "l2": q["l2"], "forgetting": q["forgetting"]} for q in pts]


def _fmt(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def plot_otdd_vs_forgetting(records: list, out_dir: str | Path, *,
                            problems: Optional[list] = None) -> dict:
    """Forgetting ``P[0][d] − P[t][d]`` against OTDD and against L2, over all complete records.

    The points are those of the correlation table (``correlation.forgetting_points``: one per
    (run, experience t, dataset d) with both distances and both P values) and so are n, r
    and rho (``correlation.correlate``); a record whose distances do not match its matrices
    is reported and left out. Bootstrap intervals are the table's alone.

    Returns:
        ``{"points": [{benchmark, strategy, run_id, experience, dataset, otdd, l2,
        forgetting}], "otdd": {pearson, spearman, n, slope, intercept}, "l2": {...},
        "files": [...]}``.
    """
    out_dir = _dir(out_dir)
    points = [p for bench, strats in sorted(group_records(records, problems).items())
              for strat, recs in sorted(strats.items()) for rec in recs
              for p in _points(rec, bench, strat, problems)]
    result: dict[str, Any] = {"points": points}
    colours = _colours(p["strategy"] for p in points)
    fig = Figure(figsize=(11, 4.5))
    for ax, key, label in zip(fig.subplots(1, 2), ("otdd", "l2"), ("OTDD", "L2 feature distance")):
        res = result[key] = _fit([p[key] for p in points], [p["forgetting"] for p in points])
        for strat in colours:
            sp = [p for p in points if p["strategy"] == strat]
            if sp:
                ax.scatter([p[key] for p in sp], [p["forgetting"] * 100 for p in sp],
                           color=colours[strat], s=18, alpha=0.8, label=strat)
        rr = f"Pearson r={_fmt(res['pearson'])}, Spearman ρ={_fmt(res['spearman'])}"
        if res["slope"] is not None:
            xs = np.linspace(min(p[key] for p in points), max(p[key] for p in points), 50)
            ax.plot(xs, (res["slope"] * xs + res["intercept"]) * 100, "k--", linewidth=1,
                    label="least-squares fit")
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set(xlabel=label, ylabel="forgetting P[0][d] − P[t][d] (points)",
               title=f"{label} vs forgetting\nn={res['n']}, {rr}")
        if points:
            ax.legend(fontsize=7)
    result["files"] = _save(fig, out_dir, "otdd_vs_forgetting", set())
    return result


def _matrix(rec: Record, name: str) -> np.ndarray:
    m = getattr(rec, name)
    if not m or len({len(r) for r in m}) != 1:
        raise ValueError(f"matrices.{name} missing or not a rectangular list of rows")
    return np.array([[_nan(v) for v in row] for row in m], dtype=float)


def _nan_mean(stack: np.ndarray) -> list:
    """Mean over axis 0 ignoring NaN, as nested lists with None where no value exists."""
    count = (~np.isnan(stack)).sum(0)
    mean = np.where(count > 0, np.nansum(stack, 0) / np.maximum(count, 1), np.nan)
    return [[None if np.isnan(v) else float(v) for v in row] for row in mean]


def _seed_matrices(recs: list[Record], problems: Optional[list]) -> tuple[list, Optional[tuple]]:
    """The seeds whose R and P agree in shape and columns with the first valid seed."""
    kept, ref = [], None
    for rec in recs:
        try:
            R, P = _matrix(rec, "R"), _matrix(rec, "P")
            rc, pc = _labels(rec.R_columns, R.shape[1]), _labels(rec.P_columns, P.shape[1])
            if len(rc) != R.shape[1] or len(pc) != P.shape[1]:
                raise ValueError("column names do not match the matrix width")
            if ref is not None and (R.shape, P.shape, rc, pc) != ref:
                raise ValueError("matrices differ in shape or columns from other seeds")
        except ValueError as e:
            report(problems, f"record {describe(rec)}: {e}; left out of the matrix plot")
            continue
        ref = ref or (R.shape, P.shape, rc, pc)
        kept.append((rec, R, P))
    return kept, ref


def _heatmap(ax, mat: list, rows: list, cols: list, title: str, xlabel: str) -> None:
    a = np.array([[_nan(v) for v in r] for r in mat], dtype=float)
    ax.imshow(np.ma.masked_invalid(a), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(a):
        ax.text(j, i, "—" if np.isnan(v) else f"{v * 100:.1f}", ha="center", va="center",
                fontsize=7, color="grey" if np.isnan(v) else "black" if v > 0.6 else "white")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=7)
    ax.set(title=title, xlabel=xlabel, ylabel="after experience")


def plot_matrices(records: list, out_dir: str | Path, *,
                  problems: Optional[list] = None) -> dict:
    """Heatmaps of R (task accuracy) and P (probe accuracy), mean over seeds, in percent.

    One figure per (benchmark, strategy). Null cells are skipped in the mean. A record whose
    matrix shapes or column names differ from the first seed's is reported and left out.

    Returns:
        ``{benchmark: {strategy: {"R", "R_rows", "R_columns", "P", "P_rows", "P_columns",
        "seeds"}}, "files": [...]}``; rows of R are the experiences, rows of P start with
        ``pre-trained``.
    """
    out_dir = _dir(out_dir)
    result: dict[str, Any] = {}
    files: list[str] = []
    used: set = set()
    for bench, strats in sorted(group_records(records, problems).items()):
        for strat, recs in sorted(strats.items()):
            kept, ref = _seed_matrices(recs, problems)
            if not kept:
                continue
            (nr, _), (npr, _), rc, pc = ref
            rows = [rc[i] if i < len(rc) else f"exp {i + 1}" for i in range(max(nr, npr - 1))]
            d = result.setdefault(bench, {})[strat] = {
                "R": _nan_mean(np.stack([k[1] for k in kept])), "R_rows": rows[:nr],
                "R_columns": rc, "P": _nan_mean(np.stack([k[2] for k in kept])),
                "P_rows": ["pre-trained"] + rows[:npr - 1], "P_columns": pc,
                "seeds": [k[0].seed for k in kept]}
            fig = Figure(figsize=(3 + 0.55 * (len(rc) + len(pc)), 1.5 + 0.45 * npr))
            ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [len(rc), len(pc)]})
            n = len(kept)
            _heatmap(ax, d["R"], d["R_rows"], rc, f"{bench} / {strat}: R (%), {n} seed(s)", "task")
            _heatmap(bx, d["P"], d["P_rows"], pc, f"P: linear probe (%), {n} seed(s)", "dataset")
            files += _save(fig, out_dir, f"matrices_{bench}__{strat}", used)
    result["files"] = files
    return result


def plot_all(records: list, out_dir: str | Path, *,
             problems: Optional[list] = None) -> dict:
    """All figures into ``out_dir``; skipped records are reported once in ``problems``.

    Returns:
        ``{"forward-transfer": ..., "otdd": ..., "matrices": ..., "files": [...]}``.
    """
    local: list[str] = []
    out = {"forward-transfer": plot_forward_transfer(records, out_dir, problems=local),
           "otdd": plot_otdd_vs_forgetting(records, out_dir, problems=local),
           "matrices": plot_matrices(records, out_dir, problems=local)}
    out["files"] = [f for v in out.values() for f in v["files"]]
    if problems is not None:
        problems.extend(dict.fromkeys(local))
    return out
