"""OTDD and L2 feature distance (METHOD.md, Metrics): closed forms and a brute-force reference."""
import math

import numpy as np
import ot
import pytest
import scipy.linalg
import torch

from proxyfda_cl.metrics.otdd import feature_distances, l2_distance, label_w2, otdd, subsample


def brute_otdd(x1, y1, x2, y2):
    """METHOD.md's OTDD spelled out: scipy sqrtm Bures, all-pairs cost loop, ot.emd2."""
    def stats(x, y):
        out = {}
        for c in np.unique(y):
            xc = x[y == c]
            cov = np.cov(xc, rowvar=False, ddof=1) if len(xc) > 1 else np.zeros((x.shape[1],) * 2)
            out[c] = (xc.mean(0), np.atleast_2d(cov))
        return out

    s1, s2 = stats(x1, y1), stats(x2, y2)
    w = {}
    for c, (m1, cov1) in s1.items():
        root = scipy.linalg.sqrtm(cov1).real
        for d, (m2, cov2) in s2.items():
            cross = scipy.linalg.sqrtm(root @ cov2 @ root).real
            w[c, d] = ((m1 - m2) ** 2).sum() + np.trace(cov1 + cov2 - 2 * cross)
    cost = np.empty((len(x1), len(x2)))
    for i in range(len(x1)):
        for j in range(len(x2)):
            cost[i, j] = ((x1[i] - x2[j]) ** 2).sum() + w[y1[i], y2[j]]
    n, m = cost.shape
    return math.sqrt(ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), cost, numItermax=10**7))


def blobs(rng, n, d, k, shift=0.0):
    y = rng.integers(0, k, n)
    return rng.standard_normal((k, d))[y] + rng.standard_normal((n, d)) + shift, y


def test_identical_sets_give_zero():
    rng = np.random.default_rng(0)
    x, y = blobs(rng, 80, 6, 3)
    assert otdd(x, y, x, y) < 1e-6


def test_symmetric():
    rng = np.random.default_rng(1)
    x1, y1 = blobs(rng, 70, 5, 3)
    x2, y2 = blobs(rng, 60, 5, 4)
    assert otdd(x1, y1, x2, y2) == pytest.approx(otdd(x2, y2, x1, y1), rel=1e-9)


def test_grows_when_one_class_moves():
    rng = np.random.default_rng(2)
    x, y = blobs(rng, 90, 4, 3)
    values = []
    for s in (0.0, 0.5, 1.0, 2.0):
        x2 = x.copy()
        x2[y == 0] += s
        values.append(otdd(x, y, x2, y))
    assert values[0] < 1e-6
    assert all(b > a + 1e-3 for a, b in zip(values, values[1:]))


def test_shifted_copy_closed_form():
    # Every point and class mean moves by s: C_ii = 2 ||s||^2 and the identity is optimal.
    rng = np.random.default_rng(3)
    x, y = blobs(rng, 60, 5, 3)
    assert otdd(x, y, x + 0.3, y) == pytest.approx(math.sqrt(2 * 5 * 0.09), rel=1e-9)


def test_label_w2_one_dimensional_by_hand():
    # 1-D Gaussians: W2^2 = (m1 - m2)^2 + (s1 - s2)^2. Class [0, 2]: mean 1, var 2;
    # class [1, 5]: mean 3, var 8 -> 4 + (sqrt2 - sqrt8)^2 = 6.
    w = label_w2(np.array([[0.0], [2.0]]), [0, 0], np.array([[1.0], [5.0]]), [7, 7])
    assert w.shape == (1, 1)
    assert w[0, 0] == pytest.approx(6.0, rel=1e-12)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # sqrtm of singular covariances
@pytest.mark.parametrize("n,d,k", [(90, 3, 3),    # n_c ~ 30 > D: eigendecomposition route
                                   (60, 40, 3),   # n_c ~ 20 < D: low-rank factor route
                                   (50, 8, 4)])   # n_c ~ 12 > D = 8, mixed with label shift
def test_matches_brute_force(n, d, k):
    rng = np.random.default_rng(n + d)
    x1, y1 = blobs(rng, n, d, k)
    x2, y2 = blobs(rng, n + 7, d, k + 1, shift=0.4)
    y2 = y2 * 3 + 5                                    # a separate label set
    x2[0], y2[0] = rng.standard_normal(d), 100         # a single-sample class: covariance 0
    ours = otdd(x1, y1, x2, y2)
    assert ours == pytest.approx(brute_otdd(x1, y1, x2, y2), rel=1e-6)


def test_torch_inputs_match_numpy():
    rng = np.random.default_rng(4)
    x1, y1 = blobs(rng, 50, 6, 3)
    x2, y2 = blobs(rng, 40, 6, 3)
    ref = otdd(x1, y1, x2, y2)
    got = otdd(torch.tensor(x1), torch.tensor(y1), torch.tensor(x2), torch.tensor(y2))
    assert got == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("case", ["fresh", "class_moved"])
def test_sinkhorn_close_to_exact(case):
    rng = np.random.default_rng(5)
    x1, y1 = blobs(rng, 120, 8, 4)
    if case == "fresh":
        x2, y2 = blobs(rng, 120, 8, 4)
    else:
        x2, y2 = x1.copy(), y1
        x2[y1 == 0] += 1.0
    exact = otdd(x1, y1, x2, y2, "exact")
    approx = otdd(torch.tensor(x1), torch.tensor(y1), torch.tensor(x2), torch.tensor(y2), "sinkhorn")
    assert abs(approx - exact) / exact < 0.05


def test_sinkhorn_identical_is_zero():
    rng = np.random.default_rng(6)
    x, y = blobs(rng, 60, 4, 3)
    assert otdd(x, y, x, y, "sinkhorn") < 1e-6


def test_exact_raises_when_not_optimal():
    rng = np.random.default_rng(7)
    x1, y1 = blobs(rng, 60, 4, 3)
    x2, y2 = blobs(rng, 60, 4, 3)
    with pytest.raises(RuntimeError, match="num_itermax"):
        otdd(x1, y1, x2, y2, num_itermax=5)


def test_bad_method():
    with pytest.raises(ValueError, match="method"):
        otdd(np.zeros((2, 2)), [0, 1], np.zeros((2, 2)), [0, 1], "greedy")


def test_l2_distance_by_hand():
    f0 = np.array([[1.0, 0.0], [0.0, 2.0]])
    ft = np.array([[0.0, 3.0], [0.0, 5.0]])
    # normalised rows: [1,0] vs [0,1] -> sqrt 2; [0,1] vs [0,1] -> 0
    assert l2_distance(f0, ft) == pytest.approx(math.sqrt(2) / 2, rel=1e-12)
    assert l2_distance(torch.tensor(f0), torch.tensor(f0) * 7) == pytest.approx(0.0, abs=1e-12)


def test_subsample_deterministic_and_stratified():
    rng = np.random.default_rng(8)
    y = np.repeat([0, 1, 2], [500, 300, 200])
    x = rng.standard_normal((1000, 3))
    xs, ys, idx = subsample(x, y, 100, seed=3)
    _, _, idx2 = subsample(x, y, 100, seed=3)
    _, _, idx3 = subsample(x, y, 100, seed=4)
    np.testing.assert_array_equal(idx, idx2)
    assert not np.array_equal(idx, idx3)
    assert len(idx) == 100 and len(np.unique(idx)) == 100 and np.all(np.diff(idx) > 0)
    assert np.bincount(ys).tolist() == [50, 30, 20]
    np.testing.assert_array_equal(xs, x[idx])
    xt, yt, idxt = subsample(torch.tensor(x), torch.tensor(y), 100, seed=3)
    np.testing.assert_array_equal(idxt, idx)
    assert torch.equal(yt, torch.tensor(ys))
    _, _, all_idx = subsample(x, y, 5000)
    np.testing.assert_array_equal(all_idx, np.arange(1000))


def test_feature_distances_entry():
    rng = np.random.default_rng(9)
    f0, y = blobs(rng, 300, 8, 3)
    ft = f0 + 0.3 * rng.standard_normal(f0.shape)
    out = feature_distances(torch.tensor(f0), torch.tensor(ft), torch.tensor(y), max_n=120)
    assert set(out) == {"l2", "otdd", "n", "otdd_method"}
    assert out["n"] == 120 and out["otdd_method"] == "exact"
    assert out["l2"] == pytest.approx(l2_distance(f0, ft), rel=1e-12)
    # the same images on both sides, features normalised first
    _, ys, idx = subsample(f0, y, 120, 0)
    norm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    assert out["otdd"] == pytest.approx(otdd(norm(f0)[idx], ys, norm(ft)[idx], ys), rel=1e-9)
    scaled = feature_distances(f0, 4.0 * ft, y, max_n=120)
    assert scaled["otdd"] == pytest.approx(out["otdd"], rel=1e-9)
    same = feature_distances(f0, f0, y, max_n=120)
    assert same["l2"] < 1e-12 and same["otdd"] < 1e-6
