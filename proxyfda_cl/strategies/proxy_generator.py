"""The proxy generator of Proxy-FDA (METHOD.md "Proxy-FDA"): adaptive pooling of a feature set
into proxies, with one attention layer and two 1x1 convolutions."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class ProxyGenerator(nn.Module):
    """Adaptive pooling of a feature set into proxies: 1 attention layer + 2 conv layers.

    ``forward`` maps sets ``[N, n, D]`` to pooling weights ``A`` ``[N, n_p, n]`` (softmax over
    the set). It reads a fixed random projection of the features, so its size does not grow
    with D (5.7K parameters with the defaults).

    Args:
        feature_dim: D.
        n_pos: proxies per neighbour set.
        n_neg: proxies per non-neighbour set.
        proj_dim: size of the fixed random projection.
        hidden: channels of the conv and attention layers.
        heads: attention heads.
        seed: seed of the projection and of the initial weights (the global RNG is untouched).
    """

    def __init__(self, feature_dim: int, *, n_pos: int = 4, n_neg: int = 4, proj_dim: int = 32,
                 hidden: int = 32, heads: int = 2, seed: int = 0) -> None:
        super().__init__()
        if n_pos < 1 or n_neg < 1:
            raise ValueError(f"n_pos and n_neg must be >= 1, got {n_pos} and {n_neg}")
        self.feature_dim, self.n_pos, self.n_neg = int(feature_dim), n_pos, n_neg
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(feature_dim, proj_dim, generator=g))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.conv_in = nn.Conv1d(proj_dim + 2, hidden, 1)
            self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
            self.norm = nn.LayerNorm(hidden)
            self.conv_out = nn.Conv1d(hidden, n_pos + n_neg, 1)

    def _tokens(self, sets: torch.Tensor, anchor_sim: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        return torch.cat([sets @ self.projection, anchor_sim.unsqueeze(-1),
                          weights.unsqueeze(-1)], dim=-1)

    def _encode(self, tokens: torch.Tensor, split: Optional[int] = None) -> torch.Tensor:
        """conv -> attention -> conv; returns ``[N, n_pos + n_neg, n]``. With ``split`` the
        first ``split`` tokens and the rest attend only within their own group."""
        h = F.gelu(self.conv_in(tokens.transpose(1, 2))).transpose(1, 2)
        if split is None:
            att = self._attention(h)
        else:
            att = torch.cat([self._attention(h[:, :split]), self._attention(h[:, split:])], 1)
        h = self.norm(h + att)
        return self.conv_out(h.transpose(1, 2))

    def logits(self, sets: torch.Tensor, anchor_sim: torch.Tensor, weights: torch.Tensor, *,
               positive: bool) -> torch.Tensor:
        """Pooling logits ``[N, n_p, n]`` for sets ``[N, n, D]`` given each element's cosine to
        its anchor and teacher weight (``[N, n]`` each)."""
        out = self._encode(self._tokens(sets, anchor_sim, weights))
        return out[:, :self.n_pos] if positive else out[:, self.n_pos:]

    def forward(self, sets: torch.Tensor, anchor_sim: torch.Tensor, weights: torch.Tensor, *,
                positive: bool) -> torch.Tensor:
        """Pooling weights ``A = softmax(logits)`` over the set, ``[N, n_p, n]``."""
        return self.logits(sets, anchor_sim, weights, positive=positive).softmax(dim=-1)

    def pool_both(self, rows: torch.Tensor, anchor_sim: torch.Tensor, weights: torch.Tensor,
                  k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Both sets of every anchor in one pass: ``rows`` ``[N, n, D]`` holds the neighbour
        set (first ``k``) then the non-neighbour set. Attention stays within a set, so the
        result equals ``forward`` on each set alone.

        Returns:
            ``(A_pos [N, n_pos, k], A_neg [N, n_neg, n - k])``.
        """
        out = self._encode(self._tokens(rows, anchor_sim, weights), k)
        return (out[:, :self.n_pos, :k].softmax(dim=-1),
                out[:, self.n_pos:, k:].softmax(dim=-1))

    def _attention(self, h: torch.Tensor) -> torch.Tensor:
        """``self.attn(h, h, h)``, written with batched matmuls: for sets of a few dozen
        elements this is several times faster on CPU than the fused kernels."""
        a = self.attn
        n, length, e = h.shape
        heads = a.num_heads
        q, k, v = F.linear(h, a.in_proj_weight, a.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, heads, e // heads).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)).mul_((e // heads) ** -0.5)
        out = scores.softmax(dim=-1) @ v
        return a.out_proj(out.transpose(1, 2).reshape(n, length, e))


__all__ = ["ProxyGenerator"]
