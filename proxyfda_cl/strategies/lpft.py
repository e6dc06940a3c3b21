"""LP-FT: linear probe, then fine-tune (METHOD.md "Baselines", LP-FT).

For the first ``lp_epochs`` epochs of each experience only the heads train: the encoder's
parameters get ``requires_grad=False`` (so they get no gradient and every torch optimizer skips
them, even after Avalanche puts them back in its optimizer) and the encoder runs in eval mode
(BatchNorm statistics and Dropout frozen), re-applied at every iteration in case another
plugin or the runner switches the model back to train mode. Then everything trains.
The runner adds ``lp_epochs`` to ``train.epochs`` (``StrategyRecipe.extra_epochs``), so the
fine-tuning budget equals naive's.
"""
from __future__ import annotations

from typing import Optional

from avalanche.core import SupervisedPlugin

from .registry import register_plugin
from .teacher import get_encoder


class LPFTPlugin(SupervisedPlugin):
    """Head-only training for the first ``lp_epochs`` epochs of every experience.

    Args:
        lp_epochs: epochs of the linear-probe phase per experience.
        encoder_attr: model attribute that holds the encoder.
    """

    def __init__(self, *, lp_epochs: int = 1, encoder_attr: str = "encoder") -> None:
        super().__init__()
        if lp_epochs < 0:
            raise ValueError(f"lp_epochs must be >= 0, got {lp_epochs}")
        self.lp_epochs = lp_epochs
        self.encoder_attr = encoder_attr
        self.epoch = 0
        self._saved: Optional[list] = None

    @property
    def probing(self) -> bool:
        """True while the encoder is frozen."""
        return self._saved is not None

    def before_training_exp(self, strategy, **kwargs):
        self.epoch = 0

    def before_training_epoch(self, strategy, **kwargs):
        if self.epoch < self.lp_epochs:
            self._freeze(strategy)
        else:
            self._unfreeze(strategy)

    def before_training_iteration(self, strategy, **kwargs):
        if self.probing:
            get_encoder(strategy.model, self.encoder_attr).eval()

    def after_training_epoch(self, strategy, **kwargs):
        self.epoch += 1

    def after_training_exp(self, strategy, **kwargs):
        self._unfreeze(strategy)

    def _freeze(self, strategy) -> None:
        encoder = get_encoder(strategy.model, self.encoder_attr)
        if self._saved is None:
            self._saved = [(p, p.requires_grad) for p in encoder.parameters()]
            encoder.requires_grad_(False)
        encoder.eval()

    def _unfreeze(self, strategy) -> None:
        if self._saved is None:
            return
        for p, flag in self._saved:
            p.requires_grad_(flag)
        self._saved = None
        get_encoder(strategy.model, self.encoder_attr).train(strategy.model.training)


register_plugin("lp_ft", LPFTPlugin, extra_epochs=lambda hp: hp["lp_epochs"])
