"""Training batch samplers: random, class-balanced and hard-class-mined batches of indices.

METHOD.md "Batch construction and hard class mining". Pure index samplers over a dataset's
class ids; ``plugin.BatchSamplerPlugin`` puts them into an Avalanche strategy.
"""
from __future__ import annotations

from collections import deque
from typing import Iterator, Optional

import torch
from torch.utils.data import Sampler

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


__all__ = ["ClassBatchSampler", "RandomBatchSampler", "SAMPLER_KINDS"]
