"""L2SP: weight-space distance to the teacher (METHOD.md "Baselines", L2SP).

``CE + alpha * sum ||w - w0||^2`` over the encoder's parameters only, with no 1/2 factor and
``w0`` the teacher's weights.
"""
from __future__ import annotations

from typing import Iterable, Union

import torch

from .common import as_float
from .registry import register_plugin
from .teacher import Teacher, TeacherPlugin, get_encoder


def l2sp_penalty(params: Iterable[torch.Tensor], ref_params: Iterable[torch.Tensor]) -> torch.Tensor:
    """``sum ||w - w0||^2`` over aligned parameter lists (``w0`` without gradient)."""
    terms = [(as_float(w) - as_float(w0.detach())).pow(2).sum() for w, w0 in zip(params, ref_params)]
    if not terms:
        raise ValueError("l2sp_penalty: no parameters to compare")
    return torch.stack(terms).sum()


class L2SPPlugin(TeacherPlugin):
    """Adds ``alpha * sum ||w - w0||^2`` over the encoder's parameters.

    Args:
        alpha: weight of the penalty (default 0.5, no 1/2 factor).
        encoder_attr: model attribute that holds the encoder.
        teacher: ``previous`` | ``pretrained`` | a ``Teacher`` (``w0`` are its weights).
    """

    def __init__(self, *, alpha: float = 0.5, encoder_attr: str = "encoder",
                 teacher: Union[str, Teacher] = "previous") -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        super().__init__(teacher=teacher, encoder_attr=encoder_attr, tap=False)
        self.alpha = alpha
        self._pairs: tuple = ((), ())
        self.last_loss = None

    def before_training_exp(self, strategy, **kwargs):
        super().before_training_exp(strategy, **kwargs)
        student = dict(get_encoder(strategy.model, self.encoder_attr).named_parameters())
        ref = dict(self.teacher.named_parameters())
        names = [n for n in student if n in ref]
        self._pairs = ([student[n] for n in names], [ref[n] for n in names])

    def before_backward(self, strategy, **kwargs):
        if self.alpha == 0:
            return
        params, ref = self._pairs
        if ref and ref[0].device != params[0].device:
            self.teacher.to(params[0].device)
        reg = l2sp_penalty(params, ref)
        self.last_loss = reg.detach()
        strategy.loss = strategy.loss + self.alpha * reg


register_plugin("l2sp", L2SPPlugin)
