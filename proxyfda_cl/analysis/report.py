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

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from ..core.version import __version__
from ..core.errors import ConfigError
from ..core.typed_record import Record, read_results
from .records import describe, last_distance, run_flags, run_label
from .report_html import badge, page, section
from .report_sections import (correlation_section, figures_section, leaderboard_section,
                              paired_section)
from .tables import DASH, esc, html_table, number

__all__ = ["build_report", "write_report"]


def _shape_problem(rec: Record) -> Optional[str]:
    """What makes a complete record unusable for the tables and figures, or None: a missing
    config name, R or P, or ``metrics.final``, or distances that are not a list."""
    if "label" in rec.issues or "matrices" in rec.issues:
        return rec.issues.get("label") or rec.issues["matrices"]
    if rec.final is None:
        return rec.issues["final"]
    if rec.issues.get("distances") == "distances is not a list":
        return rec.issues["distances"]
    return None


def _attention(problems: list, failed: list[Record], complete: list[Record]) -> str:
    items = [f"<li><b>problem</b>: {esc(p)}</li>" for p in problems]
    items += [f"<li>{badge('failed')} {esc(run_label(r))}: {esc(r.error or 'no error line')}"
              "</li>" for r in failed]
    for r in complete:
        if r.collapsed:
            items.append(f"<li>{badge('collapsed')} {esc(run_label(r))}: task accuracy at chance "
                         f"after experience(s) {esc(', '.join(str(x) for x in r.collapsed))}; "
                         "its forgetting numbers measure a broken head, not the encoder</li>")
        if r.warnings:
            items.append(f"<li>{badge('warning')} {esc(run_label(r))}: "
                         f"{esc('; '.join(r.warnings))}</li>")
    rnd = [r for r in complete if r.random_init]
    if rnd:
        items.append(f"<li>{badge('random-init')} {len(rnd)} run(s) start from a randomly "
                     "initialised backbone (config.backbone.weights = random): a control, "
                     "not a pre-trained encoder</li>")
    if not items:
        return section("attention", "Attention", "<p>Nothing: every record is readable and "
                       "complete, no run failed, collapsed or warned.</p>")
    return section("attention", "Attention", f'<ul class="attention">{"".join(items)}</ul>')


def _num_cell(v: Optional[float]) -> tuple:
    """A sortable cell of a fraction: (percentage text, raw sort value)."""
    return number(v, scale=100), v


def _runs(records: list[Record], partial: dict) -> str:
    def knn(rec: Record) -> Optional[float]:
        return last_distance(rec, "knn_overlap", among_having=True)

    has_knn = any(knn(r) is not None for r in records)
    head = [("Status", "text"), ("Benchmark", "text"), ("Strategy", "text"), ("Seed", "num"),
            ("Backbone", "text"), ("Δ_LP (%)", "num"), ("A_LP (%)", "num")] + (
        [("kNN overlap (%)", "num")] if has_knn else []) + [
        ("Train (s)", "num"), ("Total (s)", "num"), ("Note", "text")]
    body, details = [], []
    for i, rec in enumerate(records):
        status = "partial" if id(rec) in partial else str(rec.status)
        final = rec.final
        flags = run_flags(rec)
        note = rec.error if status == "failed" else partial.get(id(rec), "")
        backbone, strategy = rec.backbone or "?", rec.strategy or "?"
        strat = esc(strategy) + "".join(" " + badge(f) for f in flags if f.startswith("collapsed"))
        train, total = rec.timing.train_s, rec.timing.total_s
        body.append([(badge(status), status, True), rec.benchmark or "?", (strat, strategy, True),
                     (str(rec.seed), rec.seed),
                     (esc(backbone) + (" " + badge("random-init") if rec.random_init else ""),
                      backbone, True),
                     _num_cell(final and final.delta_lp), _num_cell(final and final.a_lp)]
                    + ([_num_cell(knn(rec))] if has_knn else [])
                    + [(number(train, 1), train), (number(total, 1), total), str(note or "")])
        details.append(_run_detail(i, rec, status))
    return section("runs", "Runs", html_table(head, body, cls="sortable runs")
                   + '<h3>Config, versions and timings per run</h3>' + "".join(details))


def _run_detail(i: int, rec: Record, status: str) -> str:
    parts = [f"<p>record: <code>{esc(describe(rec))}</code>; id <code>{esc(rec.id)}"
             f"</code>; written {esc(rec.created or DASH)}</p>"]
    if status == "failed":
        parts.append(f'<p class="error">error: {esc(rec.error or DASH)}</p>')
    if rec.versions is not None:
        parts.append("<p>versions: "
                     + esc(", ".join(f"{k} {v}" for k, v in rec.versions.items())) + "</p>")
    if rec.timing.per_experience:
        rows = [[str(t), number(e.train_s), number(e.eval_s),
                 number(e.step_median_s, 1, scale=1000), DASH if e.steps is None else str(e.steps)]
                for t, e in enumerate(rec.timing.per_experience, 1)]
        parts.append(html_table([("Experience", "num"), ("Train (s)", "num"), ("Eval (s)", "num"),
                                 ("Median step (ms)", "num"), ("Steps", "num")], rows,
                                cls="small"))
    if rec.timing.stages:
        parts.append("<p>time per stage (s, all experiences): " + esc(", ".join(
            f"{name} {number(sec)}" for name, sec in rec.timing.stages)) + "</p>")
    cfg = rec.raw.get("config")
    parts.append("<pre>" + esc(json.dumps(cfg, indent=1, sort_keys=True, default=str)) + "</pre>")
    return (f'<details id="run-{i}"><summary>{badge(status)} {esc(run_label(rec))}</summary>'
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
    failed = [r for r in everything if r.status == "failed"]
    complete, partial = [], {}
    for rec in everything:
        if rec.status == "failed":
            continue
        why = (f"status is {rec.status!r}" if rec.status != "complete"
               else _shape_problem(rec))
        if why:
            partial[id(rec)] = why
            problems.append(f"record {describe(rec)}: {why}; left out of the tables and figures")
        else:
            complete.append(rec)
    labels = sorted({r.label for r in complete})
    if strict and baseline not in labels:
        raise ConfigError(f"--baseline: {baseline!r} is not a strategy of a complete run in "
                          f"{results_dir}; choose one of: {', '.join(labels) or 'none'}")
    found: list = []  # problems met while building the sections
    sections = [_safe("Leaderboard", lambda: leaderboard_section(complete, found), found),
                _safe("Paired", lambda: paired_section(complete, baseline, found), found),
                _safe("Figures", lambda: figures_section(complete, found), found),
                _safe("Correlation", lambda: correlation_section(complete, found, n_boot), found),
                _safe("Runs", lambda: _runs(everything, partial), found)]
    problems += [p for p in dict.fromkeys(found) if p not in problems]
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
