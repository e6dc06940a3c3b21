"""The teacher-feature cache: the frozen teacher's features of one experience by dataset index.

A sample's features are computed once, the first time it is seen, and reused in later
epochs; only the samples of a minibatch not seen yet go through the teacher. This is valid
only when the training inputs are deterministic (no random augmentation), as with the
suite's transforms. ``teacher_cache_mb`` (``TeacherPlugin``) bounds it.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch


def to_device(index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU index tensor on ``device``; to CUDA through pinned memory, without blocking."""
    if device.type != "cuda":
        return index.to(device)
    return index.pin_memory().to(device, non_blocking=True)


class FeatureCache:
    """Teacher features of one experience, one row per dataset index.

    The first minibatch of an experience (a new ``key``) sizes the cache: ``size`` rows of
    the features' width on their device, or no rows at all when that would take more than
    ``cache_mb`` MiB (the teacher then runs on every minibatch of the experience). Which rows
    are filled is kept on the CPU with the sampler's indices, so finding the misses never
    waits for the GPU; indices reach the device by non-blocking copies.
    """

    def __init__(self) -> None:
        self.key: Any = None
        self.feats: Optional[torch.Tensor] = None
        self.filled: Optional[torch.Tensor] = None

    def features(self, run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 indices: torch.Tensor, size: int, key: Any, cache_mb: float) -> torch.Tensor:
        """The teacher features of minibatch ``x``, from the cache where filled.

        Args:
            run: the teacher on a batch of inputs (rows of ``x``) -> ``[n, D]`` features.
            x: the minibatch's inputs.
            indices: dataset indices of the rows of ``x``.
            size: dataset size (cache rows).
            key: identifies the experience the indices refer to.
            cache_mb: memory bound of the cache.
        """
        indices = indices.cpu()
        if self.filled is None or self.key != key:
            feats = run(x)
            fits = size * feats.shape[1] * feats.element_size() <= cache_mb * 2 ** 20
            self.key = key
            self.feats = feats.new_zeros(size, feats.shape[1]) if fits else None
            self.filled = torch.zeros(size, dtype=torch.bool)
            if fits:
                self.feats[to_device(indices, feats.device)] = feats
                self.filled[indices] = True
            return feats
        if self.feats is None:  # over the memory bound for this experience
            return run(x)
        idx = to_device(indices, self.feats.device)
        miss = ~self.filled[indices]
        if miss.any():
            rows = miss.nonzero().squeeze(1)
            sub = run(x.index_select(0, to_device(rows, x.device)))
            self.feats[to_device(indices[rows], self.feats.device)] = sub.to(self.feats.dtype)
            self.filled[indices[rows]] = True
        return self.feats[idx].to(x.device)
