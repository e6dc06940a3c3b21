"""Strategies that are Avalanche's own: naive fine-tuning, EWC and LwF."""
from __future__ import annotations

import copy
from collections import defaultdict

from avalanche.training.plugins import EWCPlugin, LwFPlugin
from avalanche.training.utils import ParamData

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

    def state_dict(self) -> dict:
        """The experiences seen, the classes of each task and the previous model's weights."""
        lwf = self.lwf
        return {"expcount": lwf.expcount,
                "prev_classes_by_task": {int(t): [int(c) for c in classes]
                                         for t, classes in lwf.prev_classes_by_task.items()},
                "prev_model": None if lwf.prev_model is None else lwf.prev_model.state_dict()}

    def load_state_dict(self, state: dict, model=None) -> None:
        """Restore ``state_dict``'s result; the previous model is a frozen copy of ``model``
        (the strategy's, as restored after the same experience) with the saved weights."""
        lwf = self.lwf
        lwf.expcount = int(state["expcount"])
        lwf.prev_classes_by_task = defaultdict(set, {t: set(c) for t, c in
                                                     state["prev_classes_by_task"].items()})
        lwf.prev_model = None
        if state["prev_model"] is not None:
            prev = copy.deepcopy(model)
            prev.load_state_dict(state["prev_model"])
            prev.eval()
            prev.requires_grad_(False)
            lwf.prev_model = prev


class CheckpointedEWCPlugin(EWCPlugin):
    """Avalanche's EWC with its saved parameters and importances as plain tensors."""

    def state_dict(self) -> dict:
        """``saved_params`` and ``importances``: experience -> name -> (its name, tensor)."""
        return {key: {exp: {k: (p.name, p.data) for k, p in params.items()}
                      for exp, params in getattr(self, key).items()}
                for key in ("saved_params", "importances")}

    def load_state_dict(self, state: dict, model=None) -> None:
        """Restore ``state_dict``'s result."""
        for key in ("saved_params", "importances"):
            setattr(self, key, defaultdict(dict, {
                exp: {k: ParamData(name, data.shape, init_tensor=data, device=data.device)
                      for k, (name, data) in params.items()}
                for exp, params in state[key].items()}))


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
    return StrategyRecipe(plugins=[CheckpointedEWCPlugin(ewc_lambda=ewc_lambda, mode=mode, **kw)])


@register_strategy("lwf")
def lwf(*, alpha: float = 1.0, temperature: float = 2.0) -> StrategyRecipe:
    """Learning without forgetting (Avalanche's ``LwFPlugin``, previous model in eval mode)."""
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return StrategyRecipe(plugins=[EvalModeLwFPlugin(alpha=alpha, temperature=temperature)])
