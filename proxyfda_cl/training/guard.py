"""The divergence guard: a non-finite loss ends the run with one line."""
from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin

from ..core.errors import ProxyFDAError


class DivergedError(ProxyFDAError):
    """The training loss became non-finite."""


class DivergenceGuardPlugin(SupervisedPlugin):
    """Stop training when the loss becomes non-finite, with one line naming the experience,
    the step and what to lower.

    The check stays on the device (no host sync per step): each step's non-finite flag is
    kept there and the flags are read every ``check_every`` iterations and at the end of
    each epoch. Add it after every plugin that adds to the loss.
    """

    def __init__(self, *, lr: float, check_every: int = 25, hint: str = "",
                 grad_clip: float | None = None) -> None:
        super().__init__()
        self.lr, self.check_every, self.hint = lr, check_every, hint
        self.grad_clip = grad_clip
        self._flags: list = []  # device booleans of the steps not read yet
        self._read = 0  # steps of this experience already read

    def before_training_exp(self, strategy, **kwargs):
        self._flags, self._read = [], 0

    def before_backward(self, strategy, **kwargs):
        self._flags.append(~torch.isfinite(strategy.loss.detach()).reshape(()))

    def after_training_iteration(self, strategy, **kwargs):
        if len(self._flags) >= self.check_every:
            self.check(strategy)

    def after_training_epoch(self, strategy, **kwargs):
        self.check(strategy)

    def check(self, strategy) -> None:
        """Raise ``DivergedError`` if a non-finite loss was seen."""
        if not self._flags:
            return
        bad = torch.stack(self._flags)
        first, self._read, self._flags = self._read, self._read + len(self._flags), []
        if not bool(bad.any()):
            return
        exp = strategy.clock.train_exp_counter + 1
        step = first + int(bad.nonzero()[0]) + 1
        clip = ("set train.grad_clip" if self.grad_clip is None
                else f"lower train.grad_clip (now {self.grad_clip:g})")
        raise DivergedError(f"training diverged: the loss became non-finite in experience {exp} "
                            f"at step {step}; lower train.lr (now {self.lr:g})"
                            f"{self.hint}, or {clip}")
