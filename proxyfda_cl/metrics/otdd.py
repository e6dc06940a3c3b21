"""Feature distances between labelled sets: OTDD and L2 (METHOD.md, Metrics).

OTDD [OTDD], as METHOD.md fixes it (ours, so that two implementations agree): per class c,
``mu_c`` = mean and ``Sigma_c`` = sample covariance (denominator ``n_c - 1``);

    W2^2(c, c') = ||mu_c - mu_c'||^2 + tr(Sigma_c + Sigma_c' - 2 (Sigma_c^1/2 Sigma_c' Sigma_c^1/2)^1/2)
    C_ij        = ||x_i - x'_j||^2 + W2^2(y_i, y'_j)
    OTDD        = sqrt(min_pi <pi, C>)            (uniform weights)

The two label sets are separate: class c of set 1 is compared with every class c' of set 2,
whatever their integer values. A class with a single sample has covariance 0 (ours).

The Bures term is computed in float64 from a factor ``Sigma = F^T F`` of each class
covariance: ``F`` = centred samples / sqrt(n_c - 1) when ``n_c <= D``, else
``diag(sqrt(lambda)) V^T`` from the eigendecomposition (negative eigenvalues clipped). Then
``tr Sigma = ||F||_F^2`` and ``tr (Sigma^1/2 Sigma' Sigma^1/2)^1/2 = ||F F'^T||_*`` (the
nuclear norm of a small matrix), equal to the eigendecomposition route in exact arithmetic.

``exact`` solves the transport with POT's network simplex (``ot.emd2``); ``sinkhorn`` is the
debiased entropic Sinkhorn divergence ``S = OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2``
(self terms with the same label-augmented cost), log-domain, in torch on the inputs' device.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Optional, Union

import numpy as np
import torch

from ..core.errors import ResultWarning

Array = Union[np.ndarray, torch.Tensor]

__all__ = ["otdd", "label_w2", "subsample", "l2_distance", "feature_distances"]


def _np64(a: Array) -> np.ndarray:
    return np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)


def _labels(y: Array) -> np.ndarray:
    return np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y).reshape(-1)


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _class_stats(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """Per class: the inverse index of every sample, the means [K, D], covariance factors."""
    classes, inv = np.unique(y, return_inverse=True)
    d = x.shape[1]
    means, factors = np.empty((len(classes), d)), []
    for k in range(len(classes)):
        xc = x[inv == k]
        n_c = xc.shape[0]
        means[k] = xc.mean(0)
        if n_c < 2:
            factors.append(np.zeros((1, d)))
            continue
        z = (xc - means[k]) / math.sqrt(n_c - 1)
        if n_c <= d:
            factors.append(z)
        else:
            lam, vec = np.linalg.eigh(z.T @ z)
            factors.append((vec * np.sqrt(np.clip(lam, 0.0, None))).T)
    return inv, means, factors


def _bures_w2(m1: np.ndarray, f1: list, m2: np.ndarray, f2: list) -> np.ndarray:
    """Matrix of W2^2 between the Gaussians (m1[i], F1_i^T F1_i) and (m2[j], F2_j^T F2_j)."""
    tr1 = np.array([np.einsum("ij,ij->", f, f) for f in f1])
    tr2 = np.array([np.einsum("ij,ij->", f, f) for f in f2])
    nuc = np.empty((len(f1), len(f2)))
    # Every cross product F1_i F2_j^T at once, as one large (multi-threaded) matrix product.
    gram = np.concatenate(f1) @ np.concatenate(f2).T
    o1 = np.cumsum([0] + [len(f) for f in f1])
    o2 = np.cumsum([0] + [len(f) for f in f2])

    with _one_blas_thread():  # many small SVDs: threads only add contention
        for i in range(len(f1)):
            for j in range(len(f2)):
                block = gram[o1[i]:o1[i + 1], o2[j]:o2[j + 1]]
                nuc[i, j] = np.linalg.svd(block, compute_uv=False).sum()
    mean_sq = ((m1[:, None, :] - m2[None, :, :]) ** 2).sum(-1)
    return np.maximum(mean_sq + tr1[:, None] + tr2[None, :] - 2.0 * nuc, 0.0)


def label_w2(x1: Array, y1: Array, x2: Array, y2: Array) -> np.ndarray:
    """Label-to-label W2^2 (Bures closed form) between the classes of two labelled sets.

    Returns:
        ``[K1, K2]`` float64 matrix; rows follow ``np.unique(y1)``, columns ``np.unique(y2)``.
    """
    _, m1, f1 = _class_stats(_np64(x1), _labels(y1))
    _, m2, f2 = _class_stats(_np64(x2), _labels(y2))
    return _bures_w2(m1, f1, m2, f2)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``||a_i - b_j||^2`` as ``||a||^2 + ||b||^2 - 2 a b^T``, clipped at 0."""
    c = a @ b.T
    c *= -2.0
    c += (a * a).sum(1)[:, None]
    c += (b * b).sum(1)[None, :]
    return np.maximum(c, 0.0, out=c)


def _emd_cost(c: np.ndarray, num_itermax: Optional[int]) -> float:
    import ot

    n, m = c.shape
    itermax = num_itermax if num_itermax is not None else max(1_000_000, 50 * n * m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cost, log = ot.emd2(np.full(n, 1.0 / n), np.full(m, 1.0 / m), c,
                            numItermax=itermax, log=True)
    if log.get("result_code", 1) != 1:
        raise RuntimeError(f"otdd: ot.emd2 did not reach the optimum ({log.get('warning')}); "
                           f"raise num_itermax (now {itermax})")
    return float(cost)


def _softmin(eps: float, c: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``-eps log sum_j exp(h_j - c_ij / eps)`` for every row i (h holds log-weights + g/eps)."""
    return -eps * torch.logsumexp(h[None, :] - c / eps, dim=1)


def _sinkhorn_ot(c: torch.Tensor, eps: float, eps_start: float, *, symmetric: bool,
                 num_itermax: int, tol: float) -> tuple[float, bool]:
    """Entropic OT value ``<a, f> + <b, g>`` with uniform weights, log-domain, eps-scaling."""
    n, m = c.shape
    la = torch.full((n,), -math.log(n), dtype=c.dtype, device=c.device)
    lb = torch.full((m,), -math.log(m), dtype=c.dtype, device=c.device)
    f = torch.zeros(n, dtype=c.dtype, device=c.device)
    g = torch.zeros(m, dtype=c.dtype, device=c.device)
    ct = c.T
    steps = max(0, int(math.ceil(math.log(max(eps_start / eps, 1.0)) / math.log(2.0))))
    schedule = [eps * 2.0 ** (steps - k) for k in range(steps)]
    converged = False
    for it in range(steps + num_itermax):
        e = schedule[it] if it < steps else eps
        if symmetric:
            f = 0.5 * (f + _softmin(e, c, la + f / e))
        else:
            f = _softmin(e, c, lb + g / e)
            g = _softmin(e, ct, la + f / e)
        if it >= steps and (it - steps) % 10 == 9:
            gg = f if symmetric else g
            row = torch.logsumexp(lb[None, :] + (gg[None, :] - c) / eps, dim=1) + f / eps
            if float((row.exp() - 1.0).abs().max()) < tol:
                converged = True
                break
    value = 2.0 * f.mean() if symmetric else f.mean() + g.mean()
    return float(value), converged


def otdd(x1: Array, y1: Array, x2: Array, y2: Array, method: str = "exact", *,
         reg: float = 0.05, max_n: Optional[int] = None, seed: int = 0,
         num_itermax: Optional[int] = None, tol: float = 1e-2) -> float:
    """Optimal transport dataset distance between ``{(x1_i, y1_i)}`` and ``{(x2_j, y2_j)}``.

    Args:
        x1, x2: features ``[n, D]`` and ``[m, D]`` (numpy arrays or torch tensors).
        y1, y2: integer labels ``[n]`` and ``[m]``; the two label sets are separate.
        method: ``"exact"`` (``ot.emd2``) or ``"sinkhorn"`` (debiased Sinkhorn divergence).
        reg: sinkhorn only; eps = ``reg`` x the mean over set 1 of the nearest cross cost
            ``min_j C_ij`` (a lower bound of the transport cost), floored at 1e-4 x the mean
            cross cost (ours: keeps eps small relative to the distance being measured).
        max_n: subsample each set to at most this many points (:func:`subsample`, ``seed``).
        seed: subsampling seed.
        num_itermax: exact: network-simplex iteration cap (default ``max(1e6, 50 n m)``);
            sinkhorn: iterations at the final eps (default 5000).
        tol: sinkhorn only; stop when every row marginal is within ``tol`` (relative).

    Returns:
        The OTDD, ``sqrt(min <pi, C>)`` (METHOD.md, Metrics: OTDD).

    Raises:
        ValueError: unknown method or malformed inputs.
        RuntimeError: ``ot.emd2`` stopped before the optimum.
    """
    if method not in ("exact", "sinkhorn"):
        raise ValueError(f"otdd: method must be 'exact' or 'sinkhorn', got {method!r}")
    if max_n is not None:
        x1, y1, _ = subsample(x1, y1, max_n, seed)
        x2, y2, _ = subsample(x2, y2, max_n, seed)
    device = x1.device if isinstance(x1, torch.Tensor) else torch.device("cpu")
    a, b, la, lb = _np64(x1), _np64(x2), _labels(y1), _labels(y2)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"otdd: features must be [n, D] with equal D, got {a.shape}, {b.shape}")
    if len(la) != len(a) or len(lb) != len(b) or len(a) == 0 or len(b) == 0:
        raise ValueError("otdd: need one label per feature row and non-empty sets")
    inv1, m1, f1 = _class_stats(a, la)
    inv2, m2, f2 = _class_stats(b, lb)
    w12 = _bures_w2(m1, f1, m2, f2)
    if method == "exact":
        c = _sq_dists(a, b)
        c += w12[np.ix_(inv1, inv2)]
        return math.sqrt(max(_emd_cost(c, num_itermax), 0.0))

    def cost(u, iu, v, iv, w):  # the label-augmented cost C, in torch on ``device``
        u, v, w = (torch.as_tensor(t, device=device) for t in (u, v, w))
        iu, iv = torch.as_tensor(iu, device=device), torch.as_tensor(iv, device=device)
        c = (u * u).sum(1)[:, None] + (v * v).sum(1)[None, :] - 2.0 * u @ v.T
        return c.clamp_min_(0.0) + w[iu[:, None], iv[None, :]]

    cab = cost(a, inv1, b, inv2, w12)
    caa = cost(a, inv1, a, inv1, _bures_w2(m1, f1, m1, f1))
    cbb = cost(b, inv2, b, inv2, _bures_w2(m2, f2, m2, f2))
    lower = float(cab.min(dim=1).values.mean())
    eps = max(reg * lower, 1e-4 * float(cab.mean()), 1e-12)
    start = float(cab.max())
    iters = num_itermax if num_itermax is not None else 5000
    values = []
    for c, sym in ((cab, False), (caa, True), (cbb, True)):
        v, ok = _sinkhorn_ot(c, eps, start, symmetric=sym, num_itermax=iters, tol=tol)
        if not ok:
            warnings.warn(f"otdd: sinkhorn did not reach tol={tol} in {iters} iterations "
                          f"(eps={eps:.3g}); raise num_itermax or reg", ResultWarning)
        values.append(v)
    div = values[0] - 0.5 * (values[1] + values[2])
    return math.sqrt(max(div, 0.0))


def subsample(x: Array, y: Optional[Array], max_n: int, seed: int = 0
              ) -> tuple[Array, Optional[Array], np.ndarray]:
    """At most ``max_n`` rows, drawn with a fixed seed, class-stratified when labels are given.

    Each class keeps a share of ``max_n`` proportional to its size (largest remainders get
    the leftover slots); without labels the draw is uniform. Row order is preserved.

    Returns:
        ``(x[idx], y[idx], idx)``, ``idx`` a sorted int64 numpy array; all rows when
        ``len(x) <= max_n``. The caller records ``len(idx)`` as the sample size.
    """
    n = len(x)
    if max_n < 1:
        raise ValueError(f"subsample: max_n must be >= 1, got {max_n}")
    if n <= max_n:
        idx = np.arange(n, dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        if y is None:
            idx = np.sort(rng.choice(n, size=max_n, replace=False))
        else:
            classes, inv, counts = np.unique(_labels(y), return_inverse=True, return_counts=True)
            share = counts * (max_n / n)
            take = np.floor(share).astype(np.int64)
            order = np.argsort(-(share - take), kind="stable")
            take[order[: max_n - int(take.sum())]] += 1
            parts = [rng.choice(np.flatnonzero(inv == k), size=int(take[k]), replace=False)
                     for k in range(len(classes))]
            idx = np.sort(np.concatenate(parts)).astype(np.int64)
    def take(a):
        return a[torch.from_numpy(idx).to(a.device)] if isinstance(a, torch.Tensor) else np.asarray(a)[idx]

    return take(x), None if y is None else take(y), idx


def _normalize(f: Array) -> torch.Tensor:
    t = f if isinstance(f, torch.Tensor) else torch.from_numpy(np.asarray(f))
    return torch.nn.functional.normalize(t.detach().to(torch.float64), dim=1)


def l2_distance(f0: Array, ft: Array) -> float:
    """Mean over samples of ``||normalize(ft_i) - normalize(f0_i)||`` (METHOD.md, L2 feature
    distance); rows of ``f0`` and ``ft`` are the same images."""
    a = _normalize(f0)
    b = _normalize(ft).to(a.device)
    if a.shape != b.shape:
        raise ValueError(f"l2_distance: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((b - a).norm(dim=1).mean())


def feature_distances(f0: Array, ft: Array, y: Array, *, method: str = "auto",
                      max_n: int = 1000, seed: int = 0) -> dict:
    """L2 and OTDD between ``{(f0(x), y)}`` and ``{(ft(x), y)}`` of the same images.

    Features are L2-normalised first. L2 uses every sample; OTDD uses at most ``max_n``,
    drawn by :func:`subsample` with the same indices for both sets.

    Args:
        f0: features of the pre-trained encoder ``[n, D]``.
        ft: features after experience t ``[n, D]``, same images in the same order.
        y: labels ``[n]``.
        method: ``"exact"``, ``"sinkhorn"`` or ``"auto"`` (exact when n <= 2000).
        max_n: OTDD sample cap.
        seed: subsampling seed.

    Returns:
        ``{"l2", "otdd", "n", "otdd_method"}``; ``n`` is the OTDD sample size.
    """
    if len(_labels(y)) != len(f0):
        raise ValueError(f"feature_distances: {len(f0)} feature rows but {len(_labels(y))} labels")
    l2 = l2_distance(f0, ft)
    a, b = _normalize(f0), _normalize(ft)
    a_s, y_s, idx = subsample(a, y, max_n, seed)
    b_s, n = b[torch.from_numpy(idx).to(b.device)], len(idx)
    method = ("exact" if n <= 2000 else "sinkhorn") if method == "auto" else method
    return {"l2": l2, "otdd": otdd(a_s, y_s, b_s, y_s, method), "n": n, "otdd_method": method}
