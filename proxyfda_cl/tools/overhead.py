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
  cache warm, i.e. the steps of epochs 2..E of a real run, where no teacher forward runs;
- ``<name>+mem<M>`` variants (``memory_sizes``): FDA and Proxy-FDA with a full cross-batch
  memory of M entries (the warm-up is lengthened until it is full), teacher live.

On the CPU strategies are stepped round-robin, so drift of the machine's speed affects all of
them alike. On CUDA they run one after another (so that each one's peak memory is its own),
steps are timed with CUDA events without synchronising inside the loop. Images/s is the batch
size over the median step. The per-epoch measurement, over real epochs, is
``epoch_overhead``.
"""
from __future__ import annotations

import gc
import statistics
from typing import Callable, Optional

import torch
from torch import nn

from ..benchmarks.streams import tensor_benchmark
from ..strategies import TeacherPlugin, build_strategy, strategy_defaults
from ..strategies.teacher import frozen_copy
from ..training.timing import Stopwatch
from .stepping import (CACHE_SUFFIX, MEMORY_SUFFIX, end_experience, prepare_strategy,
                       split_variant, train_step)


def _teacher_step(encoder: nn.Module, device: torch.device, precision: str) -> Callable:
    """One frozen-teacher forward on the batch, as ``Teacher`` runs it (``no_grad``, autocast)."""
    teacher = frozen_copy(encoder).to(device)

    def step(batch: list) -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                             enabled=precision == "bf16"):
            teacher(batch[0])
    return step


def _names(strategies: list, teacher_cache: bool, memory_sizes: tuple = ()) -> list:
    names = ["naive"] + [s for s in strategies if s != "naive"]
    base = list(names)
    if teacher_cache:
        names += [n + CACHE_SUFFIX for n in base
                  if strategy_defaults(n).get("teacher_cache_mb", 0) > 0]
    names += [f"{n}{MEMORY_SUFFIX}{m}" for n in base for m in memory_sizes
              if m > 0 and "memory_size" in strategy_defaults(n)]
    return names


def measure_step_overhead(encoder_factory: Callable[[], nn.Module], strategies: list, *,
                          batch_size: int = 64, steps: int = 20, warmup: int = 3,
                          device: str = "cpu", num_classes: int = 10,
                          image_size: Optional[int] = None, params: Optional[dict] = None,
                          lr: float = 1e-3, seed: int = 0, precision: str = "fp32",
                          optimizer: str = "sgd", teacher_cache: bool = False,
                          memory_sizes: tuple = (), experience: int = 2,
                          order: str = "auto") -> dict:
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
        memory_sizes: also measure ``<name>+mem<M>`` for strategies with a cross-batch
            memory, for each M; the warm-up then lasts at least ``ceil(M / batch_size)``
            steps, so the memory is full when timing starts.
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
    names = _names(strategies, teacher_cache, tuple(memory_sizes))
    warmup = max([warmup] + [-(-m // batch_size) for m in memory_sizes])
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
        strategy = prepare_strategy(name, encoder, experiences, params=params,
                                    batch_size=batch_size, device=dev, precision=precision,
                                    optimizer=optimizer, lr=lr)
        return lambda b: train_step(strategy, b), strategy

    def fresh() -> list:
        return [t.clone() for t in batch]  # a new minibatch tensor, as a dataloader yields

    sync = (lambda: torch.cuda.synchronize(dev)) if cuda else (lambda: None)
    items = names + ["teacher_forward"]
    times: dict = {n: [] for n in items}
    peak: dict = {n: None for n in items}

    def time_steps(name: str, run: Callable) -> None:
        """``steps`` timed steps back to back (events on CUDA, no sync inside)."""
        inputs = [fresh() for _ in range(steps)] if cuda else None
        watch = Stopwatch(dev)
        sync()
        for i in range(steps):
            b = inputs[i] if cuda else fresh()
            watch.start()
            run(b)
            watch.stop()
        times[name].extend(watch.times())

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
                end_experience(built[1])
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
                watch = Stopwatch(dev, sync=True)
                watch.start()
                runs[name](b)
                watch.stop()
                if i >= warmup:
                    times[name].extend(watch.times())
        for strategy in owners:
            end_experience(strategy)
    del encoder
    gc.collect()

    med = {n: statistics.median(times[n]) for n in items}
    base = med["naive"]
    out = {n: {"median_step_s": med[n], "ratio": med[n] / base,
               "images_per_s": batch_size / med[n], "peak_mem_mb": peak[n],
               "min_step_s": min(times[n]), "max_step_s": max(times[n])} for n in names}
    floor = base + med["teacher_forward"]
    live = [n for n in names if not split_variant(n)[1] and _has_live_teacher(split_variant(n)[0])]
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
