"""FDA: feature distribution alignment (METHOD.md "FDA — feature distribution alignment").

The teacher's K-nearest-neighbour graph of the batch is transferred to the student with a
SigLIP-style sigmoid loss::

    L_FDA^i = 1/(B-1) sum_{j != i} log(1 + exp(w_ij * (-cos(x_i, x_j)/tau + b)))

with ``w_ij = max(s_hat_ij, eps)`` for the K teacher neighbours of ``i`` and a negative weight
for the others. Computed for the whole batch as one B x B operation.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F

from .common import (BOUNDARIES, NEG_WEIGHTS, BoundedMixin, SigmoidTemperature, as_float,
                     batch_k, check_common)
from .depths import DepthsMixin
from .memory import MemoryMixin, MemoryView
from .registry import register_plugin
from .teacher import Teacher, TeacherPlugin

Scalar = Union[float, torch.Tensor]


def check_batch(batch_size: int, k: int) -> None:
    """Raise a one-line ``ValueError`` unless ``1 <= k < B-1`` (so every anchor has a
    non-neighbour) and ``B >= 3``."""
    if batch_size < 3:
        raise ValueError(f"FDA needs a batch of at least 3 samples, got {batch_size}; "
                         "raise train.batch_size or use drop_last")
    if k < 1 or k >= batch_size - 1:
        raise ValueError(f"FDA needs 1 <= k < batch size - 1, got k={k} with a batch of "
                         f"{batch_size}; lower strategy.k or raise train.batch_size")


@torch.no_grad()
def teacher_graph(teacher_feats: torch.Tensor, k: int, *, neg_weight: str = "constant",
                  eps: float = 1e-6, memory: Optional[torch.Tensor] = None) -> tuple:
    """The teacher neighbourhood graph (METHOD.md "FDA", steps 1-2).

    Args:
        teacher_feats: ``[B, D]`` teacher features (any norm).
        k: neighbours per anchor.
        neg_weight: ``constant`` (``-1``, ours) or ``similarity`` (``-(1 - s_hat)/2 - eps``).
        eps: lower clamp of the neighbour weights.
        memory: ``[M, D]`` teacher features of memory entries, candidates of every anchor
            (columns ``B..B+M-1``); none by default.

    Returns:
        ``(order, weights)``, both ``[B, B-1+M]``: for each anchor ``i`` the other samples, its
        K neighbours first (by decreasing teacher cosine), and their weights ``w_ij``.
    """
    if neg_weight not in NEG_WEIGHTS:
        raise ValueError(f"neg_weight must be one of {', '.join(NEG_WEIGHTS)}, got {neg_weight!r}")
    b = teacher_feats.shape[0]
    check_batch(b, k)
    t = F.normalize(as_float(teacher_feats.detach()), dim=1)
    s_hat = t @ with_memory(t, memory).T
    s_hat.fill_diagonal_(-math.inf)
    sims, order = s_hat.sort(dim=1, descending=True)
    sims, order = sims[:, :-1], order[:, :-1]
    if neg_weight == "constant":
        neg = torch.full_like(sims[:, k:], -1.0)
    else:
        neg = -(1.0 - sims[:, k:]) / 2 - eps
    return order, torch.cat([sims[:, :k].clamp(min=eps), neg], dim=1)


@torch.no_grad()
def teacher_boundary(teacher_feats: torch.Tensor, order: torch.Tensor, k: int,
                     memory: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per anchor, the midpoint between its K-th and (K+1)-th teacher cosines, ``[B, 1]``.

    Used as the sigmoid's decision boundary (``boundary="teacher"``): the teacher's own
    neighbours sit above it and its non-neighbours below it, so the teacher's configuration
    already satisfies the loss's ordering whatever the spread of its cosines.
    """
    return teacher_margin(teacher_feats, order, k, memory)[0]


@torch.no_grad()
def teacher_margin(teacher_feats: torch.Tensor, order: torch.Tensor, k: int,
                   memory: Optional[torch.Tensor] = None) -> tuple:
    """Per anchor, ``(m_i, h_i)``, both ``[B, 1]``: the midpoint of its K-th and (K+1)-th
    teacher cosines and half their gap (the margin of its nearest real samples to ``m_i``);
    ``order`` and ``memory`` as ``teacher_graph`` takes and returns them."""
    t = F.normalize(as_float(teacher_feats.detach()), dim=1)
    cand = with_memory(t, memory)
    kth = (t * cand[order[:, k - 1]]).sum(1, keepdim=True)
    next_ = (t * cand[order[:, k]]).sum(1, keepdim=True)
    return (kth + next_) / 2, (kth - next_) / 2


def anchor_bias(bias: Scalar, tau: Scalar, boundary: str, teacher_feats: torch.Tensor,
                order: torch.Tensor, k: int, memory: Optional[torch.Tensor] = None) -> Scalar:
    """The bias term of the sigmoid: ``b`` (``fixed``) or ``b + m_i / tau`` (``teacher``),
    where ``m_i`` is ``teacher_boundary``; with ``b = 0`` the boundary sits at ``cos = m_i``."""
    if boundary == "fixed":
        return bias
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
    return bias + teacher_boundary(teacher_feats, order, k, memory) / tau


def with_memory(feats: torch.Tensor, memory: Optional[torch.Tensor]) -> torch.Tensor:
    """The candidates of every anchor: the batch's L2-normalised ``feats``, then the memory
    entries (L2-normalised, no gradient) when there are any."""
    if memory is None:
        return feats
    return torch.cat([feats, F.normalize(as_float(memory.detach()), dim=1).to(feats.dtype)])


def sigmoid_terms(weights: torch.Tensor, cos: torch.Tensor, tau: Scalar, bias: Scalar) -> torch.Tensor:
    """Elementwise ``log(1 + exp(w * (-cos/tau + b)))`` (the SigLIP form of METHOD.md "FDA")."""
    return F.softplus(weights * (-cos / tau + bias))


def fda_loss(feats: torch.Tensor, teacher_feats: torch.Tensor, k: int = 8, tau: Scalar = 0.1,
             bias: Scalar = 0.0, *, neg_weight: str = "constant", eps: float = 1e-6,
             boundary: str = "fixed", memory: Optional[MemoryView] = None) -> torch.Tensor:
    """Mean over anchors of ``L_FDA^i`` (METHOD.md "FDA").

    Args:
        feats: ``[B, D]`` student features (normalised here; gradients flow to them).
        teacher_feats: ``[B, D]`` teacher features (normalised here; no gradient).
        k: neighbours per anchor, ``1 <= k < B-1``.
        tau: temperature (a float, or a tensor when learned).
        bias: SigLIP bias ``b`` (a float, or a tensor when learned).
        neg_weight: ``constant`` or ``similarity`` (see ``teacher_graph``).
        eps: lower clamp of the neighbour weights.
        boundary: ``fixed`` (the bias ``b`` alone) or ``teacher`` (``b + m_i / tau``, with
            ``m_i`` the midpoint of anchor i's K-th and (K+1)-th teacher cosines).
        memory: memory entries that join every anchor's candidates as fixed points (the
            graph is built over batch and memory, ``1/(B-1)`` becomes ``1/(B-1+M)``).

    Returns:
        A scalar tensor.
    """
    if feats.shape[0] != teacher_feats.shape[0]:
        raise ValueError(f"feats and teacher_feats differ in batch size: {feats.shape[0]} vs "
                         f"{teacher_feats.shape[0]}")
    t_mem, s_mem = (None, None) if memory is None else memory
    order, w = teacher_graph(teacher_feats, k, neg_weight=neg_weight, eps=eps, memory=t_mem)
    x = F.normalize(as_float(feats), dim=1)
    cos = (x @ with_memory(x, s_mem).T).gather(1, order)
    b = anchor_bias(bias, tau, boundary, teacher_feats, order, k, t_mem)
    return sigmoid_terms(w, cos, tau, b).mean()


def check_depths(layers: str, final_only: bool, memory_size: int, max_grad_ratio: float) -> None:
    """The cross-batch memory and the gradient bound work on the final embedding only: a
    one-line ``ValueError`` when either is asked for at other depths."""
    if not final_only and (memory_size or max_grad_ratio):
        field = "memory_size" if memory_size else "max_grad_ratio"
        raise ValueError(f"{field} works on the final embedding only, but layers={layers!r}; "
                         f"set {field}=0 or layers=final")


class FDAPlugin(BoundedMixin, MemoryMixin, DepthsMixin, TeacherPlugin):
    """Adds ``lam * fda_loss(student, teacher)`` to the strategy loss (METHOD.md "FDA").

    At several depths (``layers``) the term is the mean of one ``fda_loss`` per depth, each
    with its own teacher graph and boundaries over that depth's ``pooled`` features.

    With ``learnable_temperature`` the plugin learns ``log(1/tau)`` and ``b`` as SigLIP does,
    initialised from ``tau`` and ``bias``, with its own Adam optimizer (``temp_lr``) stepped
    after the strategy's update; Avalanche's optimizer never sees them.

    Built with no arguments it is the shipped ``fda`` strategy (the ``fda`` recipe is this
    plugin on hard-mined batches): the boundary at each anchor's own teacher midpoint, τ = 0.05,
    λ = 3 (METHOD.md "FDA", step 3; docs/benchmarks.md, "Robustness matrix"). ``fda_loss``
    keeps the formula's defaults (b = 0 at a fixed boundary, τ = 0.1).

    Args:
        lam: weight of the FDA term.
        k: neighbours per anchor.
        tau, bias: SigLIP temperature and bias.
        neg_weight: ``constant`` or ``similarity``.
        eps: lower clamp of neighbour weights.
        boundary: ``teacher`` or ``fixed`` (see ``fda_loss``).
        learnable_temperature: learn ``log(1/tau)`` and ``b``.
        temp_lr: learning rate of the temperature/bias optimizer.
        encoder_attr: model attribute that holds the encoder.
        teacher: ``previous`` | ``pretrained`` | a ``Teacher``.
        teacher_cache_mb: cache teacher features by dataset index (see ``TeacherPlugin``): only
            where the suite's batch sampler hands the plugin each minibatch's indices, whose
            inputs are deterministic; in any other strategy the teacher runs live.
        memory_size: entries of the cross-batch memory (0: the batch alone; see ``memory``).
        memory_warmup: steps of each experience before the memory is used.
        max_grad_ratio: bound on the term's gradient at the student features, as a multiple
            of the task loss's (``GradientBound``; 0: none).
        layers: ``final`` (the encoder's output), ``ldifs`` or submodule names (``depths``;
            METHOD.md "Depths"); memory and bound need ``final``.
    """

    def __init__(self, *, lam: float = 3.0, k: int = 8, tau: float = 0.05, bias: float = 0.0,
                 neg_weight: str = "constant", eps: float = 1e-6, boundary: str = "teacher",
                 learnable_temperature: bool = False, temp_lr: float = 1e-3,
                 encoder_attr: str = "encoder", teacher: Union[str, Teacher] = "previous",
                 teacher_cache_mb: float = 256.0, memory_size: int = 0,
                 memory_warmup: int = 0, max_grad_ratio: float = 0.0,
                 layers: str = "final") -> None:
        check_common(lam=lam, k=k, tau=tau, neg_weight=neg_weight, boundary=boundary)
        super().__init__(teacher=teacher, encoder_attr=encoder_attr,
                         teacher_cache_mb=teacher_cache_mb)
        self.init_layers(layers)
        check_depths(layers, self.final_only, memory_size, max_grad_ratio)
        self.init_memory(memory_size, memory_warmup)
        self.init_bound(max_grad_ratio)
        self.lam, self.k, self.neg_weight, self.eps = lam, k, neg_weight, eps
        self.boundary = boundary
        self.temperature = SigmoidTemperature(tau, bias, learnable=learnable_temperature, lr=temp_lr)
        self.last_loss = None

    def state_dict(self) -> dict:
        """The plugin's state with the temperature's learned values and their optimizer's."""
        opt = self.temperature.optimizer
        return {**super().state_dict(), "temperature": self.temperature.state_dict(),
                "temperature_optimizer": None if opt is None else opt.state_dict()}

    def load_state_dict(self, state: dict, model=None) -> None:
        """Restore ``state_dict``'s result."""
        super().load_state_dict(state, model)
        self.temperature.load_state_dict(state["temperature"])
        opt, saved = self.temperature.optimizer, state["temperature_optimizer"]
        if (opt is None) != (saved is None):
            raise ValueError("learnable_temperature differs from the saved plugin's")
        if opt is not None:
            opt.load_state_dict(saved)

    def before_backward(self, strategy, **kwargs):
        k = batch_k(self, self.k) if self.lam else None
        if k is None:
            return
        tau, bias = self.temperature.values(strategy.device)
        pairs = self.depth_pairs()
        reg = torch.stack([fda_loss(s, t, k, tau, bias, neg_weight=self.neg_weight, eps=self.eps,
                                    boundary=self.boundary, memory=self.memory_view())
                           for _, s, t in pairs]).mean()
        # memory and bound are on only with the final embedding alone (``check_depths``)
        _, feats, teacher_feats = pairs[-1]
        self.memory_push(strategy, teacher_feats, feats)
        self.last_loss = reg.detach()
        strategy.loss = strategy.loss + self.bounded(strategy, self.lam * reg, feats)

    def after_update(self, strategy, **kwargs):
        self.temperature.step()


register_plugin("fda", FDAPlugin, sampler="hard")
