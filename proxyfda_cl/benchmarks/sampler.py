"""Training batch samplers: random, class-balanced and hard-class-mined batches.

METHOD.md "Batch construction and hard class mining". ``BatchSamplerPlugin`` replaces the
strategy's training dataloader at the start of each experience; ``current_batch_indices``
returns the dataset indices of the minibatch being trained on.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

from ..errors import ConfigError, DataError

SAMPLER_KINDS = ("random", "balanced", "hard")


class _Cycle:
    """Endless draws of distinct items from shuffled orders of ``0..size-1``.

    Every item comes out once per pass before any comes out again, so counts over any
    stretch of draws differ by at most one between items.
    """

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size, self.generator = size, generator
        self.order: list[int] = []
        self.pos = 0

    def take(self, k: int) -> list[int]:
        """The next ``k <= size`` distinct items."""
        end = self.pos + k
        if end <= len(self.order):
            out = self.order[self.pos:end]
            self.pos = end
            return out
        out = self.order[self.pos:]
        seen, need = set(out), k - len(out)
        picked, rest = [], []
        for v in torch.randperm(self.size, generator=self.generator).tolist():
            (picked if len(picked) < need and v not in seen else rest).append(v)
        self.order, self.pos = rest, 0
        return out + picked


class RandomBatchSampler(Sampler[list[int]]):
    """Shuffled batches of ``batch_size`` covering every index once per epoch (last may be short).

    Args:
        num_samples: dataset length.
        batch_size: samples per batch.
        generator: the random source.
        record: if given, each yielded batch is appended to it as a LongTensor.
    """

    def __init__(self, num_samples: int, batch_size: int, *, generator: torch.Generator,
                 record: Optional[deque] = None) -> None:
        self.num_samples, self.batch_size = num_samples, batch_size
        self.generator, self.record = generator, record

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if self.record is not None:
            self.record.clear()
        perm = torch.randperm(self.num_samples, generator=self.generator)
        for batch in perm.split(self.batch_size):
            if self.record is not None:
                self.record.append(batch.clone())
            yield batch.tolist()


class ClassBatchSampler(Sampler[list[int]]):
    """Batches of ``m`` classes x ``n`` samples (METHOD.md "Batch construction ...").

    Without ``similarity`` (class-balanced): the classes of a batch are distinct, taken in
    a shuffled order that cycles through all classes, so they are covered evenly over an
    epoch. With ``similarity`` (hard class mining, ours): a seed class is drawn uniformly
    (cycling through a shuffled class order) and the other ``m - 1`` classes are drawn
    without replacement with probability proportional to ``softmax(sim[seed] / tau_c)``
    (Gumbel-top-k sampling, exact and stable for any ``tau_c``).

    Samples of a class are distinct within a batch and cycle through the class; a class
    with fewer samples than it must give contributes all of them plus uniform draws with
    replacement. With ``C <= m`` classes every batch holds all of them (ours): the batch
    keeps ``m * n`` samples, ``(m * n) // C`` per class and one more for ``(m * n) % C``
    classes taken in cycling order. An epoch has ``max(1, N // (m * n))`` batches.

    Args:
        class_ids: ``[N]`` class index in ``0..C-1`` of every dataset item.
        classes_per_batch: m.
        samples_per_class: n.
        generator: the random source.
        similarity: ``[C, C]`` cosine similarity of teacher class means, for hard mining.
        tau_c: softmax temperature of hard mining.
        record: if given, each yielded batch is appended to it as a LongTensor.
    """

    def __init__(self, class_ids: torch.Tensor, classes_per_batch: int, samples_per_class: int,
                 *, generator: torch.Generator, similarity: Optional[torch.Tensor] = None,
                 tau_c: float = 0.1, record: Optional[deque] = None) -> None:
        class_ids = torch.as_tensor(class_ids, dtype=torch.long)
        self.num_classes = int(class_ids.max()) + 1 if class_ids.numel() else 0
        order = torch.argsort(class_ids, stable=True)
        counts = torch.bincount(class_ids, minlength=self.num_classes)
        self.members = list(order.split(counts.tolist()))
        if any(len(mb) == 0 for mb in self.members):
            raise ValueError("class_ids must use every class index in 0..C-1")
        self.m, self.n = classes_per_batch, samples_per_class
        self.batch_size = self.m * self.n
        self.num_batches = max(1, len(class_ids) // self.batch_size)
        self.generator, self.record, self.tau_c = generator, record, float(tau_c)
        self.similarity = None if similarity is None else similarity.detach().float().cpu()
        self._class_cycle = _Cycle(self.num_classes, generator)
        self._sample_cycles = [_Cycle(len(mb), generator) for mb in self.members]

    def __len__(self) -> int:
        return self.num_batches

    def _samples(self, c: int, k: int) -> torch.Tensor:
        size = len(self.members[c])
        if k <= size:
            local = torch.tensor(self._sample_cycles[c].take(k), dtype=torch.long)
        else:
            extra = torch.randint(size, (k - size,), generator=self.generator)
            local = torch.cat([torch.randperm(size, generator=self.generator), extra])
        return self.members[c][local]

    def _hard_classes(self) -> list[int]:
        seed = self._class_cycle.take(1)[0]
        logits = self.similarity[seed] / self.tau_c
        logits[seed] = float("-inf")
        u = torch.rand(self.num_classes, generator=self.generator).clamp_min(1e-12)
        others = torch.topk(logits - torch.log(-torch.log(u)), self.m - 1).indices
        return [seed] + others.tolist()

    def _batch(self) -> torch.Tensor:
        C = self.num_classes
        if C <= self.m:
            base, extra = divmod(self.batch_size, C)
            plus = set(self._class_cycle.take(extra)) if extra else set()
            parts = [self._samples(c, base + (c in plus)) for c in range(C)]
        else:
            classes = (self._hard_classes() if self.similarity is not None
                       else self._class_cycle.take(self.m))
            parts = [self._samples(c, self.n) for c in classes]
        return torch.cat(parts)

    def __iter__(self) -> Iterator[list[int]]:
        if self.record is not None:
            self.record.clear()
        for _ in range(self.num_batches):
            batch = self._batch()
            if self.record is not None:
                self.record.append(batch)
            yield batch.tolist()


def _as_long(values: Any) -> torch.Tensor:
    return torch.as_tensor([int(v) for v in values], dtype=torch.long)


def dataset_class_ids(dataset: Dataset) -> tuple[torch.Tensor, int]:
    """Class index of every item: a class is a ``(task label, target)`` pair.

    Returns:
        ``([N] long tensor of indices in 0..C-1, C)``.
    """
    if not hasattr(dataset, "targets"):
        raise DataError("training dataset has no `targets`: build it as an Avalanche "
                        "classification dataset (as_classification_dataset)")
    y = _as_long(dataset.targets)
    tl = getattr(dataset, "targets_task_labels", None)
    t = _as_long(tl) if tl is not None else torch.zeros_like(y)
    _, ids = torch.unique(torch.stack([t, y], 1), dim=0, return_inverse=True)
    return ids, int(ids.max()) + 1 if ids.numel() else 0


@torch.no_grad()
def teacher_class_means(encoder: nn.Module, dataset: Dataset, class_ids: torch.Tensor,
                        num_classes: int, *, device: Any = "cpu", batch_size: int = 256,
                        num_workers: int = 0) -> torch.Tensor:
    """L2-normalised means of L2-normalised encoder features per class.

    Runs ``encoder`` in eval mode over ``dataset`` (items ``(x, ...)``, in order) and
    restores every submodule's train/eval mode afterwards.

    Returns:
        ``[C, D]`` unit-norm class means; their dot products are cosine similarities.
    """
    modes = [(mod, mod.training) for mod in encoder.modules()]
    encoder.eval()
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                            num_workers=num_workers,
                            collate_fn=getattr(dataset, "collate_fn", default_collate))
        sums, offset = None, 0
        for batch in loader:
            feats = F.normalize(encoder(batch[0].to(device)).float().flatten(1), dim=1).cpu()
            if sums is None:
                sums = torch.zeros(num_classes, feats.shape[1])
            sums.index_add_(0, class_ids[offset:offset + len(feats)], feats)
            offset += len(feats)
    finally:
        for mod, training in modes:
            mod.train(training)
    counts = torch.bincount(class_ids, minlength=num_classes).clamp_min(1)
    return F.normalize(sums / counts[:, None], dim=1)


class BatchSamplerPlugin(SupervisedPlugin):
    """Replaces the strategy's training dataloader with one of our batch samplers.

    At ``before_training_exp`` (after Avalanche built its own loader and the optimizer) it
    sets ``strategy.dataloader`` to a ``DataLoader`` over ``strategy.adapted_dataset`` that
    yields Avalanche's ``(x, y, task_label)`` batches; ``strategy.train_mb_size`` is not
    used. ``kind``: ``random`` (shuffled batches of ``batch_size``), ``balanced`` or ``hard``
    (``ClassBatchSampler``; ``batch_size`` is ignored, B = m * n). For ``hard`` the teacher
    class means come from the current encoder ``getattr(strategy.model, encoder_attr)``,
    i.e. the model as it is at the start of the experience, over the experience's training
    data with its eval transforms (ours); they are skipped when the experience has at most
    m classes. The random source is reseeded per experience with ``seed + experience
    index``. Put this plugin after any plugin that also replaces ``strategy.dataloader``.

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
    """

    def __init__(self, *, kind: str = "random", batch_size: int = 64,
                 classes_per_batch: int = 16, samples_per_class: int = 4, tau_c: float = 0.1,
                 encoder_attr: str = "encoder", seed: int = 0, num_workers: int = 0,
                 pin_memory: bool = False, mining_batch_size: int = 256) -> None:
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
        self.current_indices: Optional[torch.Tensor] = None
        self.class_similarity: Optional[torch.Tensor] = None
        self._queue: deque = deque()

    def _encoder(self, strategy: Any) -> nn.Module:
        """The teacher whose class means drive hard mining: the frozen teacher of a plugin
        listed before this one (FDA, Proxy-FDA: it may be the pre-trained model), else the
        model's encoder as it is at the start of the experience (the previous-task model)."""
        for plugin in getattr(strategy, "plugins", ()):
            if plugin is self:
                break
            teacher = getattr(plugin, "teacher", None)
            if isinstance(teacher, nn.Module):
                return teacher
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
            means = teacher_class_means(self._encoder(strategy), data, class_ids, num_classes,
                                        device=strategy.device,
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


__all__ = ["BatchSamplerPlugin", "ClassBatchSampler", "RandomBatchSampler", "SAMPLER_KINDS",
           "current_batch_indices", "dataset_class_ids", "teacher_class_means"]
