"""One run, end to end: config -> benchmark -> model -> strategy -> train/evaluate -> record.

After each experience the run saves a checkpoint of state_dicts (model with its heads,
optimizer, plugins, RNG states and the partial matrices; ``checkpoints``); rerunning an
interrupted run resumes from the last finished experience. The record is written atomically once the run completes, or with
``status: failed`` if it fails, without ever replacing an earlier complete record.
"""
from __future__ import annotations

import logging
import os
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from ..benchmarks import DATASETS, resolve, split_name
from ..benchmarks.streams import parse_subset
from ..config import RunConfig, to_dict
from ..core.errors import ConfigError, ProxyFDAError, WeightsError
from ..core.record import is_complete, read_record, record_name, write_json_atomic
from ..core.runtime import resolve_device
from ..models import BACKBONES, packaged
from ..models.hub import hub_reachable
from ..strategies import build_strategy
from .checkpoints import checkpoint_dir
from .session import Session

log = logging.getLogger("proxyfda_cl")


def record_path(cfg: RunConfig) -> Path:
    """Where the record of ``cfg`` is written: ``OUT/records/<bench>__<strategy>__seed<N>__<id>.json``."""
    return Path(os.path.expanduser(cfg.out)) / "records" / record_name(to_dict(cfg), cfg.id)


def remove_checkpoint(cfg: RunConfig) -> None:
    """Delete the run's checkpoint folder, if any."""
    ckpt = checkpoint_dir(cfg)
    if ckpt.is_dir():
        for f in ckpt.iterdir():
            f.unlink()
        ckpt.rmdir()


def check_writable(folder: Path) -> None:
    """``ConfigError`` naming ``out`` when the output folder cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"out: cannot write to {folder} ({e.strerror}); choose a writable folder") from None


def preflight(cfg: RunConfig) -> None:
    """Check every name and strategy parameter before anything runs or is written."""
    recipe = build_strategy(cfg.strategy.name, cfg.strategy.params)
    resolve_device(cfg.device)
    k = cfg.strategy.params.get("k")
    if isinstance(k, int):
        kind = cfg.train.sampler if cfg.train.sampler != "auto" else recipe.sampler
        if kind == "random":
            batch, source = cfg.train.batch_size, "train.batch_size"
        else:
            batch = cfg.train.classes_per_batch * cfg.train.samples_per_class
            source = "train.classes_per_batch x train.samples_per_class"
        if k + 2 > batch:
            raise ConfigError(f"strategy.k: k={k} needs batches of at least {k + 2}, but "
                              f"{source} gives {batch}; lower k or enlarge the batch")
    family, _, spec = cfg.backbone.name.partition(":")
    BACKBONES.get(family)
    if family == "timm" and not cfg.backbone.weights:
        arch = spec.split(".")[0]
        if (arch in packaged.PACKAGED and packaged.packaged_file(arch) is None
                and not hub_reachable()):
            raise WeightsError(f"backbone {cfg.backbone.name}: weights not found offline"
                               f"{packaged.install_hint(arch)}")
    experiences, probes = resolve(cfg.benchmark)
    names = experiences + probes
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"benchmark: dataset(s) {', '.join(dup)} listed twice; a dataset is "
                          f"either an experience or a probe, once")
    for name in names:
        DATASETS.get(split_name(parse_subset(name)[0])[0])


def write_failed_record(cfg: RunConfig, error: str, tb: str = "") -> bool:
    """Record ``cfg`` as failed with ``error`` (one line), unless its record is already
    complete: a failure never replaces a finished result. Returns whether it wrote."""
    path = record_path(cfg)
    if is_complete(path):
        return False
    write_json_atomic(path, {"id": cfg.id, "status": "failed", "config": to_dict(cfg),
                             "error": error, "traceback": tb,
                             "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return True


def run(cfg: RunConfig, *, overwrite: bool = False, keep_checkpoints: bool = False,
        progress: bool = False, on_event: Optional[Callable[[str], None]] = None) -> dict:
    """Run ``cfg`` and write its record; returns the record.

    A run whose complete record exists is skipped (the record is returned with
    ``"skipped": True``) unless ``overwrite``. A failure writes a ``failed`` record and
    re-raises; an existing complete record is never replaced by a failed one.
    """
    say = on_event or (lambda msg: None)
    preflight(cfg)
    path = record_path(cfg)
    check_writable(path.parent)
    if path.exists() and is_complete(path) and not overwrite:
        say(f"skipped (complete record exists): {path}")
        rec = read_record(path)
        rec["skipped"] = True
        return rec
    if overwrite:
        remove_checkpoint(cfg)  # redo from scratch, not from a kept checkpoint
    try:
        record = Session(cfg, progress=progress, say=say).run()
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        write_failed_record(cfg, f"{e.__class__.__name__}: {msg}",
                            "" if isinstance(e, ProxyFDAError) else traceback.format_exc())
        raise
    write_json_atomic(path, record)
    if not keep_checkpoints:
        remove_checkpoint(cfg)
    say(f"record: {path}")
    record["_path"] = str(path)
    return record
