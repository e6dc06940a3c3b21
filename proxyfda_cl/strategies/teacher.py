"""The frozen teacher ``f0`` (METHOD.md "Notation") and the plugin base that reads features.

``Teacher`` holds a frozen copy of the encoder: with ``mode="previous"`` it is re-taken at the
start of every experience (the frozen previous-task model); with ``mode="pretrained"`` it is
taken once, at the first experience, and kept. A plugin built with a mode holds its own
``Teacher``; plugins handed one ``Teacher`` instance share it (one snapshot and one teacher
forward per minibatch).

``TeacherPlugin`` captures the student encoder's inputs and output with a forward hook during
the strategy's training forward pass (no second student forward) and runs the teacher on the
same inputs under ``torch.no_grad`` and the autocast state the student ran under.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
import weakref
from collections import OrderedDict
from typing import Optional, Sequence, Union

import torch
from avalanche.core import SupervisedPlugin
from torch import nn

from ..core.errors import ResultWarning
from .teacher_cache import FeatureCache

TEACHER_MODES = ("previous", "pretrained")


def get_encoder(model: nn.Module, encoder_attr: str) -> nn.Module:
    """The submodule ``model.<encoder_attr>`` (e.g. ``feature_extractor`` for Avalanche's
    ``FeatureExtractorModel``)."""
    enc = getattr(model, encoder_attr, None)
    if not isinstance(enc, nn.Module):
        raise AttributeError(f"encoder_attr: the model ({type(model).__name__}) has no module "
                             f"attribute {encoder_attr!r}; pass the name of its encoder")
    return enc


def as_features(output) -> torch.Tensor:
    """An encoder output as ``[B, D]``: the first element of a tuple, more than 2 dims flattened."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"expected the encoder to return a tensor, got {type(output).__name__}")
    return output.flatten(1) if output.dim() > 2 else output


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` in eval mode with ``requires_grad=False`` and no forward hooks."""
    saved = [(m, m._forward_hooks, m._forward_pre_hooks) for m in module.modules()]
    for m, _, _ in saved:
        m._forward_hooks, m._forward_pre_hooks = OrderedDict(), OrderedDict()
    try:
        twin = copy.deepcopy(module)
    finally:
        for m, fwd, pre in saved:
            m._forward_hooks, m._forward_pre_hooks = fwd, pre
    twin.eval()
    twin.requires_grad_(False)
    return twin


def _autocast_state(t: torch.Tensor) -> tuple:
    dev = t.device.type
    return dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev)


class Teacher:
    """The frozen teacher encoder ``f0`` of one plugin, or of the plugins it is handed to.

    Teacher features of one experience can be cached by dataset index (``cache_mb`` > 0 and
    no intermediate layers requested): ``feature_cache``, a ``FeatureCache`` (only for
    deterministic inputs; see ``teacher_cache``). Apart from it, the result of the last
    minibatch is kept (``_memo``) so that plugins sharing the teacher run it once per batch.

    Args:
        mode: ``previous`` (snapshot at the start of every experience) or ``pretrained``
            (snapshot at the first experience, kept).
        encoder_attr: attribute of the strategy's model that holds the encoder.
        cache_mb: memory bound of the per-experience feature cache (0: no cache).
    """

    def __init__(self, *, mode: str = "previous", encoder_attr: str = "encoder",
                 cache_mb: float = 0.0) -> None:
        if mode not in TEACHER_MODES:
            raise ValueError(f"teacher must be one of {', '.join(TEACHER_MODES)}, got {mode!r}")
        self.mode = mode
        self.encoder_attr = encoder_attr
        self.cache_mb = float(cache_mb)
        self.module: Optional[nn.Module] = None
        self.layers: set = set()
        self._key = None
        self._memo: Optional[tuple] = None
        self.feature_cache: Optional[FeatureCache] = None
        #: times each teacher lookup that is not the last minibatch's (a forward, or a read of
        #: the feature cache) as the stage ``teacher`` when set (a ``StageTimes``:
        #: ``stages(name)`` gives a context manager); see ``TeacherPlugin.time_with````
        self.stages = None

    def snapshot(self, strategy) -> nn.Module:
        """Freeze a copy of the strategy's encoder; idempotent within one experience."""
        key = (id(strategy), strategy.clock.train_exp_counter)
        if self.module is None or (self.mode == "previous" and key != self._key):
            self.module = None
            self.module = frozen_copy(get_encoder(strategy.model, self.encoder_attr))
            self._key, self._memo, self.feature_cache = key, None, None
        return self.module

    def _run(self, args: tuple, kwargs: dict, amp: tuple) -> tuple:
        x = args[0] if args else next(iter(kwargs.values()))
        ref = next(self.module.parameters(), None)
        if ref is not None and ref.device != x.device:
            self.module.to(x.device)
        mods = dict(self.module.named_modules())
        layers: dict = {}
        handles = [mods[n].register_forward_hook(
            lambda m, i, o, n=n: layers.__setitem__(n, o[0] if isinstance(o, tuple) else o))
            for n in self.layers]
        try:
            with torch.autocast(amp[0], dtype=amp[2], enabled=amp[1]):
                feats = as_features(self.module(*args, **kwargs))
        finally:
            for h in handles:
                h.remove()
        return feats, layers

    @torch.no_grad()
    def forward(self, args: tuple, kwargs: dict, amp: tuple, *,
                indices: Optional[torch.Tensor] = None, size: int = 0, key=None) -> tuple:
        """Teacher features for the student's encoder inputs.

        Args:
            args, kwargs: the inputs the student encoder was called with.
            amp: ``(device_type, enabled, dtype)`` autocast state of the student forward.
            indices: dataset indices of the minibatch's samples, to use the feature cache.
            size: dataset size (cache rows).
            key: identifies the experience the indices refer to.

        Returns:
            ``(features [B, D], {layer name: output})`` for every name in ``self.layers``;
            the result for the same (unmodified) input tensor is reused.
        """
        if self.module is None:
            raise RuntimeError("the teacher has no snapshot yet (before_training_exp not run)")
        x = args[0] if args else next(iter(kwargs.values()))
        c = self._memo
        if (c is not None and c[0] is x and c[1] == x._version and c[2] == amp
                and self.layers <= c[4].keys()):
            return c[3], c[4]
        with self.stages("teacher") if self.stages is not None else contextlib.nullcontext():
            feats, layers = self._compute(args, kwargs, amp, indices, size, key)
        self._memo = (x, x._version, amp, feats, layers)
        return feats, layers

    def _compute(self, args: tuple, kwargs: dict, amp: tuple, indices, size: int, key) -> tuple:
        x = args[0] if args else next(iter(kwargs.values()))
        cacheable = (self.cache_mb > 0 and not self.layers and args and indices is not None
                     and size > 0 and len(indices) == len(x))
        if cacheable:
            if self.feature_cache is None:
                self.feature_cache = FeatureCache()
            run = lambda rows: self._run((rows,) + tuple(args[1:]), kwargs, amp)[0]  # noqa: E731
            feats = self.feature_cache.features(run, x, indices, size, key, self.cache_mb)
            layers = {}
        else:
            feats, layers = self._run(args, kwargs, amp)
        return feats, layers


class TeacherPlugin(SupervisedPlugin):
    """Base of the plugins that compare the student encoder with the frozen teacher.

    Args:
        teacher: ``previous`` | ``pretrained`` (the plugin's own ``Teacher``), or a ``Teacher``
            to share one frozen model between several plugins.
        encoder_attr: attribute of the model that holds the encoder.
        tap: capture the student encoder's inputs and output with a forward hook.
        teacher_cache_mb: memory bound of the teacher's per-experience feature cache, used
            when the batch sampler hands the minibatch's dataset indices to ``set_batch``
            (0: always run the teacher; only for deterministic inputs, see ``Teacher``).
    """

    def __init__(self, *, teacher: Union[str, Teacher] = "previous", encoder_attr: str = "encoder",
                 tap: bool = True, teacher_cache_mb: float = 0.0) -> None:
        super().__init__()
        if not isinstance(teacher, Teacher) and teacher not in TEACHER_MODES:
            raise ValueError(f"teacher must be one of {', '.join(TEACHER_MODES)} or a Teacher, "
                             f"got {teacher!r}")
        self._teacher = (teacher if isinstance(teacher, Teacher)
                         else Teacher(mode=teacher, encoder_attr=encoder_attr))
        self.encoder_attr = encoder_attr
        self._tap = tap
        self.teacher_cache_mb = float(teacher_cache_mb)
        self._handles: list = []
        self._capturing = False
        self._batch: dict = {}
        self._clear()

    @property
    def teacher(self) -> Optional[nn.Module]:
        """The frozen teacher encoder (eval mode, no gradients), once an experience started."""
        return self._teacher.module

    def time_with(self, stages) -> None:
        """Time the teacher's forward passes as the stage ``teacher`` of ``stages`` (a
        ``StageTimes``; ``None`` stops timing). Plugins sharing a teacher share its timing."""
        self._teacher.stages = stages

    def layer_names(self, encoder: nn.Module) -> Sequence[str]:
        """Names of encoder submodules whose outputs the plugin compares (none by default)."""
        return ()

    def _clear(self) -> None:
        self._inputs = None
        self._out = None
        self._layers: dict = {}
        self._amp = None

    def state_dict(self) -> dict:
        """A ``pretrained`` teacher's weights (a ``previous`` one is re-taken per experience)."""
        t = self._teacher if self._teacher.mode == "pretrained" else None
        return {"teacher": None if t is None or t.module is None else t.module.state_dict()}

    def load_state_dict(self, state: dict, model: Optional[nn.Module] = None) -> None:
        """Restore ``state_dict``'s result, the teacher rebuilt from ``model``'s encoder."""
        if state["teacher"] is not None:
            t = self._teacher
            if t.mode != "pretrained":
                raise ValueError(f"a saved pretrained teacher, but this plugin's is {t.mode}")
            t.module = frozen_copy(get_encoder(model, self.encoder_attr))
            t.module.load_state_dict(state["teacher"])

    def set_batch(self, indices: Optional[torch.Tensor], size: int, key) -> None:
        """Called by the batch sampler before each training step: the minibatch's dataset
        ``indices`` (a LongTensor aligned with it, or None), the ``size`` of the dataset they
        index and a ``key`` naming that dataset (the experience), for the feature cache."""
        self._batch = {"indices": indices, "size": size, "key": key}

    @property
    def batch_indices(self) -> Optional[torch.Tensor]:
        """Dataset indices of the minibatch being trained on, as the batch sampler handed
        them (``set_batch``); None outside a training iteration or without a sampler."""
        return self._batch.get("indices")

    def warn_result(self, message: str) -> None:
        """Warn with ``message`` as a ``ResultWarning``: a run counts every one in its record
        (``core.errors.recorded_warnings``); the console shows each message once."""
        warnings.warn(message, ResultWarning, stacklevel=3)

    def before_training_exp(self, strategy, **kwargs):
        self._teacher.snapshot(strategy)
        self._teacher.cache_mb = max(self._teacher.cache_mb, self.teacher_cache_mb)
        self._remove_hooks()
        if not self._tap:
            return
        encoder = get_encoder(strategy.model, self.encoder_attr)
        names = list(self.layer_names(encoder))
        mods = dict(encoder.named_modules())
        missing = [n for n in names if n not in mods]
        if missing:
            raise ValueError(f"{type(self).__name__}: the encoder has no submodule {missing[0]!r}")
        self._teacher.layers.update(names)
        self._handles.append(encoder.register_forward_hook(self._hook(encoder, None), with_kwargs=True))
        for n in names:
            self._handles.append(mods[n].register_forward_hook(self._hook(mods[n], n), with_kwargs=True))

    def _hook(self, target: nn.Module, name: Optional[str]):
        """A forward hook that records ``target``'s call while capturing.

        It is a plain function (copied as is by ``copy.deepcopy``, unlike a bound method that
        would drag the plugin along) and ignores calls of any other module, such as a deep
        copy of the model made by another plugin.
        """
        ref = weakref.ref(target)

        def hook(module, args, kwargs, output):
            if not self._capturing or module is not ref():
                return
            if name is None:
                self._inputs, self._out = (args, kwargs), output
                self._amp = _autocast_state(as_features(output))
            else:
                self._layers[name] = output[0] if isinstance(output, tuple) else output
        return hook

    def before_forward(self, strategy, **kwargs):
        self._clear()
        self._capturing = True

    def after_forward(self, strategy, **kwargs):
        self._capturing = False

    def after_training_iteration(self, strategy, **kwargs):
        self._clear()
        self._batch = {}

    def after_training_exp(self, strategy, **kwargs):
        self._remove_hooks()
        self._clear()
        self._batch = {}

    def _remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def student_features(self) -> torch.Tensor:
        """The student encoder output for the current minibatch, ``[B, D]``, with gradients."""
        if self._out is None:
            raise RuntimeError(f"{type(self).__name__}: the encoder (model.{self.encoder_attr}) was "
                               "not called during the forward pass; set encoder_attr")
        return as_features(self._out)

    def student_layers(self) -> dict:
        """Captured student outputs of ``layer_names`` for the current minibatch."""
        return self._layers

    def teacher_outputs(self) -> tuple:
        """``(teacher features [B, D], {layer: output})`` for the current minibatch, no grad."""
        self.student_features()
        return self._teacher.forward(*self._inputs, self._amp, **self._batch)
