"""The run record: one JSON file per run, written atomically; reading a results folder.

Schema (all accuracies and differences are fractions in [0, 1]; ``null`` where undefined):

    id           stable hash of the complete config (``RunConfig.id``)
    status       "complete" | "failed"; failed records carry ``error`` (one line)
    config       the complete config (``config.to_dict``); strategy params beside its name
    hyperparameters  {strategy, values, non_default, revision}: the strategy's complete
                 resolved hyper-parameters, the names of those that differ from its defaults
                 and its revision (``hyperparameters`` reads it, or derives it for older records)
    versions     {"proxyfda_cl", "torch", "avalanche", "python", "device"}
    stream       dataset names of the experiences, in order (T of them)
    probes       held-out dataset names, never trained on
    matrices     R: T x T, R[t][j] = accuracy of task j with head j after experience t+1;
                 R_columns = stream;
                 P: (T+1) x (T+len(probes)) linear-probe accuracy, row 0 = pre-trained;
                 P_columns = stream + probes
    metrics      final: {a_lp, delta_lp, fwt, bwt, forgetting};
                 per_experience: list of T dicts with the same keys
    distances    list of {experience (1..T), dataset, l2, otdd, knn_overlap, n, otdd_method}
    collapsed, grad_ratio, warnings, memory   see docs/DESIGN.md, "The run record"
    timing       {per_experience: [{train_s, eval_s, step_median_s, steps}], pre_eval_s,
                 stages: {name: {s, calls}}, stages_synchronised, total_s}
    created      ISO time the record was written

``read_record`` returns a record as written (the runner's view); ``core.typed_record`` parses
each record once into a ``Record``, the typed view analysis reads (``read_results``), and
``core.revisions`` says what a record's hyper-parameters are, whatever version wrote it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import DataError

REQUIRED_COMPLETE = ("id", "status", "config", "matrices", "metrics")


def record_name(cfg_dict: dict, run_id: str) -> str:
    """File name of a run's record: benchmark, strategy, seed and id."""
    bench = str(cfg_dict["benchmark"]["name"]).replace("/", "_").replace(":", "_")
    strat = cfg_dict["strategy"]["name"]
    return f"{bench}__{strat}__seed{cfg_dict['seed']}__{run_id}.json"


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename over ``path``.

    A reader sees the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_record(path: str | os.PathLike) -> dict:
    """Read one record; ``DataError`` when unreadable or not a record."""
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"record {path}: unreadable ({e.__class__.__name__})") from None
    if not isinstance(rec, dict) or "status" not in rec or "id" not in rec:
        raise DataError(f"record {path}: not a run record (no id/status)")
    if rec["status"] == "complete":
        missing = [k for k in REQUIRED_COMPLETE if k not in rec]
        if missing:
            raise DataError(f"record {path}: complete but missing {', '.join(missing)}")
    return rec


def is_complete(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a readable record with status complete."""
    try:
        return read_record(path)["status"] == "complete"
    except DataError:
        return False


def records_dir(results_dir: str | os.PathLike) -> Path:
    """Where records live: ``DIR/records`` if present, else ``DIR`` itself."""
    d = Path(results_dir)
    return d / "records" if (d / "records").is_dir() else d
