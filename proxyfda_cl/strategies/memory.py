"""A cross-batch memory for FDA and Proxy-FDA (METHOD.md "Cross-batch memory", ours).

In the style of XBM (cross-batch memory for embedding learning): a FIFO queue of the last M
training samples of the experience, with their teacher features (exact, the teacher is frozen),
their student features as they were when enqueued (detached), labels and dataset indices. For
each anchor of a batch the teacher graph is built over the batch and the memory; memory entries
enter the loss as fixed points.

The queue lives for one experience: the teacher and the dataset indices change at the next.
Checkpoints are written between experiences, so the memory is left out of them (it is empty at
every point a run can resume from).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F


class MemoryView(NamedTuple):
    """The memory entries one batch may use: L2-normalised ``teacher`` and ``student``
    features, ``[M', D]`` each (no gradient)."""

    teacher: torch.Tensor
    student: torch.Tensor


class FeatureMemory:
    """A FIFO queue of the last ``size`` samples' features, at most one entry per sample:
    enqueuing a sample again (the next epoch) drops its older entry.

    Args:
        size: capacity M (entries); 0 keeps nothing.
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"memory_size must be >= 0, got {size}")
        self.size = int(size)
        self.reset()

    def reset(self) -> None:
        """Empty the queue (at the start of each experience)."""
        self.teacher = self.student = self.labels = self.indices = self.steps = None
        self._next = 0
        self.step = 0

    def __len__(self) -> int:
        return 0 if self.indices is None else int((self.indices >= 0).sum())

    @torch.no_grad()
    def enqueue(self, teacher: torch.Tensor, student: torch.Tensor, labels: torch.Tensor,
                indices: torch.Tensor) -> None:
        """Append one batch (``[B, D]`` features, ``[B]`` labels and dataset indices), dropping
        the oldest entries once full, and advance the step counter."""
        self.step += 1
        if self.size == 0:
            return
        t = F.normalize(teacher.detach().float(), dim=1)
        s = F.normalize(student.detach().float(), dim=1)
        if self.teacher is None:
            dev, d = t.device, t.shape[1]
            self.teacher = t.new_zeros(self.size, d)
            self.student = t.new_zeros(self.size, d)
            self.labels = torch.zeros(self.size, dtype=torch.long, device=dev)
            self.indices = torch.full((self.size,), -1, dtype=torch.long, device=dev)
            self.steps = torch.zeros(self.size, dtype=torch.long, device=dev)
        order = indices.tolist()  # the sampler's indices live on the host
        last = {i: p for p, i in enumerate(order)}
        if len(last) < len(order):  # a sample drawn twice in the batch: keep its last copy
            keep = torch.tensor(sorted(last.values()))
            t, s = t[keep.to(t.device)], s[keep.to(t.device)]
            labels, indices = labels[keep.to(labels.device)], indices[keep.to(indices.device)]
        n = min(t.shape[0], self.size)
        indices = indices[-n:].to(t.device)
        self.indices[torch.isin(self.indices, indices)] = -1  # one entry per sample
        slots = (self._next + torch.arange(n, device=t.device)) % self.size
        self.teacher[slots], self.student[slots] = t[-n:], s[-n:]
        self.labels[slots] = labels[-n:].to(t.device, torch.long)
        self.indices[slots] = indices
        self.steps[slots] = self.step
        self._next = (self._next + n) % self.size

    def view(self, exclude: torch.Tensor) -> MemoryView:
        """The filled entries except those whose dataset index is in ``exclude`` (the batch's
        own samples, which the batch holds in fresher form)."""
        if self.indices is None:
            raise RuntimeError("the memory is empty")
        keep = (self.indices >= 0) & ~torch.isin(self.indices, exclude.to(self.indices.device))
        return MemoryView(self.teacher[keep], self.student[keep])

    def entries(self) -> tuple:
        """``(student features, dataset indices, enqueue steps)`` of the filled entries."""
        keep = self.indices >= 0
        return self.student[keep], self.indices[keep], self.steps[keep]


class MemoryMixin:
    """The cross-batch memory of a ``TeacherPlugin`` (FDA, Proxy-FDA).

    Call ``init_memory`` in ``__init__``; in ``before_backward`` take ``memory_view`` before
    the loss and ``memory_push`` after it (both read the batch's ``batch_indices``). The queue is emptied at the start of each
    experience; at the end of each epoch the plugin measures the staleness of the entries
    (``memory_log``: per experience, the last epoch's figures and every epoch's mean cosine)
    unless ``measure_staleness`` is off.
    """

    def init_memory(self, memory_size: int, memory_warmup: int) -> None:
        if memory_warmup < 0:
            raise ValueError(f"memory_warmup must be >= 0, got {memory_warmup}")
        self.memory = FeatureMemory(memory_size)
        self.memory_warmup = int(memory_warmup)
        self.memory_log: list = []
        self.measure_staleness = True
        self._epochs: list = []

    def state_dict(self) -> dict:
        """The plugin's state with ``memory_log`` (the queue is emptied at the start of each
        experience)."""
        return {**super().state_dict(), "memory_log": list(self.memory_log)}

    def load_state_dict(self, state: dict, model=None) -> None:
        """Restore ``state_dict``'s result."""
        super().load_state_dict(state, model)
        self.memory_log = list(state["memory_log"])

    def memory_view(self) -> Optional[MemoryView]:
        """The entries this batch uses, or None (no memory, still empty, or warming up)."""
        if self.memory.size == 0:
            return None
        if self.batch_indices is None:
            raise RuntimeError(f"{type(self).__name__}: memory_size needs the dataset indices of "
                               "each batch, which the suite's batch sampler reports; run it "
                               "through a strategy recipe, or set memory_size=0")
        if self.memory.step < max(1, self.memory_warmup):
            return None
        return self.memory.view(self.batch_indices)

    def memory_push(self, strategy, teacher_feats: torch.Tensor, feats: torch.Tensor) -> None:
        """Enqueue the batch after its loss was computed."""
        if self.memory.size:
            self.memory.enqueue(teacher_feats, feats, strategy.mb_y, self.batch_indices)

    def before_training_exp(self, strategy, **kwargs):
        super().before_training_exp(strategy, **kwargs)
        self.memory.reset()
        self._epochs: list = []

    def after_training_epoch(self, strategy, **kwargs):
        if self.memory.size and self.measure_staleness and len(self.memory):
            self._epochs.append(self.staleness(strategy))
        super().after_training_epoch(strategy, **kwargs)

    def after_training_exp(self, strategy, **kwargs):
        if self._epochs:  # the last epoch's figures, and each epoch's mean cosine
            self.memory_log.append({**self._epochs[-1],
                                    "epochs_cos": [e["staleness_cos"] for e in self._epochs]})
        super().after_training_exp(strategy, **kwargs)

    @torch.no_grad()
    def staleness(self, strategy) -> dict:
        """The mean (and lowest) cosine between each entry's stored student feature and the
        one the encoder gives now (eval mode), and the entries' mean age in steps."""
        from torch.utils.data import DataLoader, Subset

        from .teacher import as_features, get_encoder

        student, indices, steps = self.memory.entries()
        encoder = get_encoder(strategy.model, self.encoder_attr)
        modes = {m: m.training for m in encoder.modules()}
        encoder.eval()
        try:  # its own generator: the pass draws nothing from the global RNG
            loader = DataLoader(Subset(strategy.adapted_dataset, indices.tolist()),
                                batch_size=strategy.eval_mb_size, generator=torch.Generator())
            now = torch.cat([as_features(encoder(batch[0].to(strategy.device))).float()
                             for batch in loader])
        finally:
            for m, mode in modes.items():
                m.training = mode
        cos = (F.normalize(now, dim=1) * student.to(now.device)).sum(1)
        return {"experience": int(strategy.experience.current_experience) + 1, "entries": len(cos),
                "staleness_cos": float(cos.mean()), "staleness_cos_min": float(cos.min()),
                "mean_age_steps": float((self.memory.step - steps).float().mean())}


__all__ = ["FeatureMemory", "MemoryMixin", "MemoryView"]
