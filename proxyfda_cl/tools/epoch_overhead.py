"""Per-epoch training time of each strategy relative to naive fine-tuning, over real epochs.

Where the per-step measurement (``overhead``) sees one fixed minibatch, this trains whole
epochs of one concept-world experience through Avalanche's ``Naive`` with the run's batch
sampler, so the teacher-feature cache fills in epoch 1 and serves the later epochs.
"""
from __future__ import annotations

import copy
import statistics
from typing import Callable

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from ..benchmarks.concept_world import concept_dataset
from ..benchmarks.streams import tensor_benchmark
from ..models.base import EncoderWithHeads, image_transform
from ..training import make_optimizer
from ..training.timing import Stopwatch
from ..training.sampling import BatchSamplerPlugin
from ..strategies import TeacherPlugin, build_strategy


class EpochTimer(SupervisedPlugin):
    """Records the time of every training epoch (``times``, after training) by a
    ``Stopwatch`` on the strategy's device."""

    def __init__(self) -> None:
        super().__init__()
        self._watch = None

    @property
    def times(self) -> list:
        return self._watch.times() if self._watch is not None else []

    def before_training_epoch(self, strategy, **kwargs):
        if self._watch is None:
            self._watch = Stopwatch(strategy.device)
        self._watch.start()

    def after_training_epoch(self, strategy, **kwargs):
        self._watch.stop()


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
            timer = EpochTimer()
            teachers = [p for p in recipe.plugins if isinstance(p, TeacherPlugin)]
            sampler = BatchSamplerPlugin(kind=recipe.sampler, batch_size=batch_size, seed=seed,
                                         teachers=teachers)
            strategy = Naive(model=model,
                             optimizer=make_optimizer(model.parameters(), "sgd", lr=0.01,
                                                      momentum=0.9),
                             criterion=nn.CrossEntropyLoss(), train_mb_size=batch_size,
                             train_epochs=epochs, plugins=recipe.plugins + [sampler, timer],
                             evaluator=EvaluationPlugin(loggers=[]), eval_every=-1, device=device)
            strategy.train(experience)
            first[label].append(timer.times[0])
            later[label].extend(timer.times[1:])
    base = statistics.median(later["naive"])
    return {k: {"median_epoch_s": statistics.median(later[k]),
                "first_epoch_s": statistics.median(first[k]),
                "ratio": statistics.median(later[k]) / base} for k in variants}
