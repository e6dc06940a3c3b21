"""Leaderboard: one row per (benchmark, strategy), mean and std over seeds, as md, csv or html.

Rows come from run records (``proxyfda_cl.core.typed_record.read_results``); metrics are those of
METHOD.md, section "Metrics" (``A_LP``, ``Δ_LP``, ``FWT``, ``BWT``, ``Forgetting``), read
from ``metrics.final``; training time is the sum of ``timing.per_experience[*].train_s``.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..core.errors import ConfigError
from ..core.typed_record import METRICS, Record
from .records import describe, group_records, last_distance, report
from .tables import DASH, esc, html_table, markdown_table, number

DISTANCES = ("l2", "otdd", "knn_overlap")
COLUMNS = METRICS + DISTANCES + ("train_s",)
LABELS = {"a_lp": "A_LP (%)", "delta_lp": "Δ_LP (%)", "fwt": "FWT (%)", "bwt": "BWT (%)",
          "forgetting": "Forgetting (%)", "l2": "L2", "otdd": "OTDD",
          "knn_overlap": "kNN overlap (%)", "train_s": "Train (s)"}
FORMATS = ("md", "csv", "html")


def _run(rec: Record) -> dict:
    """What a row aggregates of one run: final metrics, distances, train time, flags."""
    return {**{m: getattr(rec.final, m) for m in METRICS},
            **{d: last_distance(rec, d) for d in DISTANCES}, "train_s": rec.timing.train_s,
            "seed": rec.seed, "collapsed": bool(rec.collapsed), "warned": bool(rec.warnings)}


def mean_std(values: list) -> tuple[Optional[float], Optional[float], int]:
    """Mean and sample std (ddof=1) of the non-None values, and their count.

    The std of a single value is None (undefined), not 0.0: one seed says nothing about
    spread. Both are None when no value is available.
    """
    vals = np.array([v for v in values if v is not None], dtype=float)
    if vals.size == 0:
        return None, None, 0
    std = float(np.std(vals, ddof=1)) if vals.size > 1 else None
    return float(np.mean(vals)), std, int(vals.size)


def leaderboard(records: list, problems: Optional[list] = None) -> list[dict]:
    """Aggregate run records into leaderboard rows.

    Records that are not complete, or whose config names or ``metrics.final`` are malformed,
    are skipped; each skip appends one line to ``problems`` (when given) and logs a warning.

    Args:
        records: run records (``Record``s from ``read_results``, or record dicts).
        problems: list to append one line per skipped record to.
    Returns:
        Rows sorted by benchmark, rank and strategy, each with ``benchmark``, ``strategy``,
        ``rank`` (1 = highest mean Δ_LP within the benchmark; ties share a rank; None when
        Δ_LP is unavailable), ``n_seeds``, ``seeds`` and, for every metric and ``train_s``,
        ``<m>_mean``, ``<m>_std`` (see ``mean_std``) and ``<m>_n`` (seeds with a value).
    """
    groups = group_records(records, problems)
    rows = []
    for bench, strat, recs in ((b, s, rs) for b in groups for s, rs in groups[b].items()):
        runs = []
        for rec in recs:
            if "final" in rec.issues:
                report(problems, f"record {describe(rec)}: {rec.issues['final']}; skipped")
                continue
            runs.append(_run(rec))
        if not runs:
            continue
        row: dict[str, Any] = {"benchmark": bench, "strategy": strat, "rank": None,
                               "n_seeds": len(runs), "seeds": [r["seed"] for r in runs],
                               "n_collapsed": sum(r["collapsed"] for r in runs),
                               "n_warned": sum(r["warned"] for r in runs)}
        for m in COLUMNS:
            row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_n"] = mean_std([r[m] for r in runs])
        rows.append(row)
    for bench in {r["benchmark"] for r in rows}:
        scored = [r for r in rows if r["benchmark"] == bench and r["delta_lp_mean"] is not None]
        for r in scored:
            r["rank"] = 1 + sum(o["delta_lp_mean"] > r["delta_lp_mean"] for o in scored)
    rows.sort(key=lambda r: (r["benchmark"], r["rank"] is None, r["rank"] or 0, r["strategy"]))
    return rows


def metric_cell(row: dict, m: str) -> str:
    """``mean ± std`` as percentages (seconds for train_s); the mean alone for one seed."""
    mean, std = row[f"{m}_mean"], row[f"{m}_std"]
    scale, digits = {"train_s": (1.0, 1), "l2": (1.0, 3), "otdd": (1.0, 3)}.get(m, (100.0, 2))
    text = number(mean, digits, scale=scale)
    return text if mean is None or std is None else f"{text} ± {number(std, digits, scale=scale)}"


def _display(row: dict) -> list[str]:
    rank = DASH if row["rank"] is None else str(row["rank"])
    name = row["strategy"]
    if row.get("n_collapsed"):
        name += f" (collapsed: {row['n_collapsed']} of {row['n_seeds']} seeds)"
    if row.get("n_warned"):
        name += f" (warnings: {row['n_warned']} of {row['n_seeds']} seeds)"
    return [rank, row["benchmark"], name, str(row["n_seeds"])] + [
        metric_cell(row, m) for m in COLUMNS]


HEADER = ["Rank", "Benchmark", "Strategy", "Seeds"] + [LABELS[m] for m in COLUMNS]


def to_markdown(rows: list[dict]) -> str:
    """A Markdown table: percentages with 2 decimals, ``mean ± std``, ``—`` where unavailable."""
    align = "rll" + "r" * (len(HEADER) - 3)
    return markdown_table(HEADER, [_display(r) for r in rows], align) + "\n"


CSV_FIELDS = ["benchmark", "strategy", "rank", "n_seeds", "seeds", "n_collapsed", "n_warned"] + [
    f"{m}_{s}" for m in COLUMNS for s in ("mean", "std", "n")]


def to_csv(rows: list[dict]) -> str:
    """Machine-readable CSV: raw fractions (seconds for train_s), empty where unavailable.

    Floats are written with ``repr`` so they read back exactly; seeds are ``;``-separated.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in rows:
        out = []
        for f in CSV_FIELDS:
            v = r[f]
            if f == "seeds":
                v = ";".join(str(s) for s in v)
            out.append("" if v is None else repr(v) if isinstance(v, float) else str(v))
        w.writerow(out)
    return buf.getvalue()


_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:14px}
th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
th{background:#f3f3f3;border-bottom:2px solid #999}
td.name{text-align:left}
tr.best td{font-weight:600}
tr.sep td{border-top:2px solid #999}
p.note{color:#666;font-size:12px}"""


def to_html(rows: list[dict], title: str = "proxyfda-cl leaderboard") -> str:
    """A self-contained HTML page (inline CSS, no scripts or external resources), text escaped."""
    new_bench = [i > 0 and r["benchmark"] != rows[i - 1]["benchmark"] for i, r in enumerate(rows)]
    classes = [" ".join(c for c, on in (("best", r["rank"] == 1), ("sep", sep)) if on)
               for r, sep in zip(rows, new_bench)]
    head = [(h, "text" if i in (1, 2) else "num") for i, h in enumerate(HEADER)]
    table = html_table(head, [_display(r) for r in rows], sort_attrs=False, text_cls="name",
                       row_classes=classes, newlines=True)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{esc(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            f"<h1>{esc(title)}</h1>\n{table}\n"
            '<p class="note">Mean ± sample std over seeds; accuracies in percentage points; '
            "rank by mean Δ_LP within each benchmark; L2, OTDD and kNN overlap: mean over the datasets "
            "after the last experience; — = unavailable.</p>\n</body>\n</html>\n")


def write_leaderboard(records: list, out_path: str | Path, fmt: Optional[str] = None,
                      *, problems: Optional[list] = None,
                      title: str = "proxyfda-cl leaderboard") -> str:
    """Write the leaderboard of ``records`` to ``out_path`` as md, csv or html.

    Args:
        records: run records.
        out_path: file to write; parent folders are created.
        fmt: ``md`` | ``csv`` | ``html``; None infers it from the suffix.
        problems: list to append one line per skipped record to.
        title: page title (html only).
    Returns:
        The path written, as a string.
    Raises:
        ConfigError: the format is unknown or cannot be inferred.
    """
    path = Path(out_path)
    if fmt is None:
        fmt = {".md": "md", ".markdown": "md", ".csv": "csv", ".html": "html",
               ".htm": "html"}.get(path.suffix.lower())
        if fmt is None:
            raise ConfigError(f"leaderboard output {path}: unknown suffix; use .md, .csv or "
                              ".html or pass fmt")
    if fmt not in FORMATS:
        raise ConfigError(f"leaderboard format {fmt!r}: unknown; use one of {', '.join(FORMATS)}")
    rows = leaderboard(records, problems)
    text = {"md": to_markdown, "csv": to_csv}.get(fmt, lambda r: to_html(r, title=title))(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)
