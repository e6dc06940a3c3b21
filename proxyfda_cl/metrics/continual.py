"""Stream metrics from the accuracy matrices of a run (METHOD.md, Metrics).

Inputs follow the run record (``proxyfda_cl.core.record``): ``R`` is T x T with ``R[t][j]`` the
accuracy of task j after experience t+1 (0-based row t); ``P`` is (T+1) x (T + #probes) with
row 0 the pre-trained encoder and columns = stream tasks, then probe datasets. Below,
experiences and tasks are 1-based as in METHOD.md. Values are fractions in [0, 1]; a metric
with nothing to average over is ``None``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ..core.errors import DataError

KEYS = ("a_lp", "delta_lp", "fwt", "bwt", "forgetting")


def _mean(values: Sequence[float]) -> Optional[float]:
    """Mean as a Python float; ``None`` when empty or not finite (a missing entry)."""
    if len(values) == 0:
        return None
    m = float(np.mean(values))
    return m if math.isfinite(m) else None


def _as_matrix(m, name: str, rows: int, cols: int, exact: bool, n_tasks: int) -> np.ndarray:
    """``m`` as a float array (``None`` entries become NaN), shape-checked."""
    try:
        a = np.array([[np.nan if v is None else v for v in row] for row in m], dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{name}: not a numeric matrix; pass a list of rows of numbers") from None
    if a.ndim != 2 or a.shape[0] != rows or (a.shape[1] != cols if exact else a.shape[1] < cols):
        want = f"{rows} x {cols}" if exact else f"{rows} rows and at least {cols} columns"
        raise DataError(f"{name}: shape {a.shape}, expected {want} for n_tasks={n_tasks}")
    return a


def a_lp(P: np.ndarray, t: int) -> Optional[float]:
    """``A_LP(t) = P[t][task t]``: downstream probe accuracy on the task just trained."""
    return _mean([P[t, t - 1]])


def delta_lp(P: np.ndarray, t: int) -> Optional[float]:
    """``Δ_LP(t) = mean_{d not yet trained} (P[t][d] - P[0][d])`` over the stream tasks after
    t and every probe dataset (0-based columns ``t..``)."""
    return _mean([P[t, d] - P[0, d] for d in range(t, P.shape[1])])


def fwt(P: np.ndarray, t: int, n_tasks: int) -> Optional[float]:
    """Transfer to not-yet-seen tasks accumulated through experience t:
    ``mean_{1<j<=min(t+1, T)} (P[j-1][j] - P[0][j])``; at ``t = T`` this is METHOD.md's FWT."""
    return _mean([P[j - 1, j - 1] - P[0, j - 1] for j in range(2, min(t + 1, n_tasks) + 1)])


def bwt(R: np.ndarray, t: int) -> Optional[float]:
    """``BWT(t) = mean_{j<t} (R[t][j] - R[j][j])`` (METHOD.md's BWT at ``t = T``)."""
    return _mean([R[t - 1, j - 1] - R[j - 1, j - 1] for j in range(1, t)])


def forgetting(R: np.ndarray, t: int) -> Optional[float]:
    """``F(t) = mean_{j<t} (max_{j<=t'<t} R[t'][j] - R[t][j])`` (METHOD.md's Forgetting at
    ``t = T``)."""
    return _mean([R[j - 1:t - 1, j - 1].max() - R[t - 1, j - 1] for j in range(1, t)])


def compute_metrics(R, P, n_tasks: int) -> dict:
    """All stream metrics of one run, per experience and final (METHOD.md, Metrics).

    Args:
        R: T x T task-accuracy matrix (list of lists or array), row t = after experience t+1.
        P: (T+1) x (T + #probes) linear-probe matrix, row 0 = pre-trained.
        n_tasks: T, the number of experiences.

    Returns:
        ``{"final": {...}, "per_experience": [{...}] * T}`` with keys ``a_lp``,
        ``delta_lp``, ``fwt``, ``bwt``, ``forgetting`` (Python floats or ``None``).
        Final ``fwt``, ``bwt`` and ``forgetting`` are METHOD.md's formulas at T. Final
        ``a_lp`` and ``delta_lp`` are the means over the experiences where they are defined
        (ours: the average over the stream; for a one-experience stream this is the paper's
        per-dataset number).

    Raises:
        DataError: a matrix has the wrong shape or non-numeric entries.
    """
    T = int(n_tasks)
    if T < 1:
        raise DataError(f"n_tasks={n_tasks}: a stream needs at least one experience")
    R = _as_matrix(R, "R", T, T, True, T)
    P = _as_matrix(P, "P", T + 1, T, False, T)
    per = [{"a_lp": a_lp(P, t), "delta_lp": delta_lp(P, t), "fwt": fwt(P, t, T),
            "bwt": bwt(R, t), "forgetting": forgetting(R, t)} for t in range(1, T + 1)]
    final = {
        "a_lp": _mean([e["a_lp"] for e in per if e["a_lp"] is not None]),
        "delta_lp": _mean([e["delta_lp"] for e in per if e["delta_lp"] is not None]),
        "fwt": per[-1]["fwt"],
        "bwt": per[-1]["bwt"],
        "forgetting": per[-1]["forgetting"],
    }
    return {"final": final, "per_experience": per}
