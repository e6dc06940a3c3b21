"""Linear probes on frozen features (METHOD.md, Metrics: ``P[t][d]``).

A probe is multinomial logistic regression on L2-normalised cached features. The L2
penalty is chosen on a seeded, stratified held-out split (10%) of the train features from a
small grid, then the probe is refit on the full train split with the chosen value [LDIFS].

The objective (ours, written so that the penalty does not depend on the sample count):

    mean_i CE(W x_i + b, y_i) + (weight_decay / 2) * ||W||^2      (bias not penalised)

which is scikit-learn's ``LogisticRegression(C=1 / (weight_decay * n))`` objective divided
by ``C * n``: the same minimiser. It is solved full-batch with L-BFGS (strong-Wolfe line
search), on whatever device the features are on, in float32 by default with the loss
accumulated in float64 so that the line search sees changes below float32 resolution.

The default grid (ours) spans ``weight_decay`` 1e-6 .. 1e-2, i.e. scikit-learn's C from 0.01 to
100 at n = 10,000. Much stronger penalties shrink the weights until the class priors (the
unpenalised bias) decide every prediction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..core.errors import ConfigError, DataError

DEFAULT_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


@dataclass
class ProbeResult:
    """Outcome of :func:`fit_probe`.

    Attributes:
        accuracy: test accuracy, a fraction in [0, 1].
        weight_decay: the L2 penalty chosen on the held-out split.
        val_accuracies: held-out accuracy for every grid value.
        n_train: train samples used for the final fit.
        n_test: test samples scored.
    """

    accuracy: float
    weight_decay: float
    val_accuracies: dict = field(default_factory=dict)
    n_train: int = 0
    n_test: int = 0


@torch.no_grad()
def extract_features(encoder: nn.Module, dataset: Dataset, *, batch_size: int = 256,
                     device: str | torch.device = "cpu", precision: str = "fp32",
                     num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw (not normalised) features of every sample of ``dataset``, in order.

    The encoder runs in eval mode without gradients (bf16 autocast when
    ``precision == "bf16"`` on CUDA); every submodule's train/eval mode is restored after.

    Args:
        encoder: module mapping preprocessed images ``[B, ...]`` to ``[B, D]``.
        dataset: yields ``(image_tensor, label, ...)``; trailing items are ignored.
        batch_size: images per forward pass.
        device: where the encoder runs (it must already be there).
        precision: ``"fp32"`` or ``"bf16"``.
        num_workers: DataLoader workers.

    Returns:
        (features ``FloatTensor[n, D]`` on CPU, labels ``LongTensor[n]``).
    """
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision={precision!r}: use 'fp32' or 'bf16'")
    device = torch.device(device)
    use_autocast = precision == "bf16" and device.type == "cuda"
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    modes = {m: m.training for m in encoder.modules()}
    encoder.eval()
    feats, labels = [], []
    try:
        for batch in loader:
            x, y = batch[0], batch[1]
            x = x.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
                f = encoder(x)
            feats.append(f.float().cpu())
            labels.append(torch.as_tensor(y).long().reshape(-1))
    finally:
        for m, mode in modes.items():
            m.training = mode
    if not feats:
        raise DataError("extract_features: the dataset is empty; pass a dataset with samples")
    return torch.cat(feats), torch.cat(labels)


def stratified_split(y: torch.Tensor, fraction: float = 0.1, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded stratified split of indices ``0..n-1`` into (fit, held-out).

    Each class with at least 2 samples gives ``max(1, round(fraction * n_c))`` of them
    (never all) to the held-out part; single-sample classes stay in the fit part.
    """
    g = torch.Generator().manual_seed(int(seed))
    y = y.cpu()
    fit, val = [], []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, round(fraction * len(idx))))
        val.append(idx[:k])
        fit.append(idx[k:])
    return torch.sort(torch.cat(fit)).values, torch.sort(torch.cat(val)).values


def _lbfgs(x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float,
           init: Optional[torch.Tensor], max_iter: int, tol: float) -> torch.Tensor:
    """Minimise the probe objective; the last column of ``x`` is the (unpenalised) bias input.

    Returns the ``[C, D + 1]`` parameter matrix. Gradients are computed in closed form:
    ``(softmax - onehot)^T X / n + weight_decay * [W, 0]``.
    """
    n = x.shape[0]
    onehot = F.one_hot(y, n_classes).to(x.dtype)
    w = torch.zeros(n_classes, x.shape[1], dtype=x.dtype, device=x.device)
    if init is not None:
        w.copy_(init)
    mask = torch.ones_like(w)
    mask[:, -1] = 0.0
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                            tolerance_change=1e-12, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        logits = x @ w.T
        lse = torch.logsumexp(logits, dim=1, keepdim=True)
        wm = w * mask
        nll = (lse.squeeze(1) - (logits * onehot).sum(1)).double().mean()
        loss = nll + 0.5 * weight_decay * (wm.double() ** 2).sum()
        p = torch.exp(logits - lse).sub_(onehot)
        w.grad = (p.T @ x).div_(n).add_(wm, alpha=weight_decay)
        return loss

    with torch.no_grad():
        opt.step(closure)
    w.grad = None
    return w


def _accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    if len(y) == 0:
        return float("nan")
    return ((x @ w.T).argmax(1) == y).double().mean().item()


def fit_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
              test_y: torch.Tensor, *, grid: Sequence[float] = DEFAULT_GRID,
              val_fraction: float = 0.1, seed: int = 0, max_iter: int = 200,
              tol: float = 1e-6, device: Optional[str | torch.device] = None,
              dtype: torch.dtype = torch.float32) -> ProbeResult:
    """Linear-probe accuracy of ``test`` after fitting on ``train`` (METHOD.md, Metrics).

    Features are L2-normalised; labels may be any ints (remapped to ``0..C-1`` by the train
    classes; a test label absent from train counts as an error). The penalty is chosen on
    a stratified ``val_fraction`` split of train, going from the strongest penalty to the
    weakest and warm-starting each fit from the previous one; ties go to the stronger
    penalty (ours). The final fit on all of train warm-starts from the chosen value's fit.

    Args:
        train_x, train_y: ``[n, D]`` features and ``[n]`` labels.
        test_x, test_y: ``[m, D]`` features and ``[m]`` labels.
        grid: candidate L2 penalties (``weight_decay`` of the objective in the module doc).
        val_fraction: held-out share of train used to pick the penalty.
        seed: seeds the split; the fit itself is deterministic.
        max_iter: L-BFGS iterations per fit.
        tol: L-BFGS gradient tolerance (max-abs).
        device: where to fit; default the device of ``train_x``.

    Returns:
        A :class:`ProbeResult`.
    """
    device = torch.device(device) if device is not None else train_x.device
    fit = fit_linear(train_x, train_y, grid=grid, val_fraction=val_fraction, seed=seed,
                     max_iter=max_iter, tol=tol, device=device, dtype=dtype)
    test_y = test_y.reshape(-1).cpu().long()
    pos = torch.searchsorted(fit.classes, test_y).clamp_(max=len(fit.classes) - 1)
    yte = torch.where(fit.classes[pos] == test_y, pos, torch.full_like(pos, -1)).to(device)
    xte = F.normalize(test_x.to(device, dtype), dim=1)
    if len(yte) == 0:
        acc = float("nan")
    else:
        acc = ((xte @ fit.weight.T + fit.bias).argmax(1) == yte).double().mean().item()
    return ProbeResult(accuracy=acc, weight_decay=fit.weight_decay,
                       val_accuracies=fit.val_accuracies, n_train=fit.n_train, n_test=len(yte))


@dataclass
class LinearFit:
    """A fitted linear classifier in the input's coordinates: ``logits = x @ weight.T + bias``
    (``x`` L2-normalised first when ``normalize``); row ``c`` scores label ``classes[c]``."""

    weight: torch.Tensor
    bias: torch.Tensor
    classes: torch.Tensor
    weight_decay: float
    val_accuracies: dict
    n_train: int


def fit_linear(train_x: torch.Tensor, train_y: torch.Tensor, *,
               grid: Sequence[float] = DEFAULT_GRID, val_fraction: float = 0.1, seed: int = 0,
               max_iter: int = 200, tol: float = 1e-6, device: Optional[str | torch.device] = None,
               dtype: torch.dtype = torch.float32, normalize: bool = True) -> LinearFit:
    """Multinomial logistic regression with its L2 penalty chosen on a held-out split: the
    fit behind ``fit_probe`` (same arguments), also used to initialise task heads from a
    probe (``normalize=False``: on the raw features the head sees)."""
    if len(grid) == 0:
        raise ConfigError("grid: empty; give at least one weight_decay value")
    if len(train_y) == 0:
        raise DataError("fit_probe: no train features; pass a non-empty train split")
    device = torch.device(device) if device is not None else train_x.device
    train_y = train_y.reshape(-1).cpu().long()
    classes = torch.unique(train_y)
    ytr = torch.searchsorted(classes, train_y)
    n_classes = len(classes)

    xtr = train_x.to(device, dtype)
    if normalize:
        xtr = F.normalize(xtr, dim=1)
    # Exact reparametrisation for conditioning: centre by the train mean and scale the bias
    # input to the features' per-dimension spread (the bias is unpenalised, so the minimiser
    # and its predictions do not change).
    mean = xtr.mean(0, keepdim=True)
    xtr = xtr - mean
    scale = xtr.pow(2).sum(1).mean().div(xtr.shape[1]).sqrt().clamp_min(1e-6).item()
    xtr = torch.cat([xtr, torch.full((len(xtr), 1), scale, device=device, dtype=dtype)], dim=1)
    ytr = ytr.to(device)
    lams = sorted((float(v) for v in grid), reverse=True)

    fit_idx, val_idx = stratified_split(ytr, val_fraction, seed)
    val_acc: dict = {}
    sols: dict = {}
    if len(lams) > 1:
        if len(val_idx) == 0:
            raise DataError("fit_probe: no class has 2+ train samples; cannot hold out a "
                            "validation split; pass more train data or a one-value grid")
        fit_idx, val_idx = fit_idx.to(device), val_idx.to(device)
        xf, yf, xv, yv = xtr[fit_idx], ytr[fit_idx], xtr[val_idx], ytr[val_idx]
        w = None
        for lam in lams:
            w = _lbfgs(xf, yf, n_classes, lam, w, max_iter, tol)
            sols[lam] = w
            val_acc[lam] = _accuracy(xv, yv, w)
        best = max(lams, key=lambda lam: val_acc[lam])
    else:
        best = lams[0]
    w = _lbfgs(xtr, ytr, n_classes, best, sols.get(best), max_iter, tol)
    weight = w[:, :-1]
    bias = w[:, -1] * scale - (weight @ mean.T).squeeze(1)
    return LinearFit(weight=weight, bias=bias, classes=classes, weight_decay=best,
                     val_accuracies=val_acc, n_train=len(ytr))
