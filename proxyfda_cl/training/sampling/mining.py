"""Class ids of a training set and the teacher's class means that hard class mining reads.

METHOD.md "Batch construction and hard class mining": classes are ``(task label, target)``
pairs; their similarity is the cosine of the L2-normalised mean teacher feature per class.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from ...core.errors import DataError


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


__all__ = ["dataset_class_ids", "teacher_class_means"]
