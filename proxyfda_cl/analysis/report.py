"""One self-contained HTML page of a results folder: ``proxyfda-cl report RESULTS_DIR``.

The page holds, from the run records alone: what needs attention (unreadable or partial
records, failed runs with their error line, runs whose task accuracy collapsed to chance,
random-init backbones); the leaderboard per benchmark (mean ± std over seeds, the seeds,
sortable by any column); the paired comparison against a baseline strategy; the figures of
:mod:`proxyfda_cl.analysis.plots` (forward transfer, OTDD/L2 against forgetting, the R and P
heatmaps) embedded as PNG data URIs; the correlation table; and per run its config, versions
and timings. CSS and the sorting script are inline: the file opens offline, alone.

Every section is built from the records that pass a shape check; a record that does not is
listed under "Problems" with what is wrong, and a section that still fails says so in place
instead of stopping the report.
"""
from __future__ import annotations

import base64
import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from .. import __version__
from ..errors import ConfigError
from ..results import read_results
from . import plots
from .correlation import correlation_table
from .leaderboard import COLUMNS, LABELS, _cell, describe, is_number, leaderboard, record_key
from .paired import paired_comparison
from .report_html import badge, esc, page, section, table

__all__ = ["build_report", "write_report", "run_flags"]


def _dig(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...`` or None where a level is missing or not a mapping."""
    for k in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)
    return obj


def _name(rec: dict, field: str) -> str:
    v = _dig(rec, "config", field)
    v = v.get("name") if isinstance(v, dict) else v
    return str(v) if v is not None else "?"


def _shape_problem(rec: dict) -> Optional[str]:
    """What makes a complete record unusable for the tables and figures, or None."""
    if not isinstance(rec.get("config"), dict):
        return "config missing or not a mapping"
    for part in ("benchmark", "strategy"):
        if _name(rec, part) == "?":
            return f"config.{part}.name missing"
    mats = rec.get("matrices")
    if not isinstance(mats, dict) or not all(isinstance(mats.get(m), list) for m in ("R", "P")):
        return "matrices.R or matrices.P missing or not a list"
    if not isinstance(_dig(rec, "metrics", "final"), dict):
        return "metrics.final missing or not a mapping"
    if "distances" in rec and not isinstance(rec["distances"], list):
        return "distances is not a list"
    return None


def knn_overlap(rec: dict) -> Optional[float]:
    """Mean ``knn_overlap`` over the datasets at the last experience that has any; None
    when the record has none."""
    entries = [d for d in rec.get("distances") or [] if isinstance(d, dict)
               and is_number(d.get("knn_overlap")) and is_number(d.get("experience"))]
    if not entries:
        return None
    last = max(d["experience"] for d in entries)
    vals = [d["knn_overlap"] for d in entries if d["experience"] == last]
    return float(sum(vals) / len(vals))


def run_flags(rec: dict) -> list[str]:
    """Plain flags of one record: ``failed``, ``collapsed (exp 2, 3)``, ``random-init``."""
    flags = []
    if rec.get("status") == "failed":
        flags.append("failed")
    collapsed = rec.get("collapsed")
    if isinstance(collapsed, list) and collapsed:
        flags.append("collapsed (exp " + ", ".join(str(c) for c in collapsed) + ")")
    if _dig(rec, "config", "backbone", "weights") == "random":
        flags.append("random-init")
    return flags


def _label(rec: dict) -> str:
    return f"{_name(rec, 'benchmark')} / {_name(rec, 'strategy')} / seed {_dig(rec, 'config', 'seed')}"


def _pct(v: Any, signed: bool = False) -> str:
    if not is_number(v):
        return "—"
    return f"{100 * v:+.2f}" if signed else f"{100 * v:.2f}"


def _num_cell(v: Any, text: Optional[str] = None) -> tuple:
    """A sortable cell: (shown text, raw sort value)."""
    return (text if text is not None else _pct(v), v if is_number(v) else None)


# ---------------------------------------------------------------- sections

def _attention(problems: list, failed: list, complete: list) -> str:
    items = [f"<li><b>problem</b>: {esc(p)}</li>" for p in problems]
    items += [f"<li>{badge('failed')} {esc(_label(r))}: {esc(str(r.get('error') or 'no error line'))}"
              "</li>" for r in failed]
    for r in complete:
        c = r.get("collapsed")
        if isinstance(c, list) and c:
            items.append(f"<li>{badge('collapsed')} {esc(_label(r))}: task accuracy at chance "
                         f"after experience(s) {esc(', '.join(str(x) for x in c))}; its "
                         "forgetting numbers measure a broken head, not the encoder</li>")
    rnd = [r for r in complete if "random-init" in run_flags(r)]
    if rnd:
        items.append(f"<li>{badge('random-init')} {len(rnd)} run(s) start from a randomly "
                     "initialised backbone (config.backbone.weights = random): a control, "
                     "not a pre-trained encoder</li>")
    if not items:
        return section("attention", "Attention", "<p>Nothing: every record is readable and "
                       "complete, no run failed or collapsed.</p>")
    return section("attention", "Attention", f'<ul class="attention">{"".join(items)}</ul>')


def _leaderboard(records: list, problems: list) -> str:
    rows = leaderboard(records, problems)
    if not rows:
        return section("leaderboard", "Leaderboard", "<p>No complete run to rank.</p>")
    by_key: dict = {}
    for rec in records:
        try:
            by_key.setdefault(record_key(rec), []).append(rec)
        except ValueError:
            continue
    has_knn = any(knn_overlap(r) is not None for r in records)
    head = [("Rank", "num"), ("Strategy", "text"), ("Seeds", "text")] + [
        (LABELS[m], "num") for m in COLUMNS] + ([("kNN overlap (%)", "num")] if has_knn else [])
    parts = []
    for bench in sorted({r["benchmark"] for r in rows}):
        body = []
        for r in (x for x in rows if x["benchmark"] == bench):
            recs = by_key.get((bench, r["strategy"]), [])
            flags = sorted({f.split(" (")[0] for rec in recs for f in run_flags(rec)})
            name = esc(r["strategy"]) if r["rank"] != 1 else f"<b>{esc(r['strategy'])}</b>"
            name += "".join(" " + badge(f) for f in flags)
            cells = [(str(r["rank"]) if r["rank"] is not None else "—", r["rank"]),
                     (name, r["strategy"], True), ", ".join(str(s) for s in r["seeds"])]
            cells += [(_cell(r, m), r[f"{m}_mean"]) for m in COLUMNS]
            if has_knn:
                vals = [v for v in (knn_overlap(x) for x in recs) if v is not None]
                mean = sum(vals) / len(vals) if vals else None
                cells.append(_num_cell(mean))
            body.append(cells)
        parts.append(f"<h3>{esc(bench)}</h3>" + table(head, body, cls="sortable leaderboard"))
    note = ('<p class="note">Mean ± sample std over seeds, in percentage points (train time in '
            "seconds); rank by mean Δ_LP within the benchmark; click a column header to sort."
            + (" kNN overlap: mean over datasets after the last experience." if has_knn else "")
            + "</p>")
    return section("leaderboard", "Leaderboard", "".join(parts) + note)


def _paired(records: list, baseline: str, problems: list) -> str:
    strategies = sorted({_name(r, "strategy") for r in records})
    rows = {}
    for metric in ("delta_lp", "a_lp"):
        for by in (True, False):
            for r in paired_comparison(records, baseline=baseline, metric=metric,
                                       by_benchmark=by, problems=problems):
                rows.setdefault((r["benchmark"], r["strategy"]), {})[metric] = r
    if not rows:
        why = (f"no run of the baseline <b>{esc(baseline)}</b> in this folder" if not any(
            _name(r, "strategy") == baseline for r in records) else
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
                cells += [("—", None), ("—", None)]
                continue
            ci = "—" if math.isnan(r["ci_low"]) else f"[{_pct(r['ci_low'], True)}, {_pct(r['ci_high'], True)}]"
            sure = not math.isnan(r["ci_low"]) and (r["ci_low"] > 0 or r["ci_high"] < 0)
            cells += [(_pct(r["mean"], True), r["mean"]), (ci + (" *" if sure else ""), r["ci_low"])]
        body.append(cells)
    head = [("Benchmark", "text"), ("Strategy", "text"), ("Pairs", "num"),
            (f"Δ_LP − {baseline} (pts)", "num"), ("95% CI", "num"),
            (f"A_LP − {baseline} (pts)", "num"), ("95% CI ", "num")]
    note = (f'<p class="note">A pair is two runs with the same benchmark, backbone and seed; '
            f"the difference is strategy minus <b>{esc(baseline)}</b>, averaged over pairs, with "
            "a bootstrap interval over the pairs (* = the interval excludes 0).</p>")
    return section("paired", f"Paired comparison against {esc(baseline)}",
                   table(head, body, cls="sortable") + note)


def _png(path: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _figures(records: list, problems: list) -> str:
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


def _correlation(records: list, problems: list, n_boot: int) -> str:
    body = []
    for held_out in (False, True):
        try:
            tab = correlation_table(records, n_boot=n_boot, held_out=held_out)
        except Exception as e:
            problems.append(f"correlation: not computed ({e.__class__.__name__}: {e})")
            return section("correlation", "Correlation", "<p>Not computed; see Problems.</p>")
        for dist in ("otdd", "l2"):
            c = tab[dist]

            def ci(v):
                return "—" if any(x != x for x in v) else f"[{v[0]:+.3f}, {v[1]:+.3f}]"

            def num(v):
                return ("—" if v != v else f"{v:+.3f}", None if v != v else v)

            body.append([dist.upper(), "held-out datasets" if held_out else "all datasets",
                         (str(c["n"]), c["n"]), num(c["pearson"]), ci(c["pearson_ci"]),
                         num(c["spearman"]), ci(c["spearman_ci"])])
    head = [("Distance", "text"), ("Points", "text"), ("n", "num"), ("Pearson r", "num"),
            ("95% CI", "text"), ("Spearman ρ", "num"), ("95% CI ", "text")]
    note = ('<p class="note">Forgetting P[0][d] − P[t][d] against the feature distance of '
            "dataset d after experience t, over every (run, experience, dataset) point; "
            "held-out: only datasets not yet trained on. Bootstrap intervals over the points."
            "</p>")
    return section("correlation", "Correlation", table(head, body, cls="sortable") + note)


def _runs(records: list, partial: dict) -> str:
    def knn(rec: dict) -> Optional[float]:
        return knn_overlap(rec) if isinstance(rec.get("distances"), list) else None

    has_knn = any(knn(r) is not None for r in records)
    head = [("Status", "text"), ("Benchmark", "text"), ("Strategy", "text"), ("Seed", "num"),
            ("Backbone", "text"), ("Δ_LP (%)", "num"), ("A_LP (%)", "num")] + (
        [("kNN overlap (%)", "num")] if has_knn else []) + [
        ("Train (s)", "num"), ("Total (s)", "num"), ("Note", "text")]
    body, details = [], []
    for i, rec in enumerate(records):
        status = str(rec.get("status"))
        if id(rec) in partial:
            status = "partial"
        final = _dig(rec, "metrics", "final") or {}
        per = _dig(rec, "timing", "per_experience")
        train = sum(e.get("train_s", 0) for e in per if isinstance(e, dict)
                    and is_number(e.get("train_s"))) if isinstance(per, list) and per else None
        total = _dig(rec, "timing", "total_s")
        flags = run_flags(rec)
        note = rec.get("error") if status == "failed" else partial.get(id(rec), "")
        backbone = esc(_name(rec, "backbone")) + (" " + badge("random-init")
                                                  if "random-init" in flags else "")
        strat = esc(_name(rec, "strategy")) + "".join(
            " " + badge(f) for f in flags if f.startswith("collapsed"))
        seed = _dig(rec, "config", "seed")
        final = final if isinstance(final, dict) else {}
        body.append([(badge(status), status, True), _name(rec, "benchmark"),
                     (strat, _name(rec, "strategy"), True),
                     (str(seed), seed if is_number(seed) else None),
                     (backbone, _name(rec, "backbone"), True),
                     _num_cell(final.get("delta_lp")), _num_cell(final.get("a_lp"))]
                    + ([_num_cell(knn(rec))] if has_knn else [])
                    + [(f"{train:.1f}" if train is not None else "—", train),
                       (f"{total:.1f}" if is_number(total) else "—",
                        total if is_number(total) else None),
                       str(note or "")])
        details.append(_run_detail(i, rec, status))
    return section("runs", "Runs", table(head, body, cls="sortable runs")
                   + '<h3>Config, versions and timings per run</h3>' + "".join(details))


def _run_detail(i: int, rec: dict, status: str) -> str:
    parts = [f"<p>record: <code>{esc(describe(rec))}</code>; id <code>{esc(str(rec.get('id')))}"
             f"</code>; written {esc(str(rec.get('created', '—')))}</p>"]
    if status == "failed":
        parts.append(f'<p class="error">error: {esc(str(rec.get("error") or "—"))}</p>')
    versions = rec.get("versions")
    if isinstance(versions, dict):
        parts.append("<p>versions: " + esc(", ".join(f"{k} {v}" for k, v in versions.items()))
                     + "</p>")
    per = _dig(rec, "timing", "per_experience")
    if isinstance(per, list) and per:
        rows = []
        for t, e in enumerate(per, 1):
            e = e if isinstance(e, dict) else {}
            med = e.get("step_median_s")
            rows.append([str(t)] + [f"{e[k]:.2f}" if is_number(e.get(k)) else "—"
                                    for k in ("train_s", "eval_s")]
                        + [f"{1000 * med:.1f}" if is_number(med) else "—",
                           str(e.get("steps", "—"))])
        parts.append(table([("Experience", "num"), ("Train (s)", "num"), ("Eval (s)", "num"),
                            ("Median step (ms)", "num"), ("Steps", "num")], rows, cls="small"))
    cfg = rec.get("config")
    parts.append("<pre>" + esc(json.dumps(cfg, indent=1, sort_keys=True, default=str)) + "</pre>")
    return (f'<details id="run-{i}"><summary>{badge(status)} {esc(_label(rec))}</summary>'
            + "".join(parts) + "</details>")


def _problems(problems: list) -> str:
    if not problems:
        return ""
    items = "".join(f"<li>{esc(p)}</li>" for p in problems)
    return section("problems", "Problems", f"<ul>{items}</ul><p class=\"note\">Each line names "
                   "a record left out of the tables and figures, or part of one, and why.</p>")


def _safe(name: str, fn: Callable[[], str], problems: list) -> str:
    try:
        return fn()
    except Exception as e:  # one broken section, never a lost report
        problems.append(f"section {name}: not built ({e.__class__.__name__}: {e})")
        return section(name.lower(), name, "<p>Not built; see Problems.</p>")


def build_report(results_dir: str | os.PathLike, *, baseline: str = "naive",
                 n_boot: int = 1000, strict: bool = False) -> tuple[str, list[str]]:
    """The HTML report of a results folder and the problems it lists.

    Args:
        results_dir: a folder a run or sweep wrote (``records/`` inside, or records directly).
        baseline: the strategy label the paired comparison subtracts.
        n_boot: bootstrap resamples for the paired comparison's and correlations' intervals.
        strict: a ``baseline`` no complete run has is an error (the user named it), not a
            note in the paired section.
    Returns:
        (html, problems): the page, and one line per unreadable or partial record or part
        of the report that could not be built.
    Raises:
        DataError: the folder does not exist.
        ConfigError: ``strict`` and no complete run has strategy ``baseline``.
    """
    everything, problems = read_results(results_dir, include_failed=True)
    failed = [r for r in everything if r.get("status") == "failed"]
    complete, partial = [], {}
    for rec in everything:
        if rec.get("status") == "failed":
            continue
        why = (f"status is {rec.get('status')!r}" if rec.get("status") != "complete"
               else _shape_problem(rec))
        if why:
            partial[id(rec)] = why
            problems.append(f"record {describe(rec)}: {why}; left out of the tables and figures")
        else:
            complete.append(rec)
    labels = sorted({record_key(r)[1] for r in complete})
    if strict and baseline not in labels:
        raise ConfigError(f"--baseline: {baseline!r} is not a strategy of a complete run in "
                          f"{results_dir}; choose one of: {', '.join(labels) or 'none'}")
    body_problems: list = []
    sections = [_safe("Leaderboard", lambda: _leaderboard(complete, body_problems), body_problems),
                _safe("Paired", lambda: _paired(complete, baseline, body_problems), body_problems),
                _safe("Figures", lambda: _figures(complete, body_problems), body_problems),
                _safe("Correlation", lambda: _correlation(complete, body_problems, n_boot),
                      body_problems),
                _safe("Runs", lambda: _runs(everything, partial), body_problems)]
    problems += [p for p in dict.fromkeys(body_problems) if p not in problems]
    folder = Path(results_dir)
    summary = (f"{len(complete)} complete run(s), {len(failed)} failed, {len(partial)} partial, "
               f"{len(problems)} problem line(s); results folder <code>{esc(str(folder))}</code>; "
               f"written {datetime.now(timezone.utc).isoformat(timespec='seconds')} by "
               f"proxyfda-cl {__version__}.")
    html = page(f"proxyfda-cl report: {folder.resolve().name}", summary,
                [_attention(problems, failed, complete)] + sections + [_problems(problems)])
    return html, problems


def write_report(results_dir: str | os.PathLike, out: Optional[str | os.PathLike] = None, *,
                 baseline: str = "naive", n_boot: int = 1000,
                 strict: bool = False) -> tuple[str, list[str]]:
    """Write the report (default ``RESULTS_DIR/report.html``) atomically.

    Returns:
        (path written, problems listed in the report).
    Raises:
        DataError: the results folder does not exist.
        ConfigError: the output path cannot be written, or see ``build_report``.
    """
    html, problems = build_report(results_dir, baseline=baseline, n_boot=n_boot, strict=strict)
    path = Path(out) if out is not None else Path(results_dir) / "report.html"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise ConfigError(f"--out {path}: cannot write ({e.strerror}); choose a writable "
                          "path") from None
    return str(path), problems
