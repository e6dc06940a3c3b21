"""Run records as analysis reads them: the typed record (``core.typed_record.Record``) of each,
which (benchmark, strategy label) it belongs to, grouping the complete ones, what the tables
show of a run, and one-line problems for the records left out.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Optional

from ..core.typed_record import Record, parse_record

log = logging.getLogger(__name__)


def as_record(rec: Any) -> Record:
    """``rec`` as a :class:`Record`: as it is, or parsed from a record dict (as ``run``
    returns it); ``ValueError`` for anything else."""
    if isinstance(rec, Record):
        return rec
    if not isinstance(rec, dict):
        raise ValueError("not a mapping")
    return parse_record(rec)


def record_key(rec: Any) -> tuple[str, str]:
    """``(benchmark name, strategy label)`` of a record; ``ValueError`` when missing.

    The label (``Record.label``) is the strategy name, followed by its hyper-parameters that
    differ from the defaults (``fda(k=16)``), so runs of different settings are not merged.
    """
    rec = as_record(rec)
    if rec.label is None:
        raise ValueError(rec.issues.get("label", "config names missing"))
    return rec.benchmark, rec.label


def describe(rec: Any) -> str:
    """A short name of a record for problem lines: its file path or id."""
    if isinstance(rec, Record):
        return str(rec.path or rec.id or "<record without id>")
    if isinstance(rec, dict):
        return str(rec.get("_path") or rec.get("id") or "<record without id>")
    return f"<{type(rec).__name__}>"


def report(problems: Optional[list], line: str) -> None:
    """Log a one-line problem and append it to ``problems`` when given."""
    log.warning(line)
    if problems is not None:
        problems.append(line)


def group_records(records: Iterable[Any], problems: Optional[list] = None
                  ) -> dict[str, dict[str, list[Record]]]:
    """``{benchmark: {strategy label: [records sorted by seed]}}`` of the complete records.

    Records that are not complete or lack benchmark/strategy names are reported and skipped.
    """
    out: dict[str, dict[str, list[Record]]] = {}
    for item in records:
        try:
            rec = as_record(item)
            if rec.status != "complete":
                raise ValueError(f"status is {rec.status!r}, not 'complete'")
            bench, strat = record_key(rec)
        except ValueError as e:
            report(problems, f"record {describe(item)}: {e}; skipped")
            continue
        out.setdefault(bench, {}).setdefault(strat, []).append(rec)
    for strats in out.values():
        for recs in strats.values():
            recs.sort(key=lambda r: (r.seed is None, r.seed or 0))
    return out


def last_distance(rec: Record, key: str, *, among_having: bool = False) -> Optional[float]:
    """Mean of the distance ``key`` over the datasets of the record's last experience; None
    where it has no value (records written before ``knn_overlap`` existed).

    With ``among_having``, the last experience is the last one that has any value of ``key``.
    """
    entries = [d for d in rec.distances if d.experience is not None
               and (not among_having or getattr(d, key) is not None)]
    last = max((d.experience for d in entries), default=None)
    vals = [getattr(d, key) for d in entries if d.experience == last]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def run_flags(rec: Record) -> list[str]:
    """Plain flags of one record: ``failed``, ``collapsed (exp 2, 3)``, ``random-init``."""
    flags = ["failed"] if rec.status == "failed" else []
    if rec.collapsed:
        flags.append("collapsed (exp " + ", ".join(str(c) for c in rec.collapsed) + ")")
    if rec.random_init:
        flags.append("random-init")
    return flags


def run_label(rec: Record) -> str:
    """``benchmark / strategy / seed N`` of a record."""
    return f"{rec.benchmark or '?'} / {rec.strategy or '?'} / seed {rec.seed}"
