"""Training-step overhead of each strategy relative to naive fine-tuning.

Every strategy gets its own Avalanche ``Naive`` strategy with its recipe's plugins, a copy of
the same encoder and the same fixed minibatch. After the experience set-up (teacher snapshot,
hooks, optimizer), one training step is exactly the body of Avalanche's training loop: plugin
callbacks, forward, loss with regulariser, backward, optimizer step. Strategies are stepped
round-robin, so drift of the machine's speed affects all of them alike. The measured steps are
the first epoch of an experience (for LP-FT, its head-only phase).
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Callable, Optional

import torch
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from ..models.base import EncoderWithHeads
from .registry import build_strategy


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


def measure_overhead(encoder_factory: Callable[[], nn.Module], strategies: list, *,
                     batch_size: int = 64, steps: int = 20, warmup: int = 3, device: str = "cpu",
                     num_classes: int = 10, image_size: Optional[int] = None,
                     params: Optional[dict] = None, lr: float = 1e-3, seed: int = 0) -> dict:
    """Median training-step time of each strategy and its ratio to naive's.

    Args:
        encoder_factory: builds the encoder (called once; every strategy gets a copy).
        strategies: registry names; ``naive`` is always measured as the reference.
        batch_size: minibatch size (class-balanced over ``num_classes`` labels).
        steps: timed steps per strategy.
        warmup: untimed steps per strategy first.
        device: torch device.
        num_classes: classes of the toy task.
        image_size: square input side (default: the encoder's ``input_size``, else 32).
        params: optional ``{strategy name: {hyper-parameter: value}}``.
        lr: SGD learning rate.
        seed: seed of the encoder and the data.

    Returns:
        ``{name: {"median_step_s": float, "ratio": float}}`` with naive first.
    """
    names = ["naive"] + [s for s in strategies if s != "naive"]
    torch.manual_seed(seed)
    encoder = encoder_factory()
    size = image_size or getattr(encoder, "input_size", 32)
    x = torch.randn(batch_size, 3, size, size)
    y = torch.arange(batch_size) % num_classes
    experience = tensor_benchmark([(x, y)]).train_stream[0]
    batch = [x, y, torch.zeros_like(y)]

    runs = {}
    for name in names:
        recipe = build_strategy(name, (params or {}).get(name, {}))
        model = EncoderWithHeads(copy.deepcopy(encoder))
        runs[name] = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
                           criterion=nn.CrossEntropyLoss(), train_mb_size=batch_size, train_epochs=1,
                           plugins=recipe.plugins, evaluator=EvaluationPlugin(loggers=[]),
                           eval_every=-1, device=device)
        _begin(runs[name], experience)

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times: dict = {n: [] for n in names}
    for i in range(warmup + steps):
        for name in names:
            fresh = [t.clone() for t in batch]  # a new minibatch tensor, as a dataloader yields
            sync()
            t0 = time.perf_counter()
            _step(runs[name], fresh)
            sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    for strategy in runs.values():
        _end(strategy)

    base = statistics.median(times["naive"])
    return {n: {"median_step_s": statistics.median(times[n]),
                "ratio": statistics.median(times[n]) / base} for n in names}


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
    from ..benchmarks.sampler import BatchSamplerPlugin
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
            sampler = BatchSamplerPlugin(kind=recipe.sampler, batch_size=batch_size, seed=seed)
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
