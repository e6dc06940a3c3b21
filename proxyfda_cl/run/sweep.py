"""Sweeps: a grid of run configs, executed in local processes or on a Ray cluster.

The grid is strategies x benchmarks x seeds x overrides, on top of a suite's ``base``
config. A benchmark entry is a name or a mapping of ``BenchmarkConfig`` fields; a mapping may
carry its own ``overrides`` (``{train.epochs: 3}``), applied before the grid's.

Every run's id is the hash of its complete config, so a rerun of a sweep skips what is
complete, resumes what was interrupted (from its last checkpoint) and retries failed runs
only when asked.
"""
from __future__ import annotations

import copy
import itertools
import math
import os
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..config import RunConfig, from_dict, load_yaml, make_config, set_dotted, to_dict
from ..core.errors import ConfigError, DataError, quiet_third_party
from ..core.record import read_record
from .ray_engine import run_on_ray
from .runner import check_writable, preflight, record_path, run, write_failed_record

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"


@dataclass
class SweepConfig:
    """A suite: a base config and the axes of its grid."""

    name: str
    base: dict
    strategies: list
    benchmarks: list
    seeds: list
    overrides: list = field(default_factory=lambda: [{}])


def find_suite(name_or_path: str) -> Path:
    """A suite YAML by path, or by name among the packaged suites (``demo``, ``paper-clip``...)."""
    p = Path(os.path.expanduser(name_or_path))
    if p.is_file():
        return p
    packaged = SUITES_DIR / f"{name_or_path}.yaml"
    if packaged.is_file():
        return packaged
    names = ", ".join(sorted(s.stem for s in SUITES_DIR.glob("*.yaml")))
    raise ConfigError(f"suite {name_or_path}: no such file or packaged suite; packaged: {names}")


def load_suite(name_or_path: str, *, seeds: Optional[int] = None) -> SweepConfig:
    """Read a suite YAML; ``seeds`` (a count) replaces its seed axis with ``0..seeds-1``.

    Raises:
        ConfigError: an unknown top-level field, an axis that is not a list, or an axis
            listed empty (the grid would be empty).
    """
    path = find_suite(name_or_path)
    data = load_yaml(str(path))
    known = ("name", "base", "strategies", "benchmarks", "seeds", "overrides")
    for key in data:
        if key not in known:
            raise ConfigError(f"suite {path}: unknown field {key!r}; valid: {', '.join(known)}")
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"suite {path}: base must be a mapping of RunConfig fields")
    seed_axis = data.get("seeds", [base.get("seed", 0)])
    if isinstance(seed_axis, int) and not isinstance(seed_axis, bool):
        seed_axis = list(range(seed_axis))
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds: must be >= 1, got {seeds}")
        seed_axis = list(range(seeds))
    default_bench = base.get("benchmark", "demo")
    axes = {"strategies": data.get("strategies", [base.get("strategy", "naive")]),
            "benchmarks": data.get("benchmarks", [default_bench]),
            "seeds": seed_axis, "overrides": data.get("overrides", [{}])}
    for axis, values in axes.items():
        if not isinstance(values, list):
            raise ConfigError(f"suite {path}: {axis} must be a list, got {values!r}")
        if not values:
            raise ConfigError(f"suite {path}: {axis} is empty, so the grid is empty; "
                              f"list at least one entry or leave the field out")
    if not all(isinstance(o, dict) or o is None for o in axes["overrides"]):
        raise ConfigError(f"suite {path}: overrides must be a list of "
                          "{dotted.key: value} mappings")
    return SweepConfig(name=str(data.get("name", path.stem)), base=base, **axes)


def expand(suite: SweepConfig, *, out: str, sets: Optional[list] = None) -> list[RunConfig]:
    """Every run config of the grid (validated), in a stable order, without duplicates."""
    runs, seen = [], set()
    for strat, bench, seed, override in itertools.product(
            suite.strategies, suite.benchmarks, suite.seeds, suite.overrides):
        data = copy.deepcopy(suite.base)
        data["strategy"] = copy.deepcopy(strat) if isinstance(strat, dict) else {"name": strat}
        bench_overrides = {}
        if isinstance(bench, dict):
            bench = dict(bench)
            bench_overrides = bench.pop("overrides", None) or {}
            data["benchmark"] = {**_as_dict(data.get("benchmark")), **bench}
        else:
            b = _as_dict(data.get("benchmark"))
            if b.get("name") != bench:
                b = {k: v for k, v in b.items() if k not in ("experiences", "probes")}
            data["benchmark"] = {**b, "name": bench}
        data["seed"] = seed
        data["out"] = out
        for key, value in {**bench_overrides, **(override or {})}.items():
            set_dotted(data, key, value)
        cfg = make_config(data, sets)
        if cfg.id not in seen:
            seen.add(cfg.id)
            runs.append(cfg)
    return runs


def _as_dict(value) -> dict:
    if value is None:
        return {}
    return {"name": value} if isinstance(value, str) else dict(value)


def status_of(cfg: RunConfig) -> str:
    """``complete``, ``failed`` or ``todo`` from the run's record file."""
    try:
        return read_record(record_path(cfg))["status"]
    except DataError:  # no record, or an unreadable one
        return "todo"


def _worker_init(threads: int, parent: int, slot=None, n_gpus: int = 0) -> None:
    """Pool worker set-up: die with the parent (Linux), fixed torch threads, and with
    several GPUs its own GPU (``CUDA_VISIBLE_DEVICES``, round robin over worker slots)."""
    if slot is not None and n_gpus > 1:
        with slot.get_lock():
            index = slot.value
            slot.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % n_gpus)
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)
    import torch

    torch.set_num_threads(max(1, threads))


def run_one(cfg_dict: dict, keep_checkpoints: bool = False, overwrite: bool = False,
            threads: int = 0) -> dict:
    """Run one config in this process; never raises.

    Returns:
        ``{id, status, path, skipped, resumed, notes}``, with ``error`` (one line) when
        failed; ``notes`` are the run's messages a sweep shows (a checkpoint discarded).
    """
    quiet_third_party()
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    cfg = from_dict(cfg_dict)
    events: list = []
    try:
        rec = run(cfg, keep_checkpoints=keep_checkpoints, overwrite=overwrite,
                  on_event=events.append)
        return {"id": cfg.id, "status": "complete", "path": str(record_path(cfg)),
                "skipped": bool(rec.get("skipped")),
                "resumed": any(e.startswith("resuming") for e in events),
                "notes": [e for e in events if e.endswith("starting over")]}
    except Exception as e:  # recorded as failed by run(); the sweep goes on
        return {"id": cfg.id, "status": "failed", "path": str(record_path(cfg)),
                "error": f"{e.__class__.__name__}: {e}".splitlines()[0],
                "notes": [e for e in events if e.endswith("starting over")]}


def record_crash(cfg_dict: dict, error: str) -> dict:
    """The result of a run whose worker process died: a ``failed`` record is written unless
    the run's record is already complete (the worker died after writing it)."""
    cfg = from_dict(cfg_dict)
    path = str(record_path(cfg))
    if not write_failed_record(cfg, error):
        return {"id": cfg.id, "status": "complete", "path": path}
    return {"id": cfg.id, "status": "failed", "path": path, "error": error}


def run_sweep(runs: list[RunConfig], *, engine: str = "local", workers: int = 1,
              address: Optional[str] = None, cpus_per_run: float = 1, gpus_per_run: float = 0,
              retry_failed: bool = False, keep_checkpoints: bool = False, overwrite: bool = False,
              progress: bool = True, on_event: Callable[[str], None] = lambda m: None) -> dict:
    """Run every config not yet complete; returns counts and per-run results.

    Complete runs are skipped; failed ones too unless ``retry_failed``; ``overwrite`` redoes all.
    An interrupted run resumes from its last checkpoint. ``engine="local"`` runs ``workers``
    processes; ``engine="ray"`` submits one task per run (``cpus_per_run``, ``gpus_per_run``)
    to the cluster at ``address``, or to a local instance of ``workers * cpus_per_run`` CPUs.

    Returns:
        ``{"counts": {"complete": n, "failed": n}, "results": [one dict per run, in order]}``.
    """
    from tqdm.auto import tqdm

    if not runs:
        raise ConfigError("sweep: the grid is empty; "
                          "list at least one strategy, benchmark and seed")
    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine: {engine!r} is not local or ray")
    for cfg in runs:
        preflight(cfg)
    for folder in {record_path(c).parent for c in runs}:
        check_writable(folder)
    todo, results = [], {}
    for cfg in runs:
        st = "todo" if overwrite else status_of(cfg)
        if st == "complete" or (st == "failed" and not retry_failed):
            results[cfg.id] = {"id": cfg.id, "status": st, "path": str(record_path(cfg)),
                               "skipped": True}
        else:
            todo.append(cfg)
    counts = {"complete": sum(r["status"] == "complete" for r in results.values()),
              "failed": sum(r["status"] == "failed" for r in results.values()),
              "running": 0, "remaining": len(todo)}
    if counts["complete"] or counts["failed"]:
        on_event(f"skipping {counts['complete']} complete and {counts['failed']} failed run(s) "
                 f"already recorded" + ("" if retry_failed or not counts["failed"] else
                                        " (use --retry-failed to rerun failed ones)"))
    bar = tqdm(total=len(runs), initial=len(results), desc="sweep", disable=not progress,
               dynamic_ncols=True)

    def show() -> None:
        bar.set_postfix({k: counts[k] for k in ("complete", "running", "failed", "remaining")})

    def started() -> None:
        counts["running"] += 1
        counts["remaining"] -= 1
        show()

    def update(res: dict) -> None:
        results[res["id"]] = res
        counts[res["status"]] += 1
        for note in res.get("notes", []):
            on_event(note)
        counts["running"] -= 1
        if res["status"] == "failed":
            on_event(f"failed: {res['path']}: {res.get('error')}")
        elif res.get("resumed"):
            on_event(f"resumed from its checkpoint: {res['path']}")
        bar.update(1)
        show()

    threads = max(1, int(cpus_per_run))
    submit_args = [(to_dict(c), keep_checkpoints, overwrite, threads) for c in todo]
    try:
        if engine == "ray":
            run_on_ray(submit_args, run=run_one, crashed=record_crash, address=address,
                       cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, started=started,
                       update=update, num_cpus=max(1, math.ceil(workers * cpus_per_run)))
        else:
            _run_local(submit_args, workers=max(1, workers), threads=threads, started=started,
                       update=update, gpus_per_run=gpus_per_run)
    finally:
        bar.close()
    return {"counts": {k: counts[k] for k in ("complete", "failed")},
            "results": [results[c.id] for c in runs]}


def _run_local(args: list, *, workers: int, threads: int, started: Callable,
               update: Callable, gpus_per_run: float = 0) -> None:
    """Run ``args`` in a pool of ``workers`` spawned processes.

    With ``gpus_per_run > 0`` and several visible GPUs, each worker is pinned to one GPU,
    round robin, so that ``--workers N`` on an N-GPU machine uses them all.

    A worker that dies (killed, out of memory) breaks the pool: every run then in progress is
    recorded as failed (its checkpoint kept, so a retry resumes it) and a new pool takes the
    rest of the queue.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    n_gpus = 0
    if gpus_per_run > 0:
        import torch

        n_gpus = torch.cuda.device_count()
    slot = ctx.Value("i", 0)
    queue = list(args)
    while queue:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                 initializer=_worker_init,
                                 initargs=(threads, os.getpid(), slot, n_gpus)) as pool:
            pending: dict = {}
            broken = False
            while (queue and not broken) or pending:
                while queue and not broken and len(pending) < workers:
                    try:
                        fut = pool.submit(run_one, *queue[0])
                    except BrokenProcessPool:
                        broken = True
                        break
                    pending[fut] = queue.pop(0)
                    started()
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    a = pending.pop(fut)
                    try:
                        res = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        res = record_crash(a[0], "WorkerDied: a worker process died (killed or "
                                                 "out of memory) while this run was in progress")
                    update(res)
