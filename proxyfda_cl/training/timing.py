"""The time of each training step."""
from __future__ import annotations

import time

import torch
from avalanche.core import SupervisedPlugin


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
