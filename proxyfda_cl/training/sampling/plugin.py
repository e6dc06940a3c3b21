"""``BatchSamplerPlugin``: our batch samplers inside an Avalanche strategy.

It replaces the strategy's training dataloader at the start of each experience and hands the
dataset indices of every minibatch to the plugins that read the frozen teacher, whose
feature cache is keyed by them; ``current_batch_indices`` returns them too.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Optional, Protocol, Sequence

import torch
from avalanche.core import SupervisedPlugin
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torch.utils.data._utils.collate import default_collate

from ...core.errors import ConfigError
from ..timing import StageTimes
from .mining import dataset_class_ids, teacher_class_means
from .samplers import SAMPLER_KINDS, ClassBatchSampler, RandomBatchSampler


class TeacherReader(Protocol):
    """What the sampler needs of a plugin that runs the frozen teacher (``TeacherPlugin``)."""

    @property
    def teacher(self) -> Optional[nn.Module]:
        """The frozen teacher encoder, once the experience started."""

    def set_batch(self, indices: Optional[torch.Tensor], size: int, key: Any) -> None:
        """The dataset indices of the minibatch about to be trained on."""


class BatchSamplerPlugin(SupervisedPlugin):
    """Replaces the strategy's training dataloader with one of our batch samplers.

    At ``before_training_exp`` (after Avalanche built its own loader and the optimizer) it
    sets ``strategy.dataloader`` to a ``DataLoader`` over ``strategy.adapted_dataset`` that
    yields Avalanche's ``(x, y, task_label)`` batches; ``strategy.train_mb_size`` is not
    used. ``kind``: ``random`` (shuffled batches of ``batch_size``), ``balanced`` or ``hard``
    (``ClassBatchSampler``; ``batch_size`` is ignored, B = m * n). For ``hard`` the class
    means come from the frozen teacher of the first of ``teachers`` that has one (FDA,
    Proxy-FDA: it may be the pre-trained model), else from the model's encoder
    ``getattr(strategy.model, encoder_attr)`` as it is at the start of the experience (the
    previous-task model), over the experience's training data with its eval transforms
    (ours); they are skipped when the experience has at most m classes. Every plugin of
    ``teachers`` gets the dataset indices of each minibatch (``set_batch``), for its
    teacher-feature cache. The random source is reseeded per experience with ``seed +
    experience index``. Put this plugin after ``teachers`` (they take their snapshot first)
    and after any plugin that also replaces ``strategy.dataloader``.

    Args:
        kind: random | balanced | hard.
        batch_size: batch size of ``random``.
        classes_per_batch: m.
        samples_per_class: n.
        tau_c: hard-mining softmax temperature.
        encoder_attr: attribute of the model holding the encoder.
        seed: base seed.
        num_workers: dataloader worker processes.
        pin_memory: dataloader ``pin_memory``.
        mining_batch_size: batch size of the class-mean pass.
        teachers: the strategy's plugins that run the frozen teacher.
        stages: a ``StageTimes`` that times the class-mean pass as ``hard_mining``.
    """

    def __init__(self, *, kind: str = "random", batch_size: int = 64,
                 classes_per_batch: int = 16, samples_per_class: int = 4, tau_c: float = 0.1,
                 encoder_attr: str = "encoder", seed: int = 0, num_workers: int = 0,
                 pin_memory: bool = False, mining_batch_size: int = 256,
                 teachers: Sequence[TeacherReader] = (),
                 stages: Optional[StageTimes] = None) -> None:
        super().__init__()
        if kind not in SAMPLER_KINDS:
            raise ConfigError(f"train.sampler: unknown kind {kind!r}, use one of "
                              f"{', '.join(SAMPLER_KINDS)}")
        for name, value in (("train.batch_size", batch_size),
                            ("train.classes_per_batch", classes_per_batch),
                            ("train.samples_per_class", samples_per_class),
                            ("mining_batch_size", mining_batch_size)):
            if int(value) < 1:
                raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
        if not tau_c > 0:
            raise ConfigError(f"tau_c: must be positive, got {tau_c!r}")
        self.kind, self.batch_size = kind, int(batch_size)
        self.m, self.n, self.tau_c = int(classes_per_batch), int(samples_per_class), tau_c
        self.encoder_attr, self.seed = encoder_attr, int(seed)
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self.mining_batch_size = int(mining_batch_size)
        self.teachers = list(teachers)
        self.stages = stages if stages is not None else StageTimes()
        self.current_indices: Optional[torch.Tensor] = None
        self.class_similarity: Optional[torch.Tensor] = None
        self._queue: deque = deque()

    def _encoder(self, strategy: Any) -> nn.Module:
        """The encoder whose class means drive hard mining (see the class docstring)."""
        for plugin in self.teachers:
            if isinstance(plugin.teacher, nn.Module):
                return plugin.teacher
        encoder = getattr(strategy.model, self.encoder_attr, None)
        if not isinstance(encoder, nn.Module):
            raise ConfigError(f"encoder_attr: model {type(strategy.model).__name__} has no "
                              f"module attribute {self.encoder_attr!r}; name its encoder")
        return encoder

    def make_sampler(self, strategy: Any) -> Sampler:
        """The batch sampler for the current experience (fresh generator, empty queue)."""
        dataset = strategy.adapted_dataset
        exp_index = getattr(strategy.experience, "current_experience", None)
        if exp_index is None:
            exp_index = strategy.clock.train_exp_counter
        generator = torch.Generator().manual_seed(self.seed + int(exp_index))
        self._queue.clear()
        self.current_indices, self.class_similarity = None, None
        if self.kind == "random":
            return RandomBatchSampler(len(dataset), self.batch_size, generator=generator,
                                      record=self._queue)
        class_ids, num_classes = dataset_class_ids(dataset)
        if self.kind == "hard" and num_classes > self.m:
            data = dataset.eval() if hasattr(dataset, "eval") else dataset
            with self.stages("hard_mining"):
                means = teacher_class_means(self._encoder(strategy), data, class_ids,
                                            num_classes, device=strategy.device,
                                            batch_size=self.mining_batch_size,
                                            num_workers=self.num_workers)
            self.class_similarity = means @ means.T
        return ClassBatchSampler(class_ids, self.m, self.n, generator=generator,
                                 similarity=self.class_similarity, tau_c=self.tau_c,
                                 record=self._queue)

    def before_training_exp(self, strategy: Any, *args, **kwargs) -> None:
        dataset = strategy.adapted_dataset
        strategy.dataloader = DataLoader(
            dataset, batch_sampler=self.make_sampler(strategy),
            collate_fn=getattr(dataset, "collate_fn", default_collate),
            num_workers=self.num_workers, pin_memory=self.pin_memory)

    def before_training_iteration(self, strategy: Any, *args, **kwargs) -> None:
        self.current_indices = self._queue.popleft() if self._queue else None
        if self.current_indices is None or len(self.current_indices) != len(strategy.mb_y):
            raise RuntimeError("BatchSamplerPlugin: the training batch did not come from its "
                               "sampler; another plugin replaced strategy.dataloader after it")
        self.report_batch(strategy)

    def report_batch(self, strategy: Any) -> None:
        """Hand ``current_indices`` to every plugin of ``teachers``, with the dataset size
        and the experience they index into."""
        key = (id(strategy), strategy.clock.train_exp_counter)
        for plugin in self.teachers:
            plugin.set_batch(self.current_indices, len(strategy.adapted_dataset), key)

    def after_training_exp(self, strategy: Any, *args, **kwargs) -> None:
        self._queue.clear()
        self.current_indices = None


def current_batch_indices(strategy: Any) -> Optional[torch.Tensor]:
    """Dataset indices (into ``strategy.adapted_dataset``) of the current training minibatch.

    Returns:
        A LongTensor aligned with ``strategy.mb_y``, or None when the strategy has no
        ``BatchSamplerPlugin`` or is not inside a training iteration.
    """
    for plugin in getattr(strategy, "plugins", []):
        if isinstance(plugin, BatchSamplerPlugin):
            return plugin.current_indices if strategy.is_training else None
    return None


__all__ = ["BatchSamplerPlugin", "TeacherReader", "current_batch_indices"]
