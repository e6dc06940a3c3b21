"""LDIFS: distance between student and teacher features at several depths (METHOD.md "LDIFS").

``CE + alpha * mean_layers mean_batch ||phi_l(f) - phi_l(f0)||^2`` with ``phi_l`` the layer
output L2-normalised over its **channel** dimension. The public LDIFS code normalises over
tokens (a layout quirk); we normalise over channels as METHOD.md asks.

Layers (``layers``, see ``depths``): by default the encoder's ``ldifs_layers`` (submodule name ->
channel dim) plus the final embedding; an encoder without ``ldifs_layers`` is compared on its
final embedding only. ``layers="final"`` compares the final embedding alone.
A layer output with spatial or token positions (``[B, C, H, W]``, ``[B, N, C]``) is reduced,
ours, as the squared distance summed over channels and averaged over positions.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

from .common import as_float
from .depths import DepthsMixin
from .registry import register_plugin
from .teacher import Teacher, TeacherPlugin


def layer_distance(student: torch.Tensor, teacher: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Per-sample ``||phi(f) - phi(f0)||^2`` for one layer, ``[B]``.

    ``phi(a) = a / max(||a||, 1e-12)`` over ``dim`` (as ``F.normalize``); the squared distance
    is expanded as ``|a|^2/m_a^2 + |b|^2/m_b^2 - 2 a.b/(m_a m_b)`` so that only three channel
    reductions touch the full tensors (several times faster than normalising them on CPU).

    Args:
        student, teacher: outputs of one layer, same shape, batch first.
        dim: channel dimension (normalised over, summed over); other non-batch dims are
            positions and are averaged.
    """
    a, b = as_float(student), as_float(teacher.detach())
    aa, bb, ab = (a * a).sum(dim), (b * b).sum(dim), (a * b).sum(dim)
    ma, mb = aa.sqrt().clamp_min(1e-12), bb.sqrt().clamp_min(1e-12)
    d = (aa / ma ** 2 + bb / mb ** 2 - 2 * ab / (ma * mb)).clamp_min(0)
    return d.flatten(1).mean(dim=1) if d.dim() > 1 else d


def ldifs_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
               dims: Sequence[int]) -> torch.Tensor:
    """``mean_layers mean_batch ||phi_l(f) - phi_l(f0)||^2`` (METHOD.md "LDIFS").

    Args:
        student, teacher: per-layer outputs, aligned.
        dims: per-layer channel dimension.
    """
    return torch.stack([layer_distance(s, t, d).mean()
                        for s, t, d in zip(student, teacher, dims)]).mean()


class LDIFSPlugin(DepthsMixin, TeacherPlugin):
    """Adds ``alpha * ldifs_loss`` over the depths ``layers`` names.

    Args:
        alpha: weight of the feature distance (default 10, as LDIFS).
        encoder_attr: model attribute that holds the encoder.
        teacher: ``previous`` | ``pretrained`` | a ``Teacher``.
        layers: ``ldifs`` (the encoder's ``ldifs_layers`` and final embedding), ``final``, or
            submodule names (``depths``).
    """

    def __init__(self, *, alpha: float = 10.0, encoder_attr: str = "encoder",
                 teacher: Union[str, Teacher] = "previous", layers: str = "ldifs") -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        super().__init__(teacher=teacher, encoder_attr=encoder_attr)
        self.init_layers(layers)
        self.alpha = alpha
        self.last_loss = None

    def before_backward(self, strategy, **kwargs):
        if self.alpha == 0:
            return
        _, students, teachers, dims = zip(*self.depth_outputs())
        reg = ldifs_loss(students, teachers, dims)
        self.last_loss = reg.detach()
        strategy.loss = strategy.loss + self.alpha * reg


register_plugin("ldifs", LDIFSPlugin)
