"""Time exact OTDD on 2000 vs 2000 points, D=512, 10 classes (median of 5 runs).

Cases: (a) a shifted copy (x2 = x1 + 0.1, same labels), where the OTDD is known in closed
form, sqrt(2 * 0.01 * D) = 3.2; (b) a fresh draw of points and labels. The reference is the
plain route: 512 x 512 eigendecompositions for every Bures term, then ``ot.emd2``.

    python bench/bench_otdd.py [--n 2000] [--dim 512] [--classes 10] [--repeats 5]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import numpy as np
import ot

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from proxyfda_cl.metrics import otdd as otdd_mod  # noqa: E402
from proxyfda_cl.metrics.otdd import otdd  # noqa: E402


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    lam, vec = np.linalg.eigh(s)
    return (vec * np.sqrt(np.clip(lam, 0.0, None))) @ vec.T


def reference_otdd(x1, y1, x2, y2) -> float:
    """METHOD.md's OTDD with eigendecomposition square roots of D x D matrices."""
    def stats(x, y):
        return {c: (x[y == c].mean(0), np.cov(x[y == c], rowvar=False, ddof=1)) for c in np.unique(y)}
    s1, s2 = stats(x1, y1), stats(x2, y2)
    roots = {c: _psd_sqrt(cov) for c, (_, cov) in s1.items()}
    c1, c2 = sorted(s1), sorted(s2)
    w = np.empty((len(c1), len(c2)))
    for i, a in enumerate(c1):
        m1, cov1 = s1[a]
        for j, b in enumerate(c2):
            m2, cov2 = s2[b]
            inner = roots[a] @ cov2 @ roots[a]
            lam = np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)
            w[i, j] = ((m1 - m2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * np.sqrt(lam).sum()
    c = np.maximum((x1 ** 2).sum(1)[:, None] + (x2 ** 2).sum(1)[None] - 2 * x1 @ x2.T, 0.0)
    c += w[np.searchsorted(c1, y1)][:, np.searchsorted(c2, y2)]
    n, m = c.shape
    return math.sqrt(ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), c, numItermax=50 * n * m))


def draw(rng, n, d, k):
    y = rng.integers(0, k, n)
    centres = rng.standard_normal((k, d)) * 0.5
    return centres[y] + rng.standard_normal((n, d)), y


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def breakdown(x1, y1, x2, y2, repeats):
    """Median seconds of the three stages of ``otdd(..., "exact")``."""
    parts = {"bures": [], "cost": [], "emd": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        i1, m1, f1 = otdd_mod._class_stats(x1, y1)
        i2, m2, f2 = otdd_mod._class_stats(x2, y2)
        w = otdd_mod._bures_w2(m1, f1, m2, f2)
        t1 = time.perf_counter()
        c = otdd_mod._sq_dists(x1, x2)
        c += w[np.ix_(i1, i2)]
        t2 = time.perf_counter()
        otdd_mod._emd_cost(c, None)
        t3 = time.perf_counter()
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
            parts[key].append(dt)
    return {k: float(np.median(v)) for k, v in parts.items()}


def main() -> int:
    """Run both cases, print the markdown table; exit 1 when values disagree."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    x1, y1 = draw(rng, args.n, args.dim, args.classes)
    cases = {"(a) shifted copy": (x1 + 0.1, y1), "(b) fresh draw": draw(rng, args.n, args.dim, args.classes)}
    print(f"n={args.n} D={args.dim} classes={args.classes} repeats={args.repeats} "
          f"cpus={os.cpu_count()} numpy={np.__version__} POT={ot.__version__} {platform.python_version()}\n")
    print("| case | implementation | median s | OTDD | stages (bures / cost / emd) s |")
    print("|---|---|---|---|---|")
    ok = True
    for name, (x2, y2) in cases.items():
        t_ours, v_ours = timed(lambda: otdd(x1, y1, x2, y2, "exact"), args.repeats)
        st = breakdown(x1, y1, x2, y2, args.repeats)
        print(f"| {name} | otdd (factor Bures) | {t_ours:.3f} | {v_ours:.6f} | "
              f"{st['bures']:.3f} / {st['cost']:.3f} / {st['emd']:.3f} |")
        reps = args.repeats if name.startswith("(a)") else 1
        t_ref, v_ref = timed(lambda: reference_otdd(x1, y1, x2, y2), reps)
        print(f"| {name} | reference (eigh Bures), {reps} run(s) | {t_ref:.3f} | {v_ref:.6f} | |")
        rel = abs(v_ours - v_ref) / max(abs(v_ref), 1e-12)
        ok &= rel < 1e-5  # the reference's clipped eigenvalues of rank-deficient covariances add ~1e-6
        print(f"| {name} | relative difference ours vs reference | | {rel:.2e} | |")
        if name.startswith("(a)"):
            closed = math.sqrt(2 * 0.01 * args.dim)
            rel_c = abs(v_ours - closed) / closed
            ok &= rel_c < 1e-9
            print(f"| {name} | closed form sqrt(2*0.01*D); ours rel. error | | {closed:.6f}; {rel_c:.1e} | |")
    print("\nvalues agree" if ok else "\nVALUES DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
