"""Timing on a device: one stopwatch for training steps, benchmark steps and epochs, and the
named stage times a run records."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator, Optional

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


class StageTimes:
    """Seconds a run spends in each named stage, summed over its calls: the record's
    ``timing.stages`` (``{name: {"s", "calls"}}``).

    ``with stages("teacher"): ...`` times one call on the host clock and opens a
    ``torch.profiler.record_function`` span of the same name, so a profiler shows the same
    stages. Host time of CUDA work counts only what the host waited for, unless ``sync``:
    then the device is synchronised at both ends of every call (``bench/gpu-check`` asks for
    it; runs do not, since each synchronisation drains the GPU's queue).
    """

    def __init__(self, device="cpu", *, sync: bool = False) -> None:
        self.sync = bool(sync) and torch.device(device).type == "cuda"
        self.device = torch.device(device)
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def add(self, name: str, seconds: float, calls: int = 1) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)
        self.calls[name] = self.calls.get(name, 0) + int(calls)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.sync:
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        failed = True
        try:
            with torch.profiler.record_function(f"proxyfda_cl.{name}"):
                yield
            failed = False
        finally:
            if self.sync and not failed:  # after a CUDA error a sync would raise again
                torch.cuda.synchronize(self.device)
            self.add(name, time.perf_counter() - t0)

    def as_dict(self) -> dict:
        return {k: {"s": self.seconds[k], "calls": self.calls[k]} for k in sorted(self.seconds)}

    def load(self, saved: Optional[dict]) -> None:
        """Continue from ``as_dict()``'s output (a resumed run)."""
        for name, v in (saved or {}).items():
            self.add(name, v["s"], v["calls"])


class StepTimerPlugin(SupervisedPlugin):
    """Time of each training iteration (data loading excluded), per experience, by a
    ``Stopwatch`` on the strategy's device; ``times`` is filled after the experience.

    Args:
        sync: synchronise CUDA around every iteration (only for diagnostics).
        stages: where the host time from the end of one iteration to the start of the next
            is added, as ``data_wait``: loading the next batch and moving it to the device,
            and the work of the plugins that run between steps (Avalanche's metrics among
            them); never synchronised, so on CUDA it may hold some of the step's queued work.
    """

    def __init__(self, *, sync: bool = False, stages: Optional[StageTimes] = None) -> None:
        super().__init__()
        self.sync = bool(sync)
        self.stages = stages
        self.times: list[float] = []
        self._watch = None
        self._ready = 0.0

    def before_training_exp(self, strategy, **kwargs):
        self.times = []
        self._watch = Stopwatch(strategy.device, sync=self.sync)

    def before_training_epoch(self, strategy, **kwargs):
        self._ready = time.perf_counter()

    def before_training_iteration(self, strategy, **kwargs):
        if self.stages is not None:
            self.stages.add("data_wait", time.perf_counter() - self._ready)
        self._watch.start()

    def after_training_iteration(self, strategy, **kwargs):
        self._watch.stop()
        self._ready = time.perf_counter()

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
