#!/usr/bin/env python
"""The robustness matrix's table for docs/benchmarks.md, from the records of
`proxyfda-cl sweep robustness`.

One row per cell (a benchmark of the suite): naive's Δ_LP and task accuracy, then per strategy
its Δ_LP minus naive's in points, its task accuracy and its kNN overlap on the fine-tuned
dataset, with `COLLAPSED` / `FAILED` where so. Below: per strategy, over the cells where naive
did not collapse (all of them, then those with and without clipping), the mean difference to
naive, the cells more than 2 points below it, and its collapses and failures.

Usage: python bench/robustness_table.py RESULTS_DIR [--strategies naive l2sp ...]
"""
import argparse
import statistics

from proxyfda_cl.analysis.tables import DASH, markdown_table, number
from proxyfda_cl.core.typed_record import Record, read_results

DEFAULT = ["naive", "l2sp", "ldifs", "fda", "proxy_fda"]


def cells(records: list[Record]) -> dict:
    """``{benchmark: {strategy: record}}`` (the last record of each pair wins)."""
    out: dict = {}
    for r in records:
        out.setdefault(r.benchmark, {})[r.strategy] = r
    return out


def summary(rec: Record) -> dict:
    if rec.status != "complete":
        return {"failed": True}
    task = rec.stream[0] if rec.stream else None
    knn = next((d.knn_overlap for d in rec.distances if d.dataset == task), None)
    return {"failed": False, "delta": 100 * rec.final.delta_lp, "acc": 100 * rec.R[-1][-1],
            "collapsed": bool(rec.collapsed), "knn": None if knn is None else 100 * knn}


def table(by_cell: dict, strategies: list) -> str:
    """The per-cell table."""
    others = [s for s in strategies if s != "naive"]
    head = ["cell", "naive Δ_LP (task acc)"] + [f"{s}: Δ vs naive (task acc, kNN)" for s in others]
    rows = []
    for cell in sorted(by_cell):
        runs = {s: summary(r) for s, r in by_cell[cell].items()}
        base = runs.get("naive")
        if base is None:
            continue
        row = [f"`{cell}`", "FAILED" if base["failed"] else
               f"{number(base['delta'], sign=True)} ({number(base['acc'], 0)}%)"
               + (" COLLAPSED" if base["collapsed"] else "")]
        for s in others:
            r = runs.get(s)
            if r is None or (r["failed"] is False and base["failed"]):
                row.append(DASH)
            elif r["failed"]:
                row.append("FAILED")
            else:
                row.append(f"{number(r['delta'] - base['delta'], sign=True)} "
                           f"({number(r['acc'], 0)}%, {number(r['knn'], 0)})"
                           + (" COLLAPSED" if r["collapsed"] else ""))
        rows.append(row)
    return markdown_table(head, rows, "-" * len(head))


def verdict(by_cell: dict, strategies: list, where: str = "") -> str:
    """Per strategy, over the cells (whose name contains ``where``) where naive did not
    collapse or fail: mean difference to naive, cells more than 2 points below, collapses,
    failures."""
    others = [s for s in strategies if s != "naive"]
    stats = {s: {"diffs": [], "below2": [], "collapsed": [], "failed": []} for s in others}
    n_ok = 0
    for cell in sorted(c for c in by_cell if where in c):
        runs = {s: summary(r) for s, r in by_cell[cell].items()}
        base = runs.get("naive")
        if base is None or base["failed"] or base["collapsed"]:
            continue
        n_ok += 1
        for s in others:
            r = runs.get(s)
            if r is None:
                continue
            if r["failed"]:
                stats[s]["failed"].append(cell)
                continue
            diff = r["delta"] - base["delta"]
            stats[s]["diffs"].append(diff)
            if r["collapsed"]:
                stats[s]["collapsed"].append(cell)
            if diff < -2.0:
                stats[s]["below2"].append(cell)
    scope = f" whose name contains `{where}`" if where else ""
    rows = []
    for s in others:
        st = stats[s]
        mean = number(statistics.mean(st["diffs"]) if st["diffs"] else None, sign=True)
        rows.append([s, f"{mean} (n = {len(st['diffs'])})"]
                    + [", ".join(f"`{c}`" for c in st[k]) or "none"
                       for k in ("below2", "collapsed", "failed")])
    head = ["strategy", "mean Δ_LP vs naive", "cells > 2 points below naive", "collapsed",
            "failed"]
    return (f"Over the {n_ok} cells{scope} where naive fine-tuning did not collapse:\n\n"
            + markdown_table(head, rows, "-r---"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--strategies", nargs="+", default=DEFAULT)
    ap.add_argument("--split", nargs="*", default=["/clip1/", "/noclip/"],
                    help="also summarise the cells whose name contains each of these")
    args = ap.parse_args()
    records, problems = read_results(args.results, include_failed=True)
    for p in problems:
        print(f"<!-- {p} -->")
    by_cell = cells(records)
    print(table(by_cell, args.strategies))
    for where in [""] + args.split:
        print()
        print(verdict(by_cell, args.strategies, where))


if __name__ == "__main__":
    main()
