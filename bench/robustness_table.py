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

from proxyfda_cl.core.record import read_results

DEFAULT = ["naive", "l2sp", "ldifs", "fda", "proxy_fda"]


def cells(records: list) -> dict:
    """``{benchmark: {strategy: record}}`` (the last record of each pair wins)."""
    out: dict = {}
    for r in records:
        out.setdefault(r["config"]["benchmark"]["name"], {})[r["config"]["strategy"]["name"]] = r
    return out


def summary(rec: dict) -> dict:
    if rec.get("status") != "complete":
        return {"failed": True}
    task = rec["config"]["benchmark"]["experiences"][0]
    knn = next((d.get("knn_overlap") for d in rec.get("distances", [])
                if d["dataset"] == task), None)
    return {"failed": False, "delta": 100 * rec["metrics"]["final"]["delta_lp"],
            "acc": 100 * rec["matrices"]["R"][-1][-1], "collapsed": bool(rec.get("collapsed")),
            "knn": None if knn is None else 100 * knn}


def table(by_cell: dict, strategies: list) -> str:
    """The per-cell table."""
    others = [s for s in strategies if s != "naive"]
    head = ["cell", "naive Δ_LP (task acc)"] + [f"{s}: Δ vs naive (task acc, kNN)" for s in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in sorted(by_cell):
        runs = {s: summary(r) for s, r in by_cell[cell].items()}
        base = runs.get("naive")
        if base is None:
            continue
        row = [f"`{cell}`", "FAILED" if base["failed"] else
               f"{base['delta']:+.2f} ({base['acc']:.0f}%)" + (" COLLAPSED" if base["collapsed"] else "")]
        for s in others:
            r = runs.get(s)
            if r is None or (r["failed"] is False and base["failed"]):
                row.append("—")
            elif r["failed"]:
                row.append("FAILED")
            else:
                row.append(f"{r['delta'] - base['delta']:+.2f} ({r['acc']:.0f}%, {r['knn']:.0f})"
                           + (" COLLAPSED" if r["collapsed"] else ""))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


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
    lines = [f"Over the {n_ok} cells{scope} where naive fine-tuning did not collapse:", "",
             "| strategy | mean Δ_LP vs naive | cells > 2 points below naive | collapsed | failed |",
             "|---|---:|---|---|---|"]
    for s in others:
        st = stats[s]
        mean = f"{statistics.mean(st['diffs']):+.2f}" if st["diffs"] else "—"
        lines.append(f"| {s} | {mean} (n = {len(st['diffs'])}) | "
                     f"{', '.join(f'`{c}`' for c in st['below2']) or 'none'} | "
                     f"{', '.join(f'`{c}`' for c in st['collapsed']) or 'none'} | "
                     f"{', '.join(f'`{c}`' for c in st['failed']) or 'none'} |")
    return "\n".join(lines)


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
