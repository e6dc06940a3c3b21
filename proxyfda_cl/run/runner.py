"""One run, end to end: config -> benchmark -> model -> strategy -> train/evaluate -> record.

``run`` checks the config, skips a run whose complete record exists, and writes the record
atomically once the run completes, or with ``status: failed`` if it fails, without ever
replacing an earlier complete record. ``Session`` is the body: it builds everything and
trains experience by experience, evaluating after each. After each experience it saves a
checkpoint of state_dicts (model with its heads, optimizer, plugins, RNG states and the
partial matrices; ``checkpoints``); rerunning an interrupted run resumes from the last
finished experience.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import torch
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin

from ..benchmarks import DATASETS, resolve, split_name
from ..benchmarks.streams import build_stream, parse_subset
from ..config import RunConfig, to_dict
from ..core.errors import ConfigError, ProxyFDAError, WeightsError, recorded_warnings
from ..core.record import is_complete, read_record, record_name, write_json_atomic
from ..core.runtime import resolve_device, seed_everything, versions
from ..metrics.continual import compute_metrics
from ..models import BACKBONES, EncoderWithHeads, build_encoder, image_transform, packaged
from ..models.base import batchnorm_layers
from ..models.hub import hub_reachable
from ..strategies import TeacherPlugin, build_strategy, hyperparameters, strategy_defaults
from ..training import (AutocastPlugin, DivergenceGuardPlugin, FrozenBatchNormPlugin,
                        GradClipPlugin, HeadInitPlugin, LRSchedulePlugin,
                        RecomputeBatchNormPlugin, StageTimes, StepTimerPlugin, make_optimizer)
from ..training.grad_ratio import GradRatioPlugin
from ..training.loggers import RunLoggers
from ..training.sampling import BatchSamplerPlugin
from .checkpoints import checkpoint_dir, resume, restore_strategy, save_checkpoint
from .evaluation import Evaluator

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
        progress: bool = False, on_event: Optional[Callable[[str], None]] = None,
        sync_stages: bool = False) -> dict:
    """Run ``cfg`` and write its record; returns the record.

    A run whose complete record exists is skipped (the record is returned with
    ``"skipped": True``) unless ``overwrite``. A failure writes a ``failed`` record and
    re-raises; an existing complete record is never replaced by a failed one.
    ``sync_stages`` synchronises CUDA around every timed stage (``StageTimes``), so that
    ``timing.stages`` holds device time too, at some cost in speed (``bench/gpu-check``).
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
        record = Session(cfg, progress=progress, say=say, sync_stages=sync_stages).run()
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


#: A task accuracy at most ``chance + COLLAPSE_MARGIN * (1 - chance)`` after its experience
#: marks the run as collapsed (for 10 classes: at most 19%).
COLLAPSE_MARGIN = 0.1
_EXP_KEY = re.compile(r"^Top1_Acc_Exp/eval_phase/test_stream/Task\d+/Exp(\d+)$")


class Session:
    """Everything one run holds while it trains."""

    def __init__(self, cfg: RunConfig, *, progress: bool = False,
                 say: Callable[[str], None] = lambda m: None, sync_stages: bool = False) -> None:
        self.cfg, self.progress, self.say = cfg, progress, say
        self.sync_stages = sync_stages

    def run(self) -> dict:
        cfg = self.cfg
        t_start = time.perf_counter()
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device)
        stages = StageTimes(device, sync=self.sync_stages)
        recipe = build_strategy(cfg.strategy.name, cfg.strategy.params)
        with stages("model_build"):
            encoder = build_encoder(cfg.backbone, progress=self.progress)
        with stages("data_build"):
            stream = build_stream(cfg.benchmark, image_transform(encoder), encoder.input_size,
                                  seed=cfg.seed, probe_train_size=cfg.eval.probe_train_size,
                                  probe_test_size=cfg.eval.probe_test_size)
        model = EncoderWithHeads(encoder)
        plugins = recipe.plugins
        evaluator = Evaluator(stream, cfg.eval, device=device, precision=cfg.train.precision,
                              seed=cfg.seed, num_workers=cfg.train.num_workers, stages=stages)
        state = {"R": [], "P": [], "distances": [], "timing": []}
        bn_drift = (cfg.train.batchnorm == "train" and cfg.eval.distances and cfg.eval.bn_drift
                    and bool(batchnorm_layers(encoder)))
        ckpt_dir = checkpoint_dir(cfg)
        new_optimizer = functools.partial(make_optimizer, name=cfg.train.optimizer,
                                          lr=cfg.train.lr, momentum=cfg.train.momentum,
                                          weight_decay=cfg.train.weight_decay)
        resumed = resume(ckpt_dir, model, plugins, evaluator, device, new_optimizer, self.say)
        if resumed is not None:
            model, plugins, state = resumed.model, resumed.plugins, resumed.state
            stages.load(state.get("stages"))  # model and data build count again: they ran again
            self.say(f"resuming after experience {len(state['R'])} from {ckpt_dir}")
        else:
            t0 = time.perf_counter()
            model.to(device)
            if bn_drift:
                evaluator.keep_initial(model.encoder)
            row, _ = evaluator.evaluate(model.encoder, None)
            state["P"].append(row)
            state["pre_eval_s"] = time.perf_counter() - t0

        for p in plugins:  # the plugins a resume restored, not the recipe's first ones
            if isinstance(p, TeacherPlugin):
                p.time_with(stages)
        kind = cfg.train.sampler if cfg.train.sampler != "auto" else recipe.sampler
        timer = StepTimerPlugin(stages=stages)
        extra = [BatchSamplerPlugin(kind=kind, batch_size=cfg.train.batch_size,
                                    classes_per_batch=cfg.train.classes_per_batch,
                                    samples_per_class=cfg.train.samples_per_class,
                                    seed=cfg.seed, num_workers=cfg.train.num_workers,
                                    pin_memory=device.type == "cuda",
                                    teachers=[p for p in plugins if isinstance(p, TeacherPlugin)],
                                    stages=stages),
                 LRSchedulePlugin(base_lr=cfg.train.lr, warmup_steps=cfg.train.warmup_steps,
                                  schedule=cfg.train.schedule,
                                  restart_epochs=recipe.extra_epochs),
                 timer]
        if cfg.train.head_init != "random" or cfg.train.freeze_head:
            extra.append(HeadInitPlugin(mode=cfg.train.head_init, freeze=cfg.train.freeze_head,
                                        batch_size=cfg.eval.batch_size, grid=cfg.eval.probe_grid,
                                        seed=cfg.seed, num_workers=cfg.train.num_workers))
        first = []  # end-of-experience work every other plugin must see
        if cfg.train.batchnorm == "frozen":
            extra.append(FrozenBatchNormPlugin())
        elif cfg.train.batchnorm_recompute and batchnorm_layers(encoder):
            first.append(RecomputeBatchNormPlugin(batch_size=cfg.eval.batch_size,
                                                  num_workers=cfg.train.num_workers))
        if cfg.train.grad_clip:
            extra.append(GradClipPlugin(max_norm=cfg.train.grad_clip))
        if cfg.train.precision == "bf16":
            extra.append(AutocastPlugin(device_type=device.type))
        weights = " or ".join(f"strategy.{k}" for k in ("lam", "alpha", "ewc_lambda")
                              if k in strategy_defaults(cfg.strategy.name))
        ratio = GradRatioPlugin() if weights else None
        if ratio is not None:
            extra.append(ratio)
        extra.append(DivergenceGuardPlugin(lr=cfg.train.lr, hint=weights and f" or {weights}",
                                           grad_clip=cfg.train.grad_clip))
        optimizer = resumed.optimizer if resumed is not None else new_optimizer(model.parameters())
        logs = RunLoggers(cfg, interactive=self.progress, resumed=resumed is not None)
        strategy = Naive(model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(),
                         train_mb_size=cfg.train.batch_size,
                         train_epochs=cfg.train.epochs + recipe.extra_epochs,
                         eval_mb_size=cfg.eval.batch_size, device=device,
                         plugins=first + logs.plugins + list(plugins) + extra,
                         evaluator=EvaluationPlugin(*logs.metrics(), loggers=logs.loggers))
        if resumed is not None:
            restore_strategy(strategy, resumed)

        train_stream = stream.benchmark.train_stream
        test_stream = stream.benchmark.test_stream
        n_exp = len(stream.experiences)
        autocast = next((p for p in extra if isinstance(p, AutocastPlugin)), None)
        try:
            for t in range(len(state["R"]), n_exp):
                self.say(f"experience {t + 1}/{n_exp}: {stream.experiences[t]}")
                caught: list = []  # the experience's ResultWarnings, one line each
                with recorded_warnings(caught):
                    t0 = time.perf_counter()
                    strategy.train(train_stream[t], num_workers=cfg.train.num_workers)
                    train_s = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    # tasks seen so far only: R[t][j] for j > t is left undefined (None)
                    with stages("heads_eval"):
                        results = strategy.eval(test_stream[:t + 1],
                                                num_workers=cfg.train.num_workers)
                    p_row, dists = evaluator.evaluate(
                        model.encoder, t + 1,
                        bn_data=train_stream[t].dataset.eval() if bn_drift else None)
                state.setdefault("warnings", []).extend(
                    f"experience {t + 1}: {line}" for line in caught)
                r_row = [None] * n_exp
                for key, value in results.items():
                    m = _EXP_KEY.match(key)
                    if m:
                        r_row[int(m.group(1))] = float(value)
                chance = 1.0 / stream.sets[stream.experiences[t]].num_classes
                acc = r_row[t]
                if acc is not None and acc <= chance + COLLAPSE_MARGIN * (1 - chance):
                    state.setdefault("collapsed", []).append(t + 1)
                    self.say(f"experience {t + 1}: task accuracy {100 * acc:.1f}% is at chance "
                             f"({100 * chance:.1f}%): the run collapsed")
                state["R"].append(r_row)
                state["P"].append(p_row)
                state["distances"].extend(dists)
                state.setdefault("memory", []).extend(
                    e for p in plugins for e in getattr(p, "memory_log", []) if e["experience"] == t + 1)
                if ratio is not None:
                    entries = [{**e, **bound_entry(plugins, t + 1)}
                               for e in ratio.log if e["experience"] == t + 1]
                    state.setdefault("grad_ratio", []).extend(entries)
                    state.setdefault("warnings", []).extend(
                        GradRatioPlugin.warnings(entries, weights))
                state["timing"].append({"train_s": train_s, "eval_s": time.perf_counter() - t0,
                                        "step_median_s": timer.median(),
                                        "steps": len(timer.times)})
                logs.log_experience(t + 1, state, evaluator.columns, list(stream.experiences),
                                    strategy.clock.train_iterations)
                # so far, for a resumed run to go on from (without this checkpoint's own write)
                state["stages"] = stages.as_dict()
                with stages("checkpoint"):
                    save_checkpoint(ckpt_dir, model, plugins, strategy, state, evaluator)
        finally:
            logs.close()
            if autocast is not None:  # a failed forward must not leave autocast on
                autocast.close()

        metrics = compute_metrics(state["R"], state["P"], n_exp)
        return {
            "id": cfg.id,
            "status": "complete",
            "config": to_dict(cfg),
            "hyperparameters": hyperparameters(cfg.strategy.name, cfg.strategy.params),
            "versions": versions(device),
            "stream": list(stream.experiences),
            "probes": list(stream.probes),
            "matrices": {"R": state["R"], "R_columns": list(stream.experiences),
                         "P": state["P"], "P_columns": evaluator.columns},
            "metrics": metrics,
            "distances": state["distances"],
            "collapsed": state.get("collapsed", []),
            "grad_ratio": state.get("grad_ratio", []),
            "warnings": state.get("warnings", []),
            "memory": state.get("memory", []),
            "timing": {"per_experience": state["timing"],
                       "pre_eval_s": state.get("pre_eval_s"),
                       "stages": stages.as_dict(), "stages_synchronised": stages.sync,
                       "total_s": time.perf_counter() - t_start},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def bound_entry(plugins: list, experience: int) -> dict:
    """The gradient bound's figures of ``experience`` (FDA, Proxy-FDA): the median ratio of
    the regulariser's gradient to the task's at the features before the bound
    (``feature_ratio``) and the mean fraction of the term kept (``kept``)."""
    for p in plugins:
        for e in getattr(p, "bound_log", []):
            if e["experience"] == experience:
                return {"feature_ratio": e["ratio"], "kept": e["kept"]}
    return {}
