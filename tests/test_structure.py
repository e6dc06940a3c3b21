"""knn_overlap on hand-made features: kept, rotated, shuffled, and a hand-counted case."""
import pytest
import torch

from proxyfda_cl.metrics.structure import knn_indices, knn_overlap


def _feats(n=200, d=16, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_identical_features_keep_every_neighbourhood():
    x = _feats()
    assert knn_overlap(x, x.clone(), k=8) == 1.0


def test_rotation_and_rescaling_keep_every_neighbourhood():
    x = _feats()
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1)))
    scale = torch.rand(200, 1, generator=torch.Generator().manual_seed(2)) + 0.5
    assert knn_overlap(x, (x @ q) * scale, k=8) == pytest.approx(1.0)


def test_shuffled_features_overlap_about_k_over_n():
    n, k = 400, 8
    x = _feats(n)
    y = x[torch.randperm(n, generator=torch.Generator().manual_seed(3))]
    expected = k / (n - 1)
    assert abs(knn_overlap(x, y, k) - expected) < 3 * expected


def test_hand_counted_overlap():
    # Unit vectors at 0, 10, 25 and 200 degrees.
    ang = torch.deg2rad(torch.tensor([0.0, 10.0, 25.0, 200.0]))
    ref = torch.stack([ang.cos(), ang.sin()], 1)
    # Move point 3 to -3 degrees: the 1-NN of point 0 becomes 3 (was 1); the others keep theirs.
    moved = ref.clone()
    moved[3] = torch.tensor([torch.cos(torch.deg2rad(torch.tensor(-3.0))),
                             torch.sin(torch.deg2rad(torch.tensor(-3.0)))])
    a, b = knn_indices(ref, 1)[:, 0].tolist(), knn_indices(moved, 1)[:, 0].tolist()
    assert a == [1, 0, 1, 0] and b == [3, 0, 1, 0]
    assert knn_overlap(ref, moved, 1) == pytest.approx(3 / 4)


def test_chunked_rows_agree_with_one_block():
    x = _feats(50)
    assert torch.equal(knn_indices(x, 5, chunk=7), knn_indices(x, 5, chunk=1024))


def test_errors_name_the_problem():
    x = _feats(10)
    with pytest.raises(ValueError, match="differ in size"):
        knn_overlap(x, x[:9], 3)
    with pytest.raises(ValueError, match="k < n"):
        knn_overlap(x, x, 10)
