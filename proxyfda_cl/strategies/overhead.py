"""Training-step overhead of each strategy relative to naive fine-tuning.

Every strategy gets its own Avalanche ``Naive`` strategy with its recipe's plugins, a copy of
the same encoder and the same fixed minibatch. The toy stream has two experiences; the
measured steps are the first steps of the second one, after the first has been closed as a
real run closes it (so EWC's penalty and LwF's distillation are active, and the teacher is
the frozen model of the previous experience; ``experience=1`` measures the first instead).
For LP-FT the measured steps are its head-only phase. One training step is exactly the body
of Avalanche's training loop: plugin callbacks, forward, loss with regulariser, backward,
optimizer step. Loading and copying the batch to the device are not part of it (the batch
already sits on the device).

Two more figures come with the strategies:

- ``teacher_forward``: one forward pass of the frozen teacher on the batch (``no_grad``,
  under the same autocast as training); the *floor* of a strategy with a live teacher is
  naive plus this (what FDA costs at least without the teacher-feature cache);
- ``<name>+cache`` variants (``teacher_cache=True``): FDA and Proxy-FDA with the teacher-feature
  cache warm, i.e. the steps of epochs 2..E of a real run, where no teacher forward runs.

On the CPU strategies are stepped round-robin, so drift of the machine's speed affects all of
them alike. On CUDA they run one after another (so that each one's peak memory is its own),
steps are timed with CUDA events without synchronising inside the loop. Images/s is the batch
size over the median step.
"""
from __future__ import annotations

import copy
import gc
import statistics
import time
from typing import Callable, Optional

import torch
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from ..sampling import BatchSamplerPlugin
from ..models.base import EncoderWithHeads
from .registry import build_strategy, strategy_defaults
from .teacher import TeacherPlugin, frozen_copy

CACHE_SUFFIX = "+cache"


def tensor_benchmark(data: list):
    """A task-incremental Avalanche benchmark from tensors: one experience (and task label)
    per ``(x, y)`` pair in ``data``; the same tensors serve as train and test sets."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as mk

    sets = [mk(x, y, task_labels=torch.full_like(y, t), targets=y) for t, (x, y) in enumerate(data)]
    return with_classes_timeline(with_task_labels(benchmark_from_datasets(train=sets, test=sets)))


def _begin(strategy: Naive, experience) -> None:
    """What ``strategy.train(experience)`` does before its first minibatch."""
    strategy.is_training = True
    strategy._stop_training = False
    strategy.model.train()
    strategy.model.to(strategy.device)
    strategy._eval_streams = {}
    strategy._before_training()
    strategy.experience = experience
    strategy._before_training_exp()
    strategy._before_training_epoch()


def _step(strategy: Naive, batch: list) -> None:
    """One iteration of Avalanche's ``SGDUpdate.training_epoch`` on ``batch``."""
    strategy.mbatch = list(batch)
    strategy._unpack_minibatch()
    strategy._before_training_iteration()
    strategy.optimizer.zero_grad()
    strategy.loss = strategy._make_empty_loss()
    strategy._before_forward()
    strategy.mb_output = strategy.forward()
    strategy._after_forward()
    strategy.loss += strategy.criterion()
    strategy._before_backward()
    strategy.backward()
    strategy._after_backward()
    strategy._before_update()
    strategy.optimizer_step()
    strategy._after_update()
    strategy._after_training_iteration()


def _end(strategy: Naive) -> None:
    strategy._after_training_epoch()
    strategy._after_training_exp()
    strategy._after_training()
    strategy._train_cleanup()


class FixedBatchIndices(BatchSamplerPlugin):
    """Reports the fixed minibatch as dataset indices ``0..B-1`` of the experience, as the
    runner's batch sampler reports a real batch's indices, so that the teacher-feature cache
    fills at the first step and serves every later one (the state of epochs 2..E)."""

    def __init__(self, teachers: list) -> None:
        super().__init__(kind="random", teachers=teachers)

    def before_training_exp(self, strategy, *args, **kwargs) -> None:
        self.current_indices = None  # keep the strategy's own dataloader

    def before_training_iteration(self, strategy, *args, **kwargs) -> None:
        self.current_indices = torch.arange(len(strategy.mb_y))
        self.report_batch(strategy)


def _optimizer(name: str, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    raise ValueError(f"optimizer must be sgd or adamw, got {name!r}")


def _build(name: str, encoder: nn.Module, experiences: list, *, params: dict, batch_size: int,
           device: torch.device, precision: str, optimizer: str, lr: float) -> Naive:
    """A strategy positioned before the first step of the last of ``experiences``."""
    from ..training import AutocastPlugin

    base, cached = (name[:-len(CACHE_SUFFIX)], True) if name.endswith(CACHE_SUFFIX) else (name, False)
    recipe = build_strategy(base, params.get(name, params.get(base, {})))
    plugins = list(recipe.plugins)
    if cached:
        plugins.append(FixedBatchIndices([p for p in plugins if isinstance(p, TeacherPlugin)]))
    if precision == "bf16":
        plugins.append(AutocastPlugin(device_type=device.type))
    model = EncoderWithHeads(copy.deepcopy(encoder))
    strategy = Naive(model=model, optimizer=_optimizer(optimizer, model, lr),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=batch_size, train_epochs=1,
                     plugins=plugins, evaluator=EvaluationPlugin(loggers=[]), eval_every=-1,
                     device=device)
    for exp in experiences[:-1]:  # closed without steps, as after an experience of training
        _begin(strategy, exp)
        _end(strategy)
    _begin(strategy, experiences[-1])
    return strategy


def _teacher_step(encoder: nn.Module, device: torch.device, precision: str) -> Callable:
    """One frozen-teacher forward on the batch, as ``Teacher`` runs it (``no_grad``, autocast)."""
    teacher = frozen_copy(encoder).to(device)

    def step(batch: list) -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                             enabled=precision == "bf16"):
            teacher(batch[0])
    return step


def _names(strategies: list, teacher_cache: bool) -> list:
    names = ["naive"] + [s for s in strategies if s != "naive"]
    if teacher_cache:
        names += [n + CACHE_SUFFIX for n in names
                  if strategy_defaults(n).get("teacher_cache_mb", 0) > 0]
    return names


def measure_step_overhead(encoder_factory: Callable[[], nn.Module], strategies: list, *,
                          batch_size: int = 64, steps: int = 20, warmup: int = 3,
                          device: str = "cpu", num_classes: int = 10,
                          image_size: Optional[int] = None, params: Optional[dict] = None,
                          lr: float = 1e-3, seed: int = 0, precision: str = "fp32",
                          optimizer: str = "sgd", teacher_cache: bool = False,
                          experience: int = 2, order: str = "auto") -> dict:
    """Per-step time, throughput and (on CUDA) peak memory of each strategy, against naive.

    Args:
        encoder_factory: builds the encoder (called once; every strategy gets a copy).
        strategies: registry names; ``naive`` is always measured as the reference.
        batch_size: minibatch size (class-balanced over ``num_classes`` labels).
        steps: timed steps per strategy.
        warmup: untimed steps per strategy first.
        device: torch device (``auto``: CUDA when available).
        num_classes: classes of the toy task.
        image_size: square input side (default: the encoder's ``input_size``, else 32).
        params: optional ``{strategy name: {hyper-parameter: value}}``.
        lr: learning rate.
        seed: seed of the encoder and the data.
        precision: ``fp32`` or ``bf16`` (autocast, as ``train.precision``).
        optimizer: ``sgd`` (momentum 0.9) or ``adamw`` (the GPU suites' optimizer).
        teacher_cache: also measure ``<name>+cache`` for strategies with a teacher cache.
        experience: 1 or 2, the experience whose first steps are timed.
        order: ``round-robin``, ``sequential`` or ``auto`` (sequential on CUDA).

    Returns:
        A dict: ``strategies`` ``{name: {"median_step_s", "ratio", "images_per_s",
        "peak_mem_mb", "min_step_s", "max_step_s"}}`` with naive first (``peak_mem_mb`` is
        None off CUDA);
        ``teacher_forward_s``; ``floor_s`` (naive + teacher forward) and ``floor_ratio``;
        ``vs_floor`` ``{name: step / floor}`` for the strategies with a live teacher;
        and the settings used.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    if experience not in (1, 2):
        raise ValueError(f"experience must be 1 or 2, got {experience!r}")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                       else "cpu" if device == "auto" else device)
    cuda = dev.type == "cuda"
    if order == "auto":
        order = "sequential" if cuda else "round-robin"
    if order not in ("round-robin", "sequential"):
        raise ValueError(f"order must be round-robin, sequential or auto, got {order!r}")
    names = _names(strategies, teacher_cache)
    params = params or {}
    torch.manual_seed(seed)
    encoder = encoder_factory()
    size = image_size or getattr(encoder, "input_size", 32)
    x = torch.randn(batch_size, 3, size, size)
    y = torch.arange(batch_size) % num_classes
    experiences = list(tensor_benchmark([(x, y)] * experience).train_stream)
    batch = [x.to(dev), y.to(dev), torch.full_like(y, experience - 1).to(dev)]

    def build(name: str):
        torch.manual_seed(seed)
        if name == "teacher_forward":
            return _teacher_step(encoder, dev, precision)
        strategy = _build(name, encoder, experiences, params=params, batch_size=batch_size,
                          device=dev, precision=precision, optimizer=optimizer, lr=lr)
        return lambda b: _step(strategy, b), strategy

    def fresh() -> list:
        return [t.clone() for t in batch]  # a new minibatch tensor, as a dataloader yields

    sync = (lambda: torch.cuda.synchronize(dev)) if cuda else (lambda: None)
    items = names + ["teacher_forward"]
    times: dict = {n: [] for n in items}
    peak: dict = {n: None for n in items}

    def time_steps(name: str, run: Callable) -> None:
        """``steps`` timed steps back to back (events on CUDA, no sync inside)."""
        if cuda:
            pairs, inputs = [], [fresh() for _ in range(steps)]
            sync()
            for b in inputs:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run(b)
                end.record()
                pairs.append((start, end))
            sync()
            times[name].extend(s.elapsed_time(e) / 1000.0 for s, e in pairs)
            return
        for _ in range(steps):
            b = fresh()
            t0 = time.perf_counter()
            run(b)
            times[name].append(time.perf_counter() - t0)

    if order == "sequential":
        for name in items:
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            built = build(name)
            run = built if name == "teacher_forward" else built[0]
            for _ in range(warmup):
                run(fresh())
            sync()
            time_steps(name, run)
            if cuda:
                peak[name] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
            if name != "teacher_forward":
                _end(built[1])
            del built, run
    else:
        runs, owners = {}, []
        for name in items:
            built = build(name)
            runs[name] = built if name == "teacher_forward" else built[0]
            if name != "teacher_forward":
                owners.append(built[1])
        for i in range(warmup + steps):
            for name in items:
                b = fresh()
                sync()
                t0 = time.perf_counter()
                runs[name](b)
                sync()
                if i >= warmup:
                    times[name].append(time.perf_counter() - t0)
        for strategy in owners:
            _end(strategy)
    del encoder
    gc.collect()

    med = {n: statistics.median(times[n]) for n in items}
    base = med["naive"]
    out = {n: {"median_step_s": med[n], "ratio": med[n] / base,
               "images_per_s": batch_size / med[n], "peak_mem_mb": peak[n],
               "min_step_s": min(times[n]), "max_step_s": max(times[n])} for n in names}
    floor = base + med["teacher_forward"]
    live = [n for n in names if not n.endswith(CACHE_SUFFIX) and _has_live_teacher(n)]
    return {"strategies": out, "teacher_forward_s": med["teacher_forward"],
            "teacher_forward_peak_mem_mb": peak["teacher_forward"],
            "floor_s": floor, "floor_ratio": floor / base,
            "vs_floor": {n: med[n] / floor for n in live},
            "settings": {"batch_size": batch_size, "image_size": size, "steps": steps,
                         "warmup": warmup, "device": str(dev), "precision": precision,
                         "optimizer": optimizer, "experience": experience, "order": order,
                         "threads": torch.get_num_threads()}}


def _has_live_teacher(name: str) -> bool:
    """Whether strategy ``name`` runs the teacher encoder on every batch (FDA, Proxy-FDA,
    LDIFS); L2SP reads only its weights."""
    return any(isinstance(p, TeacherPlugin) and getattr(p, "_tap", False)
               for p in build_strategy(name, {}).plugins)


def measure_overhead(encoder_factory: Callable[[], nn.Module], strategies: list, **kwargs) -> dict:
    """Median training-step time of each strategy and its ratio to naive's.

    The same measurement as :func:`measure_step_overhead` (same keyword arguments), reduced
    to ``{name: {"median_step_s", "ratio", "images_per_s", "peak_mem_mb"}}`` with naive first.
    """
    return measure_step_overhead(encoder_factory, strategies, **kwargs)["strategies"]


class _EpochTimer:
    """Avalanche plugin recording the wall time of every training epoch."""

    def __init__(self) -> None:
        from avalanche.core import SupervisedPlugin

        class _P(SupervisedPlugin):
            def __init__(p):
                super().__init__()
                p.times, p.t0 = [], 0.0

            def before_training_epoch(p, strategy, **kw):
                p.t0 = time.perf_counter()

            def after_training_epoch(p, strategy, **kw):
                if torch.device(strategy.device).type == "cuda":
                    torch.cuda.synchronize()
                p.times.append(time.perf_counter() - p.t0)

        self.plugin = _P()


def measure_epoch_overhead(encoder_factory: Callable[[], nn.Module], variants: dict, *,
                           epochs: int = 5, n_train: int = 1280, batch_size: int = 64,
                           repeats: int = 3, device: str = "cpu", seed: int = 0) -> dict:
    """Median per-epoch training time of each variant relative to naive, over real epochs.

    Each variant trains ``epochs`` epochs of one concept-world experience through Avalanche's
    ``Naive`` with its recipe and the runner's batch sampler (so the teacher-feature cache,
    where a recipe enables it, fills in epoch 1 and serves the later epochs). Variants run in
    turn, ``repeats`` times, so drift of the machine's speed affects all alike.

    Args:
        encoder_factory: builds the encoder (each run trains a fresh copy).
        variants: ``{label: (strategy name, params)}``; ``naive`` is added as the reference.
        epochs: epochs per run; the median is over epochs 2..E of every repeat (epoch 1
            fills caches and is reported separately).
        n_train: training images of the experience.
        batch_size: minibatch size.
        repeats: runs per variant.
        device: torch device.
        seed: seed of the data, the encoder copies and the samplers.

    Returns:
        ``{label: {"median_epoch_s", "first_epoch_s", "ratio"}}`` with naive first.
    """
    from ..benchmarks.concept_world import concept_dataset
    from ..sampling import BatchSamplerPlugin
    from ..models.base import image_transform

    variants = {"naive": ("naive", {}), **{k: v for k, v in variants.items() if k != "naive"}}
    encoder = encoder_factory()
    task = concept_dataset("shape", seed=seed, n_train=n_train, n_test=8,
                           image_size=encoder.input_size)
    x = image_transform(encoder)(task.train.images)
    experience = tensor_benchmark([(x, task.train_targets)]).train_stream[0]
    later: dict = {k: [] for k in variants}
    first: dict = {k: [] for k in variants}
    for r in range(repeats):
        for label, (name, params) in variants.items():
            torch.manual_seed(seed + r)
            recipe = build_strategy(name, params)
            model = EncoderWithHeads(copy.deepcopy(encoder))
            timer = _EpochTimer()
            teachers = [p for p in recipe.plugins if isinstance(p, TeacherPlugin)]
            sampler = BatchSamplerPlugin(kind=recipe.sampler, batch_size=batch_size, seed=seed,
                                         teachers=teachers)
            strategy = Naive(model=model,
                             optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                             criterion=nn.CrossEntropyLoss(), train_mb_size=batch_size,
                             train_epochs=epochs, plugins=recipe.plugins + [sampler, timer.plugin],
                             evaluator=EvaluationPlugin(loggers=[]), eval_every=-1, device=device)
            strategy.train(experience)
            first[label].append(timer.plugin.times[0])
            later[label].extend(timer.plugin.times[1:])
    base = statistics.median(later["naive"])
    return {k: {"median_epoch_s": statistics.median(later[k]),
                "first_epoch_s": statistics.median(first[k]),
                "ratio": statistics.median(later[k]) / base} for k in variants}
