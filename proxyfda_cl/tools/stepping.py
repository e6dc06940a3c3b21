"""Avalanche's training loop, one step at a time, for the measurement tools.

``prepare_strategy`` builds a strategy from a registry recipe and positions it before the first
step of an experience, as ``strategy.train`` would; ``train_step`` is exactly the body of
Avalanche's training loop on one minibatch (plugin callbacks, forward, loss with regulariser,
backward, optimizer step), nothing of data loading. These drive Avalanche's private loop
methods, as ``SGDUpdate.training_epoch`` does.
"""
from __future__ import annotations

import copy

import torch
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from ..models.base import EncoderWithHeads
from ..training.sampling import BatchSamplerPlugin
from ..strategies import TeacherPlugin, build_strategy
from ..training import AutocastPlugin, make_optimizer

#: ``<strategy>+cache``: the strategy with its teacher-feature cache warm (epochs 2..E).
CACHE_SUFFIX = "+cache"
#: ``<strategy>+mem<M>``: the strategy with a cross-batch memory of M entries.
MEMORY_SUFFIX = "+mem"


def begin_experience(strategy: Naive, experience) -> None:
    """What ``strategy.train(experience)`` does before its first minibatch."""
    strategy.is_training = True
    strategy._stop_training = False
    strategy.model.train()
    strategy.model.to(strategy.device)
    strategy._eval_streams = {}
    strategy._before_training()
    strategy.experience = experience
    strategy._before_training_exp()
    strategy._before_training_epoch()


def train_step(strategy: Naive, batch: list) -> None:
    """One iteration of Avalanche's ``SGDUpdate.training_epoch`` on ``batch``."""
    strategy.mbatch = list(batch)
    strategy._unpack_minibatch()
    strategy._before_training_iteration()
    strategy.optimizer.zero_grad()
    strategy.loss = strategy._make_empty_loss()
    strategy._before_forward()
    strategy.mb_output = strategy.forward()
    strategy._after_forward()
    strategy.loss += strategy.criterion()
    strategy._before_backward()
    strategy.backward()
    strategy._after_backward()
    strategy._before_update()
    strategy.optimizer_step()
    strategy._after_update()
    strategy._after_training_iteration()


def end_experience(strategy: Naive) -> None:
    """What ``strategy.train`` does after the last minibatch of an experience."""
    strategy._after_training_epoch()
    strategy._after_training_exp()
    strategy._after_training()
    strategy._train_cleanup()


class FixedBatchIndices(BatchSamplerPlugin):
    """Reports the fixed minibatch as dataset indices ``0..B-1`` of the experience, as the
    runner's batch sampler reports a real batch's indices, so that the teacher-feature cache
    fills at the first step and serves every later one (the state of epochs 2..E)."""

    def __init__(self, teachers: list) -> None:
        super().__init__(kind="random", teachers=teachers)

    def before_training_exp(self, strategy, *args, **kwargs) -> None:
        self.current_indices = None  # keep the strategy's own dataloader

    def before_training_iteration(self, strategy, *args, **kwargs) -> None:
        self.current_indices = self.indices(len(strategy.mb_y))
        self.report_batch(strategy)

    def indices(self, b: int) -> torch.Tensor:
        """The dataset indices reported for a minibatch of ``b`` samples."""
        return torch.arange(b)


class RollingBatchIndices(FixedBatchIndices):
    """Reports each step's fixed minibatch as new dataset indices (``sB..sB+B-1`` at step
    ``s``), as distinct samples of a large dataset, so a cross-batch memory fills with
    entries none of which the batch holds (the state of a long experience)."""

    def __init__(self, teachers: list) -> None:
        super().__init__(teachers)
        self._step = 0

    def indices(self, b: int) -> torch.Tensor:
        self._step += 1
        return torch.arange((self._step - 1) * b, self._step * b)


def split_variant(name: str) -> tuple:
    """``(registry name, warm cache, memory size)`` of a tool variant name such as
    ``fda+cache`` or ``proxy_fda+mem1024``."""
    if name.endswith(CACHE_SUFFIX):
        return name[:-len(CACHE_SUFFIX)], True, 0
    base, sep, size = name.partition(MEMORY_SUFFIX)
    return (base, False, int(size)) if sep else (name, False, 0)


#: the optimisers the tools time, as the suites set them (AdamW with the GPU suites' decay)
TOOL_OPTIMIZERS = {"sgd": {"momentum": 0.9}, "adamw": {"weight_decay": 0.1}}


def prepare_strategy(name: str, encoder: nn.Module, experiences: list, *, params: dict,
                     batch_size: int, device: torch.device, precision: str, optimizer: str,
                     lr: float) -> Naive:
    """A strategy positioned before the first step of the last of ``experiences``.

    ``name`` is a registry name, or one with ``CACHE_SUFFIX`` for a warm teacher cache or
    ``MEMORY_SUFFIX`` and a size for a cross-batch memory; ``params`` maps names to
    hyper-parameters; the encoder is copied.
    """
    base, cached, memory = split_variant(name)
    hp = dict(params.get(name, params.get(base, {})))
    if memory:  # the rolling indices name no real samples: the teacher runs live
        hp.update(memory_size=memory, teacher_cache_mb=0.0)
    recipe = build_strategy(base, hp)
    plugins = list(recipe.plugins)
    teachers = [p for p in plugins if isinstance(p, TeacherPlugin)]
    if cached:
        plugins.append(FixedBatchIndices(teachers))
    elif memory:
        plugins.append(RollingBatchIndices(teachers))
        for p in teachers:  # its entries name no samples of the toy experience
            p.measure_staleness = False
    if precision == "bf16":
        plugins.append(AutocastPlugin(device_type=device.type))
    model = EncoderWithHeads(copy.deepcopy(encoder))
    strategy = Naive(model=model, optimizer=make_optimizer(model.parameters(), optimizer, lr=lr,
                                                        **TOOL_OPTIMIZERS[optimizer]),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=batch_size, train_epochs=1,
                     plugins=plugins, evaluator=EvaluationPlugin(loggers=[]), eval_every=-1,
                     device=device)
    for exp in experiences[:-1]:  # closed without steps, as after an experience of training
        begin_experience(strategy, exp)
        end_experience(strategy)
    begin_experience(strategy, experiences[-1])
    return strategy
