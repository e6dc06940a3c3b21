"""The run record: one JSON file per run, written atomically; reading a results folder.

Schema (all accuracies and differences are fractions in [0, 1]; ``null`` where undefined):

    id           stable hash of the complete config (``RunConfig.id``)
    status       "complete" | "failed"; failed records carry ``error`` (one line)
    config       the complete config (``config.to_dict``); strategy params beside its name
    hyperparameters  {strategy, values, non_default}: the strategy's complete resolved
                 hyper-parameters and the names of those that differ from its defaults
                 (``hyperparameters`` reads it, or derives it for older records)
    versions     {"proxyfda_cl", "torch", "avalanche", "python", "device"}
    stream       dataset names of the experiences, in order (T of them)
    probes       held-out dataset names, never trained on
    matrices     R: T x T, R[t][j] = accuracy of task j with head j after experience t+1;
                 R_columns = stream;
                 P: (T+1) x (T+len(probes)) linear-probe accuracy, row 0 = pre-trained;
                 P_columns = stream + probes
    metrics      final: {a_lp, delta_lp, fwt, bwt, forgetting};
                 per_experience: list of T dicts with the same keys
    distances    list of {experience (1..T), dataset, l2, otdd, n, otdd_method}
    timing       {per_experience: [{train_s, eval_s, step_median_s}], total_s}
    created      ISO time the record was written
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from .errors import DataError

REQUIRED_COMPLETE = ("id", "status", "config", "matrices", "metrics")

#: The strategies' default hyper-parameters when records did not yet carry
#: ``hyperparameters`` (proxyfda-cl 0.1.0, plus the memory options at 0): what an older
#: record's values are compared with.
LEGACY_DEFAULTS = {
    "naive": {},
    "ewc": {"ewc_lambda": 100.0, "mode": "separate"},
    "lwf": {"alpha": 1.0, "temperature": 2.0},
    "lp_ft": {"lp_epochs": 1},
    "l2sp": {"alpha": 0.5, "teacher": "previous"},
    "ldifs": {"alpha": 10.0, "teacher": "previous"},
    "fda": {"lam": 3.0, "k": 8, "tau": 0.02, "bias": 0.0, "neg_weight": "constant",
            "boundary": "teacher", "learnable_temperature": False, "temp_lr": 0.001,
            "teacher": "previous", "teacher_cache_mb": 256.0, "memory_size": 0,
            "memory_warmup": 0},
    "proxy_fda": {"lam": 3.0, "k": 8, "tau": 0.02, "bias": 0.0, "n_pos": 4, "n_neg": 4,
                  "alpha": 1.0, "gen_lr": 0.001, "gamma_scale": 1.0, "neg_weight": "constant",
                  "boundary": "teacher", "learnable_temperature": False, "temp_lr": 0.001,
                  "teacher": "previous", "teacher_cache_mb": 256.0, "memory_size": 0,
                  "memory_warmup": 0},
}


#: Strategies whose computation at a given setting changed: the revision joins the run id (so
#: a sweep does not take an older run for a new one) and the record's hyper-parameters, and
#: the leaderboard labels older runs apart. Proxy-FDA 2: each proxy's own boundary (0.2.0).
STRATEGY_REVISIONS = {"proxy_fda": 2}


def revision_suffix(hp: dict) -> str:
    """`` [rev N]`` for a record of an older revision of its strategy, else ``""``."""
    current = STRATEGY_REVISIONS.get(hp["strategy"], 1)
    rev = hp.get("revision", 1)
    return "" if rev == current else f" [rev {rev}]"


def record_name(cfg_dict: dict, run_id: str) -> str:
    """File name of a run's record: benchmark, strategy, seed and id."""
    bench = str(cfg_dict["benchmark"]["name"]).replace("/", "_").replace(":", "_")
    strat = cfg_dict["strategy"]["name"]
    return f"{bench}__{strat}__seed{cfg_dict['seed']}__{run_id}.json"


#: Defaults that changed after records carried their hyper-parameters, with today's value: a
#: record's value of such a key counts as non-default when it differs from today's, so runs of
#: the old default are labelled apart (``fda(tau=0.02)``) and never merged with runs at the new
#: one. 0.4.0: FDA's and Proxy-FDA's τ, 0.02 -> 0.05.
CHANGED_DEFAULTS = {"fda": {"tau": 0.05}, "proxy_fda": {"tau": 0.05}}


def hyperparameters(rec: dict) -> dict:
    """The record's strategy hyper-parameters: ``{"strategy", "values", "non_default"}``.

    A record carries them (``hyperparameters``); for one written before, they come from
    ``config.strategy`` (complete, after defaults), and a value counts as non-default when it
    differs from ``LEGACY_DEFAULTS`` or is not listed there. Keys of ``CHANGED_DEFAULTS`` are
    compared with today's default.

    Raises:
        ValueError: ``config.strategy`` is missing or has no name.
    """
    hp = rec.get("hyperparameters")
    if (isinstance(hp, dict) and isinstance(hp.get("values"), dict)
            and isinstance(hp.get("non_default"), list)):
        return _with_changed_defaults(hp)
    cfg = rec.get("config")
    strategy = cfg.get("strategy") if isinstance(cfg, dict) else None
    strategy = {"name": strategy} if isinstance(strategy, str) else strategy
    if not isinstance(strategy, dict) or not isinstance(strategy.get("name"), str):
        raise ValueError("config.strategy.name missing or not a string")
    name = strategy["name"]
    values = {k: v for k, v in strategy.items() if k != "name"}
    defaults = LEGACY_DEFAULTS.get(name, {})
    return _with_changed_defaults({"strategy": name, "values": values,
                                   "non_default": sorted(k for k, v in values.items()
                                                         if k not in defaults or defaults[k] != v)})


def _with_changed_defaults(hp: dict) -> dict:
    changed = CHANGED_DEFAULTS.get(hp["strategy"], {})
    if not changed:
        return hp
    marked = set(hp["non_default"])
    for key, today in changed.items():
        if key in hp["values"]:
            (marked.discard if hp["values"][key] == today else marked.add)(key)
    return {**hp, "non_default": sorted(marked)}


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


def read_results(results_dir: str | os.PathLike, *, include_failed: bool = False
                 ) -> tuple[list[dict], list[str]]:
    """All records under a results folder.

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
            rec.setdefault("_path", str(path))
            records.append(rec)
    return records, problems


def find_record(results_dir: str | os.PathLike, run_id: str) -> Optional[Path]:
    """The record file of ``run_id`` under ``results_dir``, if any."""
    hits = sorted(records_dir(results_dir).glob(f"*__{run_id}.json"))
    return hits[0] if hits else None
