"""Timing on a device: one stopwatch for training steps, benchmark steps and epochs."""
from __future__ import annotations

import time

import torch
from avalanche.core import SupervisedPlugin


class Stopwatch:
    """Intervals timed on ``device``, in seconds.

    On the CPU: wall time. On CUDA, by default, a pair of CUDA events per interval measures it
    on the device's current stream, so the host never waits inside the timed loop; the events
    are read by ``times()`` (one wait, for the last one). ``sync=True`` instead synchronises
    the device at both ends of every interval and reads the wall clock (the exact host-side
    time, at the cost of draining the GPU's queue each time).
    """

    def __init__(self, device, *, sync: bool = False) -> None:
        self.device = torch.device(device)
        self.events = self.device.type == "cuda" and not sync
        self._times: list[float] = []
        self._pending: list = []
        self._start = None

    def start(self) -> None:
        if self.events:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record(torch.cuda.current_stream(self.device))
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._start = time.perf_counter()

    def stop(self) -> None:
        if self.events:
            end = torch.cuda.Event(enable_timing=True)
            end.record(torch.cuda.current_stream(self.device))
            self._pending.append((self._start, end))
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._times.append(time.perf_counter() - self._start)

    def times(self) -> list[float]:
        """Every interval so far, in order (reads the CUDA events still pending)."""
        if self._pending:
            self._pending[-1][1].synchronize()
            self._times.extend(s.elapsed_time(e) / 1000.0 for s, e in self._pending)
            self._pending = []
        return list(self._times)


class StepTimerPlugin(SupervisedPlugin):
    """Time of each training iteration (data loading excluded), per experience, by a
    ``Stopwatch`` on the strategy's device; ``times`` is filled after the experience.

    Args:
        sync: synchronise CUDA around every iteration (only for diagnostics).
    """

    def __init__(self, *, sync: bool = False) -> None:
        super().__init__()
        self.sync = bool(sync)
        self.times: list[float] = []
        self._watch = None

    def before_training_exp(self, strategy, **kwargs):
        self.times = []
        self._watch = Stopwatch(strategy.device, sync=self.sync)

    def before_training_iteration(self, strategy, **kwargs):
        self._watch.start()

    def after_training_iteration(self, strategy, **kwargs):
        self._watch.stop()

    def after_training_exp(self, strategy, **kwargs):
        self._resolve()

    def _resolve(self) -> None:
        if self._watch is not None:
            self.times = self._watch.times()

    def median(self) -> float | None:
        """Median step time of the last experience, in seconds."""
        self._resolve()
        if not self.times:
            return None
        s = sorted(self.times)
        return s[len(s) // 2]
