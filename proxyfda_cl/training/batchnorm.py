"""BatchNorm statistics while fine-tuning: frozen at their pre-trained values, or updating and
then recomputed for the weights training ended with."""
from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin
from torch.utils.data import DataLoader

from ..models.base import batchnorm_layers


@torch.no_grad()
def recompute_statistics(module: torch.nn.Module, data, *, batch_size: int,
                         device: torch.device, num_workers: int = 0) -> torch.nn.Module:
    """Replace the running statistics of every BatchNorm layer in ``module`` by their
    cumulative average over one pass of ``data`` (batches ``(x, ...)``), with only the
    BatchNorm layers in train mode (dropout and stochastic depth stay off) and no weight
    changed; each layer keeps its momentum. Returns ``module`` in eval mode."""
    layers = batchnorm_layers(module)
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    module.eval()
    for m in layers:
        m.train()
    for batch in DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        module(batch[0].to(device))
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    return module.eval()


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


class RecomputeBatchNormPlugin(SupervisedPlugin):
    """At the end of each experience, recompute the encoder's BatchNorm statistics over the
    experience's training images (evaluation transforms) with the final weights.

    While the statistics update, each running mean is an exponential average over the last
    batches, taken under weights that kept changing. When the weights move fast at the end of
    an experience, those statistics no longer match them and the network evaluates far below
    what it reaches on its training batches. One pass with the final weights removes the
    mismatch ("precise BatchNorm"). Put it first among the plugins, so that plugins acting at
    the end of the experience (a teacher copy, EWC's importances) see the recomputed
    statistics.
    """

    def __init__(self, *, batch_size: int = 256, num_workers: int = 0,
                 encoder_attr: str = "encoder") -> None:
        super().__init__()
        self.batch_size, self.num_workers, self.encoder_attr = batch_size, num_workers, encoder_attr

    def after_training_exp(self, strategy, **kwargs):
        encoder = getattr(strategy.model, self.encoder_attr)
        training = encoder.training
        recompute_statistics(encoder, strategy.experience.dataset.eval(),
                             batch_size=self.batch_size, device=strategy.device,
                             num_workers=self.num_workers)
        encoder.train(training)
