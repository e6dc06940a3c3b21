"""Plugins the runner adds to every strategy: LR schedule, gradient clipping, bf16 autocast,
step timing. Each works inside any Avalanche strategy."""
from __future__ import annotations

import contextlib
import math
import time

import torch
from avalanche.core import SupervisedPlugin


class LRSchedulePlugin(SupervisedPlugin):
    """Linear warm-up for ``warmup_steps`` then constant or cosine decay to 0, per experience.

    The learning rate is set on every parameter group before each iteration, so it survives
    Avalanche's optimizer reset at the start of each experience.
    """

    def __init__(self, *, base_lr: float, warmup_steps: int = 0, schedule: str = "constant") -> None:
        super().__init__()
        self.base_lr, self.warmup, self.schedule = base_lr, warmup_steps, schedule
        self.step = 0
        self.total = 1

    def before_training_exp(self, strategy, **kwargs):
        self.step = 0
        self.total = max(1, len(strategy.dataloader) * strategy.train_epochs)

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


class StepTimerPlugin(SupervisedPlugin):
    """Time of each training iteration (data loading excluded), per experience.

    On the CPU: wall time. On CUDA, by default, a pair of CUDA events per iteration measures
    it on the device's stream, so the timer never blocks the host inside the training loop;
    the events are read once, after the experience (``times`` is filled then). ``sync=True``
    instead synchronises the device before and after every iteration and reads the wall
    clock (exact host-side step time, at the cost of draining the GPU's queue every step).

    Args:
        sync: synchronise CUDA around every iteration (only for diagnostics).
    """

    def __init__(self, *, sync: bool = False) -> None:
        super().__init__()
        self.sync = bool(sync)
        self.times: list[float] = []
        self._t0 = 0.0
        self._start = None
        self._events: list = []

    def before_training_exp(self, strategy, **kwargs):
        self.times = []
        self._events = []

    def _events_on(self, strategy) -> bool:
        return strategy.device.type == "cuda" and not self.sync

    def before_training_iteration(self, strategy, **kwargs):
        if self._events_on(strategy):
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record(torch.cuda.current_stream(strategy.device))
            return
        if strategy.device.type == "cuda":
            torch.cuda.synchronize(strategy.device)
        self._t0 = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs):
        if self._events_on(strategy):
            end = torch.cuda.Event(enable_timing=True)
            end.record(torch.cuda.current_stream(strategy.device))
            self._events.append((self._start, end))
            return
        if strategy.device.type == "cuda":
            torch.cuda.synchronize(strategy.device)
        self.times.append(time.perf_counter() - self._t0)

    def after_training_exp(self, strategy, **kwargs):
        self._resolve()

    def _resolve(self) -> None:
        """Turn the recorded CUDA events into seconds (one wait, for the last event)."""
        if not self._events:
            return
        self._events[-1][1].synchronize()
        self.times.extend(start.elapsed_time(end) / 1000.0 for start, end in self._events)
        self._events = []

    def median(self) -> float | None:
        """Median step time of the last experience, in seconds."""
        self._resolve()
        if not self.times:
            return None
        s = sorted(self.times)
        return s[len(s) // 2]
