"""The optimiser and what shapes its steps: the optimiser factory, the learning-rate schedule,
gradient clipping and bf16 autocast."""
from __future__ import annotations

import contextlib
import math

import torch
from avalanche.core import SupervisedPlugin


class LRSchedulePlugin(SupervisedPlugin):
    """Linear warm-up for ``warmup_steps`` then constant or cosine decay to 0, per experience.

    The learning rate is set on every parameter group before each iteration, so it survives
    Avalanche's optimizer reset at the start of each experience. With ``restart_epochs`` (LP-FT's
    head-only epochs) the schedule runs twice in an experience: over the first
    ``restart_epochs`` epochs, then anew, warm-up included, over the rest, so that fine-tuning
    the encoder starts with its own warm-up as it would without the head-only phase.
    """

    def __init__(self, *, base_lr: float, warmup_steps: int = 0, schedule: str = "constant",
                 restart_epochs: int = 0) -> None:
        super().__init__()
        self.base_lr, self.warmup, self.schedule = base_lr, warmup_steps, schedule
        self.restart_epochs = restart_epochs
        self.step = 0
        self.total = 1
        self.epoch = 0
        self._per_epoch = 1

    def before_training_exp(self, strategy, **kwargs):
        self.step, self.epoch = 0, 0
        self._per_epoch = max(1, len(strategy.dataloader))
        first = self.restart_epochs if 0 < self.restart_epochs < strategy.train_epochs \
            else strategy.train_epochs
        self.total = self._per_epoch * first

    def before_training_epoch(self, strategy, **kwargs):
        if self.epoch and self.epoch == self.restart_epochs:
            self.step = 0
            self.total = self._per_epoch * max(1, strategy.train_epochs - self.restart_epochs)

    def after_training_epoch(self, strategy, **kwargs):
        self.epoch += 1

    def factor(self) -> float:
        """The multiplier of ``base_lr`` at the current step."""
        if self.warmup and self.step < self.warmup:
            return (self.step + 1) / self.warmup
        if self.schedule == "cosine":
            span = max(1, self.total - self.warmup)
            done = min(1.0, (self.step - self.warmup) / span)
            return 0.5 * (1 + math.cos(math.pi * done))
        return 1.0

    def before_training_iteration(self, strategy, **kwargs):
        lr = self.base_lr * self.factor()
        for group in strategy.optimizer.param_groups:
            group["lr"] = lr

    def after_training_iteration(self, strategy, **kwargs):
        self.step += 1


class GradClipPlugin(SupervisedPlugin):
    """Clip the global gradient norm of the model's parameters before each update."""

    def __init__(self, *, max_norm: float) -> None:
        super().__init__()
        self.max_norm = max_norm

    def before_update(self, strategy, **kwargs):
        torch.nn.utils.clip_grad_norm_(strategy.model.parameters(), self.max_norm)


class AutocastPlugin(SupervisedPlugin):
    """Run the forward passes (training and evaluation) under bf16 autocast."""

    def __init__(self, *, device_type: str) -> None:
        super().__init__()
        self.device_type = device_type
        self._ctx: contextlib.AbstractContextManager | None = None

    def _enter(self):
        self._ctx = torch.autocast(self.device_type, dtype=torch.bfloat16)
        self._ctx.__enter__()

    def _exit(self):
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None

    def close(self) -> None:
        """Leave autocast if a forward pass raised inside it (call from a ``finally``)."""
        self._exit()

    def before_forward(self, strategy, **kwargs):
        self._enter()

    def after_forward(self, strategy, **kwargs):
        self._exit()

    def before_eval_forward(self, strategy, **kwargs):
        self._enter()

    def after_eval_forward(self, strategy, **kwargs):
        self._exit()


def make_optimizer(params, name: str, *, lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimiser every run and every measuring tool uses: ``sgd`` (with ``momentum``),
    ``adam`` or ``adamw``, over ``params`` (a module's parameters or parameter groups)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be sgd, adam or adamw, got {name!r}")
