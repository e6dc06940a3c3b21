"""What the feature regularisers' losses and plugins share.

``as_float`` promotes low-precision features before a loss; ``SigmoidTemperature`` holds the
SigLIP-style ``tau`` and ``b`` of FDA and Proxy-FDA, fixed or learned; ``batch_k`` adapts the
neighbour count to a minibatch; ``check_common`` checks the hyper-parameters FDA and
Proxy-FDA share.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .teacher import TeacherPlugin

NEG_WEIGHTS = ("constant", "similarity")
BOUNDARIES = ("teacher", "fixed")


def as_float(t: torch.Tensor) -> torch.Tensor:
    """``t`` in at least float32 (half and bfloat16 inputs are promoted)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class SigmoidTemperature(nn.Module):
    """``tau`` and ``b`` of the sigmoid loss, fixed or learned as SigLIP does (``log(1/tau)``, ``b``).

    Learned values live on the CPU with their own Adam optimizer; ``values`` moves them to the
    loss's device (gradients flow back through the copy).
    """

    def __init__(self, tau: float, bias: float, *, learnable: bool = False, lr: float = 1e-3) -> None:
        super().__init__()
        self.tau, self.bias, self.learnable = float(tau), float(bias), learnable
        self.optimizer = None
        if learnable:
            self.log_inv_tau = nn.Parameter(torch.tensor(math.log(1.0 / tau)))
            self.b = nn.Parameter(torch.tensor(float(bias)))
            self.optimizer = torch.optim.Adam([self.log_inv_tau, self.b], lr=lr)

    def values(self, device=None) -> tuple:
        """``(tau, b)``: floats when fixed, tensors with gradients when learned."""
        if not self.learnable:
            return self.tau, self.bias
        return torch.exp(-self.log_inv_tau).to(device), self.b.to(device)

    def step(self) -> None:
        """One optimizer step on the learned values (no-op when fixed or without gradients)."""
        if self.optimizer is not None and self.log_inv_tau.grad is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


def batch_k(plugin: TeacherPlugin, k: int) -> Optional[int]:
    """The neighbour count for the current minibatch (ours: METHOD.md assumes ``B >= k + 2``).

    ``k`` when the batch allows it; ``B - 2`` for a smaller batch (an experience with few
    classes, a last partial batch); ``None`` (skip the term) below 3 samples. Warns once per
    experience when it departs from ``k``.
    """
    b = plugin.student_features().shape[0]
    if b >= k + 2:
        return k
    if b < 3:
        plugin.warn_once(f"{type(plugin).__name__}: skipped minibatches of {b} samples (FDA needs 3)")
        return None
    plugin.warn_once(f"{type(plugin).__name__}: k={k} lowered to {b - 2} for minibatches of {b} "
                     f"samples (k must be < B - 1)")
    return b - 2


def check_common(*, lam: float, k: int, tau: float, neg_weight: str,
                 boundary: str = "fixed") -> None:
    """The hyper-parameters FDA and Proxy-FDA share, checked: a one-line ``ValueError``."""
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if neg_weight not in NEG_WEIGHTS:
        raise ValueError(f"neg_weight must be one of {', '.join(NEG_WEIGHTS)}, got {neg_weight!r}")
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
