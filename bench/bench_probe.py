"""Time the linear probe against scikit-learn on the same features and protocol.

Features: 10,000 x 512 train (default) plus 2,000 test, 10 classes with overlapping
Gaussian clusters (not linearly separable). Both probes use the same L2-normalised features, the
same stratified 10% held-out split, the same penalty grid (our ``weight_decay`` mapped to
scikit-learn's ``C = 1 / (weight_decay * n_fit)`` for every fit) and the same tie-break, then
refit on the full train split. Times are medians over ``--repeats`` runs of the whole protocol.

    python bench/bench_probe.py [--threads 2] [--repeats 5] [--n 10000] [--dim 512]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from proxyfda_cl.metrics.probe import DEFAULT_GRID, fit_probe, stratified_split


def make_features(n: int, dim: int, n_classes: int, sep: float, seed: int = 0):
    """Gaussian clusters whose means are ``sep`` apart on average: overlapping classes."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n_classes, dim, generator=g) * sep / (2 * dim) ** 0.5
    y = torch.randint(0, n_classes, (n,), generator=g)
    x = means[y] + torch.randn(n, dim, generator=g) / dim ** 0.5
    x = x + 0.5 * torch.randn(dim, generator=g) / dim ** 0.5  # shared offset, as real features have
    return x, y


def sklearn_probe(train_x, train_y, test_x, test_y, *, grid=DEFAULT_GRID, val_fraction=0.1,
                  seed=0, max_iter=200):
    """The same protocol as ``fit_probe`` with scikit-learn's LogisticRegression (lbfgs)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    xtr = F.normalize(train_x.float(), dim=1).numpy().astype(np.float64)
    xte = F.normalize(test_x.float(), dim=1).numpy().astype(np.float64)
    ytr, yte = train_y.numpy(), test_y.numpy()
    fit_idx, val_idx = (i.numpy() for i in stratified_split(train_y, val_fraction, seed))
    lams = sorted(grid, reverse=True)
    val_acc, sols, prev, n_iter = {}, {}, None, []

    def fit(x, y, lam, init):
        clf = LogisticRegression(C=1.0 / (lam * len(y)), max_iter=max_iter, warm_start=True)
        if init is not None:  # warm start, as fit_probe does
            clf.coef_, clf.intercept_ = init.coef_.copy(), init.intercept_.copy()
            clf.classes_ = init.classes_
        clf.fit(x, y)
        n_iter.append(int(clf.n_iter_.max()))
        return clf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for lam in lams:
            prev = sols[lam] = fit(xtr[fit_idx], ytr[fit_idx], lam, prev)
            val_acc[lam] = float((prev.predict(xtr[val_idx]) == ytr[val_idx]).mean())
        best = max(lams, key=lambda lam: val_acc[lam])
        clf = fit(xtr, ytr, best, sols[best])
    return float((clf.predict(xte) == yte).mean()), best, n_iter


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="train features")
    ap.add_argument("--n-test", type=int, default=2_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--sep", type=float, default=0.15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    except ImportError:
        pass

    x, y = make_features(args.n + args.n_test, args.dim, args.classes, args.sep)
    n_tr = args.n
    data = (x[:n_tr], y[:n_tr], x[n_tr:], y[n_tr:])

    t_ours, res = timed(lambda: fit_probe(*data), args.repeats)
    t_sk, (acc_sk, best_sk, n_iter) = timed(lambda: sklearn_probe(*data), args.repeats)
    print(f"features: {args.dim}-d, {args.classes} classes, sep={args.sep}; "
          f"train {n_tr}, test {args.n_test}; {args.threads} threads; "
          f"median of {args.repeats} runs; grid {list(DEFAULT_GRID)}\n")
    print("| probe | time (s) | test accuracy | chosen weight_decay |")
    print("|---|---|---|---|")
    print(f"| proxyfda_cl fit_probe (torch L-BFGS) | {t_ours:.2f} | {res.accuracy:.4f} "
          f"| {res.weight_decay:g} |")
    print(f"| scikit-learn LogisticRegression (lbfgs) | {t_sk:.2f} | {acc_sk:.4f} | {best_sk:g} |")
    print(f"\nscikit-learn iterations per fit (grid strongest->weakest, then refit): {n_iter}")


if __name__ == "__main__":
    main()
