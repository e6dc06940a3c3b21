"""What the feature regularisers' losses and plugins share.

``as_float`` promotes low-precision features before a loss; ``SigmoidTemperature`` holds the
SigLIP-style ``tau`` and ``b`` of FDA and Proxy-FDA, fixed or learned; ``batch_k`` adapts the
neighbour count to a minibatch; ``GradientBound`` keeps a regulariser's gradient at the
features within a multiple of the task loss's; ``check_common`` checks the hyper-parameters
FDA and Proxy-FDA share.
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
    classes, a last partial batch); ``None`` (skip the term) below 3 samples. Warns at each
    minibatch where it departs from ``k`` (a run's record counts them).
    """
    b = plugin.student_features().shape[0]
    if b >= k + 2:
        return k
    if b < 3:
        plugin.warn_result(f"{type(plugin).__name__}: skipped minibatches of {b} samples (FDA needs 3)")
        return None
    plugin.warn_result(f"{type(plugin).__name__}: k={k} lowered to {b - 2} for minibatches of {b} "
                       f"samples (k must be < B - 1)")
    return b - 2


class GradientBound:
    """Scale a regulariser so that its gradient at the student features is at most
    ``max_ratio`` times the task loss's (METHOD.md "FDA", step 5, ours).

    ``scale(reg, task, feats)`` returns the factor ``min(1, max_ratio ||d task/d feats|| /
    ||d reg/d feats||)`` (a 0-d tensor without gradient) to multiply ``reg`` by; both gradients are
    taken with ``torch.autograd.grad`` on the features only (the head and the loss, not the
    encoder), so the cost is small. ``max_ratio=0`` turns the bound off (factor 1). Per
    experience, ``log`` keeps one entry ``{"experience", "ratio", "kept"}``: the median raw
    ratio over the experience's steps (those with a task gradient) and the mean factor applied.
    """

    def __init__(self, max_ratio: float) -> None:
        if max_ratio < 0:
            raise ValueError(f"max_grad_ratio must be >= 0 (0: no bound), got {max_ratio}")
        self.max_ratio = float(max_ratio)
        self.log: list = []
        self._ratios: list = []
        self._kept: list = []

    def scale(self, reg: torch.Tensor, task, feats: torch.Tensor):
        """The factor for ``reg`` at this step: a 0-d tensor on the features' device (no host
        sync), or 1.0 without a bound or when the regulariser has no gradient path."""
        if not self.max_ratio or not reg.requires_grad or not torch.is_grad_enabled():
            return 1.0
        (g_reg,) = torch.autograd.grad(reg, feats, retain_graph=True, allow_unused=True)
        if g_reg is None:
            return 1.0
        g_task = None
        if torch.is_tensor(task) and task.requires_grad:
            (g_task,) = torch.autograd.grad(task, feats, retain_graph=True, allow_unused=True)
        n_reg = g_reg.detach().float().norm()
        n_task = g_task.detach().float().norm() if g_task is not None else torch.zeros_like(n_reg)
        # ratio inf (no task gradient) gives factor 0; no regulariser gradient gives factor 1
        ratio = torch.where(n_reg > 0, n_reg / n_task, torch.zeros_like(n_reg))
        factor = torch.where(ratio > self.max_ratio, self.max_ratio / ratio, torch.ones_like(ratio))
        self._ratios.append(ratio)
        self._kept.append(factor)
        return factor

    def end_experience(self, experience: int) -> None:
        """Close the experience's entry of ``log`` (one host read per experience)."""
        if self._ratios:  # steps without a task gradient (ratio inf) count in "kept" only
            r = sorted(v for v in torch.stack(self._ratios).cpu().tolist() if math.isfinite(v))
            self.log.append({"experience": experience, "ratio": r[len(r) // 2] if r else None,
                             "kept": float(torch.stack(self._kept).mean())})
        self._ratios, self._kept = [], []


class BoundedMixin:
    """A ``GradientBound`` on a plugin's regulariser: call ``init_bound`` in ``__init__`` and
    add ``self.bounded(strategy, term, feats)`` instead of ``term``; ``bound_log`` keeps one
    entry per experience."""

    def init_bound(self, max_ratio: float) -> None:
        self.bound = GradientBound(max_ratio)

    @property
    def bound_log(self) -> list:
        return self.bound.log

    def state_dict(self) -> dict:
        """The plugin's state with ``bound_log``."""
        return {**super().state_dict(), "bound_log": list(self.bound.log)}

    def load_state_dict(self, state: dict, model=None) -> None:
        """Restore ``state_dict``'s result."""
        super().load_state_dict(state, model)
        self.bound.log = list(state["bound_log"])

    def bounded(self, strategy, term: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """``term`` times the bound's factor against the loss so far (the task's); ``term``
        itself when the bound is off or does not apply."""
        factor = self.bound.scale(term, strategy.loss, feats)
        return term if isinstance(factor, float) else term * factor

    def after_training_exp(self, strategy, **kwargs):
        self.bound.end_experience(int(strategy.experience.current_experience) + 1)
        super().after_training_exp(strategy, **kwargs)


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
