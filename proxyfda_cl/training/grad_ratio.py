"""The regulariser's gradient ratio: a plugin the runner adds to every strategy with a loss
term (METHOD.md, "Gradient ratio")."""
from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin

#: A median gradient ratio above HIGH (the regulariser dominates) or below LOW (it barely
#: acts) over the first steps of an experience is a warning in the record and the report.
GRAD_RATIO_HIGH = 10.0
GRAD_RATIO_LOW = 0.01


class GradRatioPlugin(SupervisedPlugin):
    """The ratio of the regulariser's gradient norm to the task loss's, over the model's
    trainable parameters, at the first ``steps`` iterations of each experience.

    The task loss is the strategy's criterion on the minibatch; the regulariser is whatever
    the plugins before this one added to ``strategy.loss``. Both gradients are taken with
    ``torch.autograd.grad`` (nothing is accumulated, so training is unchanged); that costs
    two extra backward passes on each measured step and none after. Add it after every plugin
    that adds to the loss. ``log`` keeps per experience ``{"experience", "steps", "median",
    "max"}``; ``warnings(hint)`` turns extreme medians into one line each.
    """

    def __init__(self, *, steps: int = 5) -> None:
        super().__init__()
        self.steps = steps
        self.log: list = []
        self._ratios: list = []

    def before_training_exp(self, strategy, **kwargs):
        self._ratios = []

    def before_backward(self, strategy, **kwargs):
        if len(self._ratios) >= self.steps or not strategy.loss.requires_grad:
            return
        task = strategy.criterion()
        params = [p for p in strategy.model.parameters() if p.requires_grad]
        norms = []
        for loss in (strategy.loss - task, task):
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            sq = [g.detach().float().pow(2).sum() for g in grads if g is not None]
            norms.append(torch.stack(sq).sum().sqrt() if sq else torch.zeros(()))
        self._ratios.append(norms[0] / norms[1].clamp_min(1e-12))

    def after_training_exp(self, strategy, **kwargs):
        if self._ratios:
            r = sorted(torch.stack([x.cpu() for x in self._ratios]).tolist())
            self.log.append({"experience": int(strategy.experience.current_experience) + 1,
                             "steps": len(r), "median": r[len(r) // 2], "max": r[-1]})
        self._ratios = []

    @staticmethod
    def warnings(entries: list, hint: str = "") -> list:
        """One line per entry whose median ratio is extreme (``GRAD_RATIO_HIGH`` / ``_LOW``)."""
        out = []
        for e in entries:
            m = e["median"]
            if m > GRAD_RATIO_HIGH:
                out.append(f"experience {e['experience']}: the regulariser's gradient was {m:.3g}x "
                           f"the task loss's over the first {e['steps']} steps, so it dominates "
                           f"fine-tuning; lower {hint or 'its weight'}")
            elif m < GRAD_RATIO_LOW:
                out.append(f"experience {e['experience']}: the regulariser's gradient was {m:.2g}x "
                           f"the task loss's over the first {e['steps']} steps, so it barely acts; "
                           f"raise {hint or 'its weight'}")
        return out
