"""The one bootstrap of the analysis: percentile intervals through ``scipy.stats.bootstrap``.

Samples given together are resampled together (``paired``): the paired differences of a
comparison are one sample, the (x, y) points of a correlation two. Every call draws from its
own generator seeded with ``seed``, so an interval depends only on its own data: the same
strategy gets the same interval whichever other strategies share the folder.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import numpy as np
from scipy import stats

__all__ = ["bootstrap_interval"]


def bootstrap_interval(samples: Sequence[np.ndarray], statistic: Callable, *, n_boot: int,
                       seed: int = 0, ci: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``samples`` resampled in pairs.

    Args:
        samples: equal-length 1-D arrays; resample ``i`` draws the same indices from each.
        statistic: ``statistic(*samples, axis=-1)``, vectorised over the last axis; it may
            return NaN for a resample where it is undefined (a constant side of a
            correlation): those resamples are left out of the interval.
        n_boot: resamples; 0 gives no interval.
        seed: the resampling seed.
        ci: interval coverage, e.g. 0.95.
    Returns:
        ``(low, high)``; NaN when there are fewer than 2 observations, ``n_boot`` is 0, or no
        resample gave a finite value.
    """
    data = tuple(np.asarray(s, dtype=np.float64).ravel() for s in samples)
    if n_boot <= 0 or len(data[0]) < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():
        # NaN resamples are handled below; scipy's warning about them names its BCa method
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(data, statistic, paired=len(data) > 1, vectorized=True,
                              n_resamples=int(n_boot), confidence_level=ci,
                              method="percentile", rng=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    dist = dist[np.isfinite(dist)]
    if len(dist) == 0:
        return math.nan, math.nan
    q = 100.0 * (1.0 - ci) / 2.0
    lo, hi = np.percentile(dist, [q, 100.0 - q])
    return float(lo), float(hi)
