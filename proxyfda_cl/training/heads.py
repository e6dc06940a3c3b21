"""Task heads initialised by a linear probe on the frozen features."""
from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin

from ..metrics.probe import DEFAULT_GRID, extract_features, fit_linear


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
