"""Neighbourhood structure of features: how much of the reference kNN graph survives.

``knn_overlap(ref, feats, k)`` is the mean over samples ``i`` of
``|kNN_ref(i) ∩ kNN_feats(i)| / k``, with neighbours by cosine similarity among the other
samples of the same set (METHOD.md, Metrics). It is 1 when every neighbourhood is kept (any
rotation or rescaling of the features keeps it), about ``k / (n - 1)`` for unrelated
features, and says whether a method keeps neighbourhoods while the features move.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["knn_indices", "knn_overlap"]


@torch.no_grad()
def knn_indices(feats: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """``[n, k]`` indices of each sample's ``k`` nearest other samples by cosine.

    Ties are broken by ``torch.topk``; rows are computed ``chunk`` at a time so memory stays
    ``chunk x n``.
    """
    n = feats.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"knn: need 1 <= k < n, got k={k} with n={n}")
    x = F.normalize(feats.detach().float(), dim=1)
    out = []
    for start in range(0, n, chunk):
        sims = x[start:start + chunk] @ x.T
        rows = torch.arange(start, min(start + chunk, n), device=x.device)
        sims[torch.arange(len(rows), device=x.device), rows] = -float("inf")
        out.append(sims.topk(k, dim=1).indices)
    return torch.cat(out)


@torch.no_grad()
def knn_overlap(reference: torch.Tensor, feats: torch.Tensor, k: int = 8) -> float:
    """Mean fraction of each sample's ``k`` reference neighbours that are still among its
    ``k`` neighbours in ``feats`` (same samples, same order); a float in [0, 1].

    Raises:
        ValueError: the two sets differ in size, or ``k`` is not below the set size.
    """
    if reference.shape[0] != feats.shape[0]:
        raise ValueError(f"knn_overlap: reference and feats differ in size "
                         f"({reference.shape[0]} vs {feats.shape[0]})")
    a = knn_indices(reference, k)
    b = knn_indices(feats.to(reference.device), k)
    hits = (a[:, :, None] == b[:, None, :]).any(dim=2).sum(dim=1)
    return float(hits.double().mean() / k)
