"""Strategies that are Avalanche's own: naive fine-tuning, EWC and LwF."""
from __future__ import annotations


from avalanche.training.plugins import EWCPlugin, LwFPlugin

from .registry import StrategyRecipe, register_strategy


class EvalModeLwFPlugin(LwFPlugin):
    """Avalanche's LwF with its previous model kept in eval mode.

    Avalanche 0.6.0 deep-copies the model after each experience but leaves the copy in
    train mode, so BatchNorm statistics of the "frozen" model drift while it distils.
    """

    def after_training_exp(self, strategy, **kwargs):
        super().after_training_exp(strategy, **kwargs)
        prev = self.lwf.prev_model
        if prev is not None:
            prev.eval()
            for p in prev.parameters():
                p.requires_grad_(False)


@register_strategy("naive")
def naive() -> StrategyRecipe:
    """Plain fine-tuning: cross-entropy only."""
    return StrategyRecipe()


@register_strategy("ewc")
def ewc(*, ewc_lambda: float = 100.0, mode: str = "separate") -> StrategyRecipe:
    """Elastic weight consolidation (Avalanche's ``EWCPlugin``)."""
    if ewc_lambda < 0:
        raise ValueError(f"ewc_lambda must be >= 0, got {ewc_lambda}")
    if mode not in ("separate", "online"):
        raise ValueError(f"mode must be separate or online, got {mode!r}")
    kw = {"decay_factor": 1.0} if mode == "online" else {}
    return StrategyRecipe(plugins=[EWCPlugin(ewc_lambda=ewc_lambda, mode=mode, **kw)])


@register_strategy("lwf")
def lwf(*, alpha: float = 1.0, temperature: float = 2.0) -> StrategyRecipe:
    """Learning without forgetting (Avalanche's ``LwFPlugin``, previous model in eval mode)."""
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return StrategyRecipe(plugins=[EvalModeLwFPlugin(alpha=alpha, temperature=temperature)])
