"""BatchNorm statistics frozen at their pre-trained values."""
from __future__ import annotations

from avalanche.core import SupervisedPlugin

from ..models.base import batchnorm_layers


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
