"""Seeded, stratified index splits (train/validation, and train/test for sets with no split)."""
from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch

#: Seed of the 80/20 train/test split of data sets that ship without one (EuroSAT, image
#: folders with no ``train``/``test`` sub-folders). Fixed, so every run sees the same test set.
TEST_SPLIT_SEED = 0


def train_val_split(targets: Union[torch.Tensor, np.ndarray, Sequence[int]], val_fraction: float = 0.1,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split item indices per class into a training and a held-out part.

    Each class ``c`` with ``n_c`` items gives ``floor(val_fraction * n_c + 0.5)`` items to the
    held-out part, at most ``n_c - 1`` so that every class keeps a training item. Which items go
    is drawn from a ``numpy`` generator seeded with ``seed`` (classes in ascending order), so the
    split is a pure function of ``(targets, val_fraction, seed)``.

    Args:
        targets: integer labels, one per item, in item order.
        val_fraction: fraction of each class to hold out, in (0, 1).
        seed: seed of the draw.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 index tensors that partition ``range(len(targets))``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    y = torch.as_tensor(np.asarray(targets)).long().flatten()
    rng = np.random.default_rng(int(seed))
    train, val = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten().numpy()
        idx = idx[rng.permutation(len(idx))]
        k = min(int(math.floor(val_fraction * len(idx) + 0.5)), len(idx) - 1)
        val.append(idx[:k])
        train.append(idx[k:])
    empty = np.zeros(0, dtype=np.int64)
    tr = np.sort(np.concatenate(train or [empty])).astype(np.int64)
    va = np.sort(np.concatenate(val or [empty])).astype(np.int64)
    return torch.from_numpy(tr), torch.from_numpy(va)


def long_tail(targets: torch.Tensor, ratio: float, seed: int = 0) -> torch.Tensor:
    """Indices of a long-tailed subset: the i-th class (by label) keeps a seeded random
    ``ratio ** (-i / (C - 1))`` of its items (at least one), so balanced classes end up with
    counts from ``n`` down to ``n / ratio``. Sorted; all items when ``ratio`` is 1."""
    classes = torch.unique(targets)
    if ratio == 1 or len(classes) < 2:
        return torch.arange(len(targets))
    g = torch.Generator().manual_seed(seed)
    keep = []
    for i, c in enumerate(classes.tolist()):
        idx = (targets == c).nonzero().flatten()
        n = max(1, round(len(idx) * ratio ** (-i / (len(classes) - 1))))
        keep.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    return torch.cat(keep).sort().values
