"""Stream metrics on hand-made matrices; expected values worked out by hand below."""
import numpy as np
import pytest

from proxyfda_cl.metrics.continual import KEYS, compute_metrics
from proxyfda_cl.core.errors import DataError


def approx(d):
    return {k: (None if v is None else pytest.approx(v, abs=1e-12)) for k, v in d.items()}


def test_one_experience():
    R = [[0.9]]
    P = [[0.5, 0.3, 0.6],   # pre-trained: task A, probes X, Y
         [0.8, 0.25, 0.5]]
    out = compute_metrics(R, P, 1)
    # A_LP = 0.8; Δ_LP over probes = ((0.25-0.3) + (0.5-0.6)) / 2 = -0.075; FWT/BWT/F undefined
    expected = {"a_lp": 0.8, "delta_lp": -0.075, "fwt": None, "bwt": None, "forgetting": None}
    assert out["per_experience"] == [approx(expected)]
    assert out["final"] == approx(expected)


R3 = [[0.90, 0.00, 0.00],
      [0.80, 0.70, 0.00],
      [0.60, 0.75, 0.95]]
P3 = [[0.50, 0.40, 0.30, 0.20],  # columns: tasks 1, 2, 3, probe
      [0.90, 0.45, 0.32, 0.18],
      [0.85, 0.80, 0.35, 0.15],
      [0.80, 0.78, 0.90, 0.10]]


def test_three_experiences_with_probe():
    out = compute_metrics(R3, P3, 3)
    per = [
        # t=1: Δ over tasks 2, 3 and probe: (0.05 + 0.02 - 0.02)/3; FWT: P[1][2]-P[0][2] = 0.05
        {"a_lp": 0.90, "delta_lp": 0.05 / 3, "fwt": 0.05, "bwt": None, "forgetting": None},
        # t=2: Δ over task 3 and probe: (0.05 - 0.05)/2 = 0; FWT: (0.05 + (0.35-0.30))/2;
        # BWT: 0.80-0.90; F: 0.90-0.80
        {"a_lp": 0.80, "delta_lp": 0.0, "fwt": 0.05, "bwt": -0.10, "forgetting": 0.10},
        # t=3: Δ over probe: 0.10-0.20; BWT: ((0.60-0.90) + (0.75-0.70))/2;
        # F: ((max(0.90, 0.80) - 0.60) + (0.70 - 0.75))/2
        {"a_lp": 0.90, "delta_lp": -0.10, "fwt": 0.05, "bwt": -0.125, "forgetting": 0.125},
    ]
    assert out["per_experience"] == [approx(p) for p in per]
    final = {"a_lp": (0.90 + 0.80 + 0.90) / 3, "delta_lp": (0.05 / 3 + 0.0 - 0.10) / 3,
             "fwt": 0.05, "bwt": -0.125, "forgetting": 0.125}
    assert out["final"] == approx(final)
    assert all(type(v) is float for v in out["final"].values())


def test_three_experiences_without_probes_numpy_input():
    R = np.array([[0.70, 0.99, 0.20],  # R[1][2] before task 2 was learnt: never counted
                  [0.50, 0.90, 0.30],
                  [0.65, 0.60, 0.80]])
    P = np.array([[0.40, 0.30, 0.50],
                  [0.75, 0.20, 0.60],
                  [0.70, 0.85, 0.45],
                  [0.72, 0.70, 0.88]])
    out = compute_metrics(R, P, 3)
    per = [
        # t=1: Δ over tasks 2, 3: ((0.20-0.30) + (0.60-0.50))/2 = 0; FWT: 0.20-0.30
        {"a_lp": 0.75, "delta_lp": 0.0, "fwt": -0.10, "bwt": None, "forgetting": None},
        # t=2: Δ over task 3: 0.45-0.50; FWT: (-0.10 + (0.45-0.50))/2; BWT/F: 0.50 vs 0.70
        {"a_lp": 0.85, "delta_lp": -0.05, "fwt": -0.075, "bwt": -0.20, "forgetting": 0.20},
        # t=3: nothing left untrained; BWT: ((0.65-0.70) + (0.60-0.90))/2;
        # F: ((max(0.70, 0.50) - 0.65) + (0.90 - 0.60))/2 -- the max skips rows before task j
        {"a_lp": 0.88, "delta_lp": None, "fwt": -0.075, "bwt": -0.175, "forgetting": 0.175},
    ]
    assert out["per_experience"] == [approx(p) for p in per]
    final = {"a_lp": (0.75 + 0.85 + 0.88) / 3, "delta_lp": (0.0 - 0.05) / 2,
             "fwt": -0.075, "bwt": -0.175, "forgetting": 0.175}
    assert out["final"] == approx(final)
    assert list(out["final"]) == list(KEYS)


def test_forgetting_uses_best_earlier_row():
    # task 1 peaks after experience 2 (0.95), not when learnt (0.90): F counts from the peak
    R = [[0.90, 0, 0], [0.95, 0.8, 0], [0.85, 0.8, 0.9]]
    P = [[0.5] * 3] * 4
    out = compute_metrics(R, P, 3)["final"]
    assert out["forgetting"] == pytest.approx(((0.95 - 0.85) + 0.0) / 2)
    assert out["bwt"] == pytest.approx(((0.85 - 0.90) + 0.0) / 2)


def test_shape_errors_and_missing_entries():
    with pytest.raises(DataError, match="R: shape"):
        compute_metrics([[0.9, 0.1]], [[0.5], [0.6]], 1)
    with pytest.raises(DataError, match="P: shape"):
        compute_metrics([[0.9]], [[0.5]], 1)
    with pytest.raises(DataError, match="numeric"):
        compute_metrics([["a"]], [[0.5], [0.6]], 1)
    # a missing probe entry makes only the metrics that read it undefined
    out = compute_metrics([[0.9]], [[0.5, None], [0.8, 0.4]], 1)
    assert out["final"]["a_lp"] == pytest.approx(0.8) and out["final"]["delta_lp"] is None
