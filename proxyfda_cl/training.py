"""Plugins the runner adds to every strategy: LR schedule, gradient clipping, bf16 autocast,
step timing, head initialisation, frozen BatchNorm statistics and a divergence guard (the
regulariser's gradient ratio is in grad_ratio.py). Each works inside any Avalanche strategy."""
from __future__ import annotations

import contextlib
import math
import time

import torch
from avalanche.core import SupervisedPlugin

from .analysis.probe import DEFAULT_GRID, extract_features, fit_linear
from .errors import ProxyFDAError
from .models.base import batchnorm_layers


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


class HeadInitPlugin(SupervisedPlugin):
    """Initialise each new task head from a linear probe and optionally freeze the heads.

    With ``mode="probe"`` the head of the experience's task is set, before its first step, to
    a multinomial logistic regression fitted on the encoder's features of the experience's
    training set (the raw features the head sees; penalty chosen on a held-out 10% from
    ``grid``), as the LDIFS protocol initialises its heads. ``mode="random"`` keeps Avalanche's
    initialisation. With ``freeze`` the heads are not trained (their parameters get no
    gradient), so only the encoder moves.

    Args:
        mode: ``random`` or ``probe``.
        freeze: keep every task head fixed.
        batch_size: images per forward pass when extracting features.
        max_samples: at most this many training images for the probe (a seeded subset).
        grid: the probe's L2 penalties.
        seed: seeds the subset and the held-out split.
        num_workers: DataLoader workers.
    """

    def __init__(self, *, mode: str = "probe", freeze: bool = False, batch_size: int = 256,
                 max_samples: int | None = 10000, grid=DEFAULT_GRID,
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        if mode not in ("random", "probe"):
            raise ValueError(f"head_init must be random or probe, got {mode!r}")
        self.mode, self.freeze, self.batch_size = mode, freeze, batch_size
        self.max_samples, self.grid, self.seed = max_samples, tuple(grid), seed
        self.num_workers = num_workers

    def before_training_exp(self, strategy, **kwargs):
        model = strategy.model
        task = int(strategy.experience.task_labels[0])
        head = model.heads.classifiers[str(task)].classifier
        if self.mode == "probe":
            ds = strategy.experience.dataset
            n = len(ds)
            if self.max_samples is not None and n > self.max_samples:
                g = torch.Generator().manual_seed(self.seed)
                idx = torch.randperm(n, generator=g)[:self.max_samples].sort().values
                ds = ds.subset(idx.tolist())
            feats, labels = extract_features(model.encoder, ds.eval(), batch_size=self.batch_size,
                                             device=strategy.device, num_workers=self.num_workers)
            fit = fit_linear(feats, labels, grid=self.grid, seed=self.seed, normalize=False)
            with torch.no_grad():
                rows = fit.classes.to(head.weight.device)
                if int(rows.max()) >= head.out_features:
                    raise ValueError(f"head of task {task} has {head.out_features} outputs, "
                                     f"labels reach {int(rows.max())}")
                head.weight.zero_()  # labels absent from the data score below every present one
                head.bias.fill_(float(fit.bias.min()) - 10.0)
                head.weight[rows] = fit.weight.to(head.weight)
                head.bias[rows] = fit.bias.to(head.bias)
        for p in model.heads.parameters():
            p.requires_grad_(not self.freeze)


class FrozenBatchNormPlugin(SupervisedPlugin):
    """Keep every BatchNorm layer of the encoder in eval mode while training: the running
    statistics stay those of the pre-trained model (its affine weights still train)."""

    def __init__(self, *, encoder_attr: str = "encoder") -> None:
        super().__init__()
        self.encoder_attr = encoder_attr
        self._layers: list = []

    def before_training_exp(self, strategy, **kwargs):
        enc = getattr(strategy.model, self.encoder_attr)
        self._layers = batchnorm_layers(enc)

    def before_training_iteration(self, strategy, **kwargs):
        for m in self._layers:
            m.eval()


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
