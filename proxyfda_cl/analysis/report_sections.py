"""Sections of the report built across runs: the leaderboard per benchmark, the paired
comparison, the embedded figures and the correlation table. See
:mod:`proxyfda_cl.analysis.report`."""
from __future__ import annotations

import base64
import math
import os
import tempfile
from pathlib import Path

from ..core.typed_record import Record
from . import plots
from .correlation import correlation_cells, correlation_table
from .leaderboard import COLUMNS, LABELS, leaderboard, metric_cell
from .paired import paired_comparison
from .records import run_flags
from .report_html import badge, section
from .tables import DASH, esc, finite, html_table, interval, number


def leaderboard_section(records: list[Record], problems: list) -> str:
    """One sortable table per benchmark: ``leaderboard`` rows, seeds and flags."""
    rows = leaderboard(records, problems)
    if not rows:
        return section("leaderboard", "Leaderboard", "<p>No complete run to rank.</p>")
    by_key: dict = {}
    for rec in records:
        by_key.setdefault((rec.benchmark, rec.label), []).append(rec)
    head = [("Rank", "num"), ("Strategy", "text"), ("Seeds", "text")] + [
        (LABELS[m], "num") for m in COLUMNS]
    parts = []
    for bench in sorted({r["benchmark"] for r in rows}):
        body = []
        for r in (x for x in rows if x["benchmark"] == bench):
            recs = by_key.get((bench, r["strategy"]), [])
            flags = sorted({f.split(" (")[0] for rec in recs for f in run_flags(rec)})
            name = esc(r["strategy"]) if r["rank"] != 1 else f"<b>{esc(r['strategy'])}</b>"
            name += "".join(" " + badge(f) for f in flags)
            cells = [(str(r["rank"]) if r["rank"] is not None else DASH, r["rank"]),
                     (name, r["strategy"], True), ", ".join(str(s) for s in r["seeds"])]
            cells += [(metric_cell(r, m), r[f"{m}_mean"]) for m in COLUMNS]
            body.append(cells)
        parts.append(f"<h3>{esc(bench)}</h3>"
                     + html_table(head, body, cls="sortable leaderboard"))
    note = ('<p class="note">Mean ± sample std over seeds, in percentage points (train time in '
            "seconds); rank by mean Δ_LP within the benchmark; click a column header to sort."
            " L2, OTDD and kNN overlap: mean over the datasets after the last experience.</p>")
    return section("leaderboard", "Leaderboard", "".join(parts) + note)


def paired_section(records: list[Record], baseline: str, problems: list) -> str:
    """``paired_comparison`` of Δ_LP and A_LP against ``baseline``, per benchmark (and pooled
    when there are several); says why when there are no pairs."""
    strategies = sorted({r.label for r in records})
    rows = {}
    for metric in ("delta_lp", "a_lp"):
        for by in (True, False):
            for r in paired_comparison(records, baseline=baseline, metric=metric,
                                       by_benchmark=by, problems=problems):
                rows.setdefault((r["benchmark"], r["strategy"]), {})[metric] = r
    if not rows:
        why = (f"no run of the baseline <b>{esc(baseline)}</b> in this folder"
               if baseline not in strategies else
               f"no other strategy shares benchmark, backbone and seed with <b>{esc(baseline)}</b>")
        return section("paired", "Paired comparison", f"<p>No pairs: {why}. Strategies here: "
                       f"{esc(', '.join(strategies) or 'none')}; choose the baseline with "
                       "<code>proxyfda-cl report DIR --baseline NAME</code>.</p>")
    n_bench = len({k[0] for k in rows if k[0] != "all"})
    body = []
    for (bench, strat), by_metric in sorted(rows.items(), key=lambda kv: (
            kv[0][0] == "all", kv[0][0], -kv[1]["delta_lp"]["mean"] if "delta_lp" in kv[1] else 0)):
        if bench == "all" and n_bench < 2:
            continue
        d, a = by_metric.get("delta_lp"), by_metric.get("a_lp")
        cells = [bench if bench != "all" else "all benchmarks", strat,
                 (str(d["n"] if d else a["n"]), d["n"] if d else a["n"])]
        for r in (d, a):
            if r is None:
                cells += [(DASH, None), (DASH, None)]
                continue
            ci = interval((r["ci_low"], r["ci_high"]), scale=100)
            sure = not math.isnan(r["ci_low"]) and (r["ci_low"] > 0 or r["ci_high"] < 0)
            cells += [(number(r["mean"], scale=100, sign=True), r["mean"]),
                      (ci + (" *" if sure else ""), r["ci_low"])]
        body.append(cells)
    head = [("Benchmark", "text"), ("Strategy", "text"), ("Pairs", "num"),
            (f"Δ_LP − {baseline} (pts)", "num"), ("95% CI", "num"),
            (f"A_LP − {baseline} (pts)", "num"), ("95% CI ", "num")]
    note = (f'<p class="note">A pair is two runs with the same benchmark, backbone and seed; '
            f"the difference is strategy minus <b>{esc(baseline)}</b>, averaged over pairs, with "
            "a bootstrap interval over the pairs (* = the interval excludes 0).</p>")
    return section("paired", f"Paired comparison against {esc(baseline)}",
                   html_table(head, body, cls="sortable") + note)


def _png(path: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def figures_section(records: list[Record], problems: list) -> str:
    """The figures of :mod:`plots`, drawn into a temporary folder and embedded as PNG data
    URIs; a figure that fails is a problem line, not a lost page."""
    local: list = []
    parts = []
    with tempfile.TemporaryDirectory(prefix="proxyfda-report-") as tmp:
        groups = [("Forward transfer", plots.plot_forward_transfer),
                  ("Feature distance against forgetting", plots.plot_otdd_vs_forgetting),
                  ("Accuracy matrices R and P (mean over seeds)", plots.plot_matrices)]
        for i, (title, fn) in enumerate(groups):
            try:
                files = fn(records, os.path.join(tmp, str(i)), problems=local)["files"]
            except Exception as e:  # a figure that cannot be drawn must not stop the page
                local.append(f"figure '{title}': not drawn ({e.__class__.__name__}: {e})")
                continue
            imgs = [f'<figure><img alt="{esc(Path(f).stem)}" src="{_png(f)}">'
                    f"<figcaption>{esc(Path(f).stem)}</figcaption></figure>"
                    for f in files if f.endswith(".png")]
            if imgs:
                cls = "grid" if len(imgs) > 2 else "wide"
                parts.append(f'<h3>{esc(title)}</h3><div class="{cls}">{"".join(imgs)}</div>')
    problems.extend(p for p in dict.fromkeys(local) if p not in problems)
    return section("figures", "Figures", "".join(parts) or "<p>No figure: no complete run.</p>")


def correlation_section(records: list[Record], problems: list, n_boot: int) -> str:
    """``correlation_table`` over all points and over held-out datasets only."""
    body = []
    for held_out in (False, True):
        try:
            tab = correlation_table(records, n_boot=n_boot, held_out=held_out)
        except Exception as e:
            problems.append(f"correlation: not computed ({e.__class__.__name__}: {e})")
            return section("correlation", "Correlation", "<p>Not computed; see Problems.</p>")
        for dist in ("otdd", "l2"):
            c = tab[dist]
            r, r_ci, rho, rho_ci = correlation_cells(c)
            body.append([dist.upper(), "held-out datasets" if held_out else "all datasets",
                         (str(c["n"]), c["n"]), (r, finite(c["pearson"])), r_ci,
                         (rho, finite(c["spearman"])), rho_ci])
    head = [("Distance", "text"), ("Points", "text"), ("n", "num"), ("Pearson r", "num"),
            ("95% CI", "text"), ("Spearman ρ", "num"), ("95% CI ", "text")]
    note = ('<p class="note">Forgetting P[0][d] − P[t][d] against the feature distance of '
            "dataset d after experience t, over every (run, experience, dataset) point; "
            "held-out: only datasets not yet trained on. Bootstrap intervals over the points."
            "</p>")
    return section("correlation", "Correlation", html_table(head, body, cls="sortable") + note)

