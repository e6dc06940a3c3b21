"""Run records as analysis reads them: which (benchmark, strategy label) a record belongs to,
grouping the complete ones, and one-line problems for those it skips.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Optional

from ..core.record import hyperparameters, revision_suffix

log = logging.getLogger(__name__)


def is_number(v: Any) -> bool:
    """True for a finite int or float (bools excluded)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def record_key(rec: dict) -> tuple[str, str]:
    """``(benchmark name, strategy label)`` of a record; ``ValueError`` when missing.

    The label is the strategy name, followed by its hyper-parameters that differ from the
    defaults (``fda(k=16)``, ``strategy_label``), so runs of different settings are not merged.
    """
    cfg = rec.get("config")
    if not isinstance(cfg, dict):
        raise ValueError("config missing or not a mapping")
    names = []
    for field in ("benchmark", "strategy"):
        v = cfg.get(field)
        v = v.get("name") if isinstance(v, dict) else v
        if not isinstance(v, str) or not v:
            raise ValueError(f"config.{field}.name missing or not a string")
        names.append(v)
    label = strategy_label(rec) if isinstance(cfg["strategy"], dict) else names[1]
    backbone = cfg.get("backbone")
    if isinstance(backbone, dict) and backbone.get("weights") == "random":
        label += " [random init]"
    return names[0], label


def strategy_label(rec: dict) -> str:
    """``name`` or ``name(key=value, ...)`` for the hyper-parameters the record marks as not at
    their default (``results.hyperparameters``), with `` [rev N]`` for a run of an older
    revision of the strategy (``results.STRATEGY_REVISIONS``)."""
    hp = hyperparameters(rec)
    if not hp["non_default"]:
        return hp["strategy"] + revision_suffix(hp)
    return (f"{hp['strategy']}("
            + ", ".join(f"{k}={hp['values'].get(k)}" for k in sorted(hp["non_default"])) + ")"
            + revision_suffix(hp))


def describe(rec: Any) -> str:
    """A short name of a record for problem lines: its file path or id."""
    if isinstance(rec, dict):
        return str(rec.get("_path") or rec.get("id") or "<record without id>")
    return f"<{type(rec).__name__}>"


def report(problems: Optional[list], line: str) -> None:
    """Log a one-line problem and append it to ``problems`` when given."""
    log.warning(line)
    if problems is not None:
        problems.append(line)


def _seed_key(rec: dict) -> tuple:
    seed = rec["config"].get("seed")
    return (not is_number(seed), seed if is_number(seed) else 0, str(seed))


def group_records(records: list, problems: Optional[list] = None
                  ) -> dict[str, dict[str, list[dict]]]:
    """``{benchmark: {strategy: [records sorted by seed]}}`` of the complete records.

    Records that are not complete or lack benchmark/strategy names are reported and skipped.
    """
    out: dict[str, dict[str, list[dict]]] = {}
    for rec in records:
        try:
            if not isinstance(rec, dict):
                raise ValueError("not a mapping")
            if rec.get("status") != "complete":
                raise ValueError(f"status is {rec.get('status')!r}, not 'complete'")
            bench, strat = record_key(rec)
        except ValueError as e:
            report(problems, f"record {describe(rec)}: {e}; skipped")
            continue
        out.setdefault(bench, {}).setdefault(strat, []).append(rec)
    for strats in out.values():
        for recs in strats.values():
            recs.sort(key=_seed_key)
    return out
