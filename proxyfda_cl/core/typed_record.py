"""The run record as analysis reads it: each record parsed once into a :class:`Record`
(``parse_record``; ``read_results`` for a whole results folder). The schema is
``core.record``'s."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from .errors import DataError
from .record import read_record, records_dir
from .revisions import STRATEGY_REVISIONS, hyperparameters


METRICS = ("a_lp", "delta_lp", "fwt", "bwt", "forgetting")


def _number(v: Any) -> Optional[float]:
    """``v`` as a float when it is a finite int or float (bools excluded), else None."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _integer(v: Any) -> Optional[int]:
    f = _number(v)
    return int(f) if f is not None and f.is_integer() else None


def _text(v: Any) -> Optional[str]:
    return v if isinstance(v, str) else None


def _list(v: Any) -> list:
    return v if isinstance(v, list) else []


def _stages(v: Any) -> tuple[tuple[str, float], ...]:
    """``timing.stages`` (``{name: {"s", "calls"}}``) as ``((name, seconds), ...)``."""
    items = v.items() if isinstance(v, dict) else ()
    out = ((str(k), _number(e.get("s"))) for k, e in items if isinstance(e, dict))
    return tuple((k, sec) for k, sec in out if sec is not None)


def _name(v: Any) -> Optional[str]:
    """``config.<part>.name`` (or ``config.<part>`` as a string) when a non-empty string."""
    v = v.get("name") if isinstance(v, dict) else v
    return v if isinstance(v, str) and v else None


def _matrix(v: Any) -> Optional[list]:
    if not isinstance(v, list) or not all(isinstance(row, list) for row in v):
        return None
    return [[_number(x) for x in row] for row in v]


@dataclass(frozen=True)
class Hyperparameters:
    """A record's strategy hyper-parameters (``hyperparameters``): the complete values, the
    names of those not at their default and the strategy's revision."""
    strategy: str
    values: dict
    non_default: tuple[str, ...] = ()
    revision: int = 1

    @property
    def label(self) -> str:
        """``name`` or ``name(key=value, ...)`` for the values not at their default, with
        `` [rev N]`` for a run of an older revision (``STRATEGY_REVISIONS``)."""
        args = ", ".join(f"{k}={self.values.get(k)}" for k in sorted(self.non_default))
        old = self.revision != STRATEGY_REVISIONS.get(self.strategy, 1)
        return self.strategy + (f"({args})" if args else "") + (
            f" [rev {self.revision}]" if old else "")


@dataclass(frozen=True)
class Metrics:
    """``metrics.final`` or one entry of ``metrics.per_experience``; None where undefined."""
    a_lp: Optional[float] = None
    delta_lp: Optional[float] = None
    fwt: Optional[float] = None
    bwt: Optional[float] = None
    forgetting: Optional[float] = None


@dataclass(frozen=True)
class Distance:
    """One entry of ``distances``: the feature distances of a dataset after an experience."""
    experience: Optional[int] = None
    dataset: Optional[str] = None
    l2: Optional[float] = None
    otdd: Optional[float] = None
    knn_overlap: Optional[float] = None
    n: Optional[int] = None
    otdd_method: Optional[str] = None


@dataclass(frozen=True)
class ExperienceTiming:
    """One entry of ``timing.per_experience``, in seconds."""
    train_s: Optional[float] = None
    eval_s: Optional[float] = None
    step_median_s: Optional[float] = None
    steps: Optional[int] = None


@dataclass(frozen=True)
class Timing:
    """``timing``: per experience, the run's total, and the seconds of each named stage
    (``stages``: ``{name: seconds}``, empty for records written before 0.6.1)."""
    per_experience: tuple[ExperienceTiming, ...] = ()
    total_s: Optional[float] = None
    stages: tuple[tuple[str, float], ...] = ()

    @property
    def train_s(self) -> Optional[float]:
        """Training time summed over experiences; None unless every experience has one."""
        vals = [e.train_s for e in self.per_experience]
        return float(sum(vals)) if vals and None not in vals else None


@dataclass(frozen=True, eq=False)
class Record:
    """One run record as analysis reads it, parsed once (``parse_record``).

    A missing or malformed field is None (or empty); ``issues`` says what is wrong, by part:
    ``label`` (config names), ``final`` (``metrics.final``), ``matrices`` (R or P) and
    ``distances``. ``raw`` is the dict as read, for what the fields leave out.
    """
    id: Optional[str]
    status: Optional[str]
    path: Optional[str] = None
    benchmark: Optional[str] = None
    strategy: Optional[str] = None
    backbone: Optional[str] = None
    random_init: bool = False
    seed: Optional[int] = None
    hyperparameters: Optional[Hyperparameters] = None
    label: Optional[str] = None
    stream: list[str] = field(default_factory=list)
    R: Optional[list[list[Optional[float]]]] = None
    R_columns: Optional[list[str]] = None
    P: Optional[list[list[Optional[float]]]] = None
    P_columns: Optional[list[str]] = None
    final: Optional[Metrics] = None
    per_experience: list[Metrics] = field(default_factory=list)
    distances: list[Distance] = field(default_factory=list)
    collapsed: list[int] = field(default_factory=list)
    grad_ratio: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timing: Timing = Timing()
    versions: Optional[dict] = None
    error: Optional[str] = None
    created: Optional[str] = None
    issues: dict[str, str] = field(default_factory=dict)
    raw: dict = field(default_factory=dict)


_CONVERT = {"Optional[float]": _number, "Optional[int]": _integer, "Optional[str]": _text}


def _entry(cls: type, d: Any) -> Any:
    """An instance of ``Metrics``, ``Distance`` or ``ExperienceTiming`` from a mapping, each
    field converted to its type; None where missing or malformed."""
    d = d if isinstance(d, dict) else {}
    return cls(**{f.name: _CONVERT[f.type](d.get(f.name)) for f in fields(cls)})


def _metric_issue(final: dict, m: str) -> Optional[str]:
    if m not in final:
        return f"metrics.final.{m} missing"
    if final[m] is not None and _number(final[m]) is None:
        return f"metrics.final.{m} is not a finite number ({final[m]!r})"
    return None


def _final(metrics: Any) -> tuple[Optional[Metrics], Optional[str]]:
    """``metrics.final`` and the first thing wrong with it, if any."""
    final = metrics.get("final") if isinstance(metrics, dict) else None
    if not isinstance(final, dict):
        return None, "metrics.final missing or not a mapping"
    issue = next(filter(None, (_metric_issue(final, m) for m in METRICS)), None)
    return _entry(Metrics, final), issue


def parse_record(raw: dict, path: Optional[str | os.PathLike] = None) -> Record:
    """The typed view of a record dict; never raises on a malformed field (see ``Record``).

    Args:
        raw: the record as read (``read_record``) or as ``run`` returns it.
        path: the file it was read from (default: the dict's ``_path``, if any).
    """
    issues: dict[str, str] = {}
    cfg = raw.get("config")
    part = cfg if isinstance(cfg, dict) else {}
    bench, strat = _name(part.get("benchmark")), _name(part.get("strategy"))
    backbone = part.get("backbone")
    random_init = isinstance(backbone, dict) and backbone.get("weights") == "random"
    hp = label = None
    if not isinstance(cfg, dict):
        issues["label"] = "config missing or not a mapping"
    elif bench is None or strat is None:
        part_name = "strategy" if bench else "benchmark"
        issues["label"] = f"config.{part_name}.name missing or not a string"
    else:
        h = hyperparameters(raw)
        hp = Hyperparameters(h["strategy"], dict(h["values"]), tuple(h["non_default"]),
                             _integer(h.get("revision", 1)) or 1)
        label = (hp.label if isinstance(cfg["strategy"], dict) else strat) + (
            " [random init]" if random_init else "")
    mats = raw.get("matrices") if isinstance(raw.get("matrices"), dict) else {}
    R, P = _matrix(mats.get("R")), _matrix(mats.get("P"))
    if R is None or P is None:
        issues["matrices"] = "matrices.R or matrices.P missing or not a list"
    metrics = raw.get("metrics")
    final, issue = _final(metrics)
    if issue:
        issues["final"] = issue
    dists = raw.get("distances")
    if dists is not None and not isinstance(dists, list):
        issues["distances"] = "distances is not a list"
    elif any(not isinstance(d, dict) for d in _list(dists)):
        issues["distances"] = "a distance entry is not a mapping"
    timing = raw.get("timing") if isinstance(raw.get("timing"), dict) else {}
    per_time = tuple(_entry(ExperienceTiming, e) for e in _list(timing.get("per_experience")))
    per = metrics.get("per_experience") if isinstance(metrics, dict) else None
    columns = {k: [str(c) for c in mats[k]] if isinstance(mats.get(k), list) else None
               for k in ("R_columns", "P_columns")}
    return Record(
        id=None if raw.get("id") is None else str(raw["id"]), status=_text(raw.get("status")),
        path=str(path) if path is not None else _text(raw.get("_path")), benchmark=bench,
        strategy=strat, backbone=_name(backbone), random_init=random_init,
        seed=_integer(part.get("seed")), hyperparameters=hp, label=label,
        stream=[str(s) for s in _list(raw.get("stream"))], R=R, P=P, **columns, final=final,
        per_experience=[_entry(Metrics, e) for e in _list(per)],
        distances=[_entry(Distance, d) for d in _list(dists) if isinstance(d, dict)],
        collapsed=[c for c in map(_integer, _list(raw.get("collapsed"))) if c is not None],
        grad_ratio=[e for e in _list(raw.get("grad_ratio")) if isinstance(e, dict)],
        warnings=[str(w) for w in _list(raw.get("warnings"))],
        timing=Timing(per_time, _number(timing.get("total_s")), _stages(timing.get("stages"))),
        versions=raw.get("versions") if isinstance(raw.get("versions"), dict) else None,
        error=None if raw.get("error") is None else str(raw["error"]),
        created=None if raw.get("created") is None else str(raw["created"]),
        issues=issues, raw=raw)


def read_results(results_dir: str | os.PathLike, *, include_failed: bool = False
                 ) -> tuple[list[Record], list[str]]:
    """All records under a results folder, each parsed once (``parse_record``).

    Returns:
        (records, problems): complete records (and failed ones if asked), sorted by file
        name, and one line per file skipped as corrupt or partial.
    Raises:
        DataError: the folder does not exist.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise DataError(f"results folder {results_dir}: does not exist; pass the folder a run or sweep wrote")
    records, problems = [], []
    for path in sorted(records_dir(root).glob("*.json")):
        try:
            rec = read_record(path)
        except DataError as e:
            problems.append(str(e))
            continue
        if rec["status"] == "complete" or include_failed:
            records.append(parse_record(rec, path))
    return records, problems
