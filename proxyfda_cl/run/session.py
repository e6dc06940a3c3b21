"""The body of one run: build everything, train experience by experience, evaluate, resume.

``runner.run`` wraps this with skip-existing and the record's atomic write.
"""
from __future__ import annotations

import functools
import re
import time
from datetime import datetime, timezone
from typing import Callable

import torch
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin

from ..benchmarks.streams import build_stream
from ..config import RunConfig, to_dict
from ..core.errors import recorded_warnings
from ..core.runtime import resolve_device, seed_everything, versions
from ..metrics.continual import compute_metrics
from ..models import EncoderWithHeads, build_encoder, image_transform
from ..models.base import batchnorm_layers
from ..strategies import TeacherPlugin, build_strategy, hyperparameters, strategy_defaults
from ..training import (AutocastPlugin, DivergenceGuardPlugin, FrozenBatchNormPlugin,
                        GradClipPlugin, HeadInitPlugin, LRSchedulePlugin,
                        RecomputeBatchNormPlugin, StepTimerPlugin, make_optimizer)
from ..training.grad_ratio import GradRatioPlugin
from ..training.loggers import RunLoggers
from ..training.sampling import BatchSamplerPlugin
from .checkpoints import checkpoint_dir, resume, restore_strategy, save_checkpoint
from .evaluation import Evaluator

#: A task accuracy at most ``chance + COLLAPSE_MARGIN * (1 - chance)`` after its experience
#: marks the run as collapsed (for 10 classes: at most 19%).
COLLAPSE_MARGIN = 0.1
_EXP_KEY = re.compile(r"^Top1_Acc_Exp/eval_phase/test_stream/Task\d+/Exp(\d+)$")


class Session:
    """Everything one run holds while it trains."""

    def __init__(self, cfg: RunConfig, *, progress: bool = False,
                 say: Callable[[str], None] = lambda m: None) -> None:
        self.cfg, self.progress, self.say = cfg, progress, say

    def run(self) -> dict:
        cfg = self.cfg
        t_start = time.perf_counter()
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device)
        recipe = build_strategy(cfg.strategy.name, cfg.strategy.params)
        encoder = build_encoder(cfg.backbone, progress=self.progress)
        stream = build_stream(cfg.benchmark, image_transform(encoder), encoder.input_size,
                              seed=cfg.seed, probe_train_size=cfg.eval.probe_train_size,
                              probe_test_size=cfg.eval.probe_test_size)
        model = EncoderWithHeads(encoder)
        plugins = recipe.plugins
        evaluator = Evaluator(stream, cfg.eval, device=device, precision=cfg.train.precision,
                              seed=cfg.seed, num_workers=cfg.train.num_workers)
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
            self.say(f"resuming after experience {len(state['R'])} from {ckpt_dir}")
        else:
            t0 = time.perf_counter()
            model.to(device)
            if bn_drift:
                evaluator.keep_initial(model.encoder)
            row, _ = evaluator.evaluate(model.encoder, None)
            state["P"].append(row)
            state["pre_eval_s"] = time.perf_counter() - t0

        kind = cfg.train.sampler if cfg.train.sampler != "auto" else recipe.sampler
        timer = StepTimerPlugin()
        extra = [BatchSamplerPlugin(kind=kind, batch_size=cfg.train.batch_size,
                                    classes_per_batch=cfg.train.classes_per_batch,
                                    samples_per_class=cfg.train.samples_per_class,
                                    seed=cfg.seed, num_workers=cfg.train.num_workers,
                                    pin_memory=device.type == "cuda",
                                    teachers=[p for p in plugins if isinstance(p, TeacherPlugin)]),
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
                    results = strategy.eval(test_stream[:t + 1], num_workers=cfg.train.num_workers)
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
