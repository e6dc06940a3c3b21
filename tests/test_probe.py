"""Linear probe: agreement with scikit-learn, behaviour of the penalty grid, feature extraction."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from proxyfda_cl.metrics.probe import (ProbeResult, extract_features, fit_probe,
                                        stratified_split)
from proxyfda_cl.core.errors import ConfigError, DataError


def gaussian_classes(n, dim, n_classes, sep, seed, offset=0.5):
    """Overlapping Gaussian clusters plus a shared offset (as real features have)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n_classes, dim, generator=g) * sep
    y = torch.arange(n) % n_classes
    x = means[y] + torch.randn(n, dim, generator=g) + offset * torch.ones(dim)
    return x, y


@pytest.fixture(scope="module")
def overlapping():
    x, y = gaussian_classes(2800, 48, 5, 0.35, seed=0)
    return x[:1800], y[:1800], x[1800:], y[1800:]


def noisy_classes(n, dim, n_classes, sep, seed, flip):
    """Overlapping clusters; a ``flip`` share of labels redrawn at random (clean ones too)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n_classes, dim, generator=g) * sep
    y = torch.arange(n) % n_classes
    x = means[y] + torch.randn(n, dim, generator=g) + 0.5
    noisy = y.clone()
    m = torch.rand(n, generator=g) < flip
    noisy[m] = torch.randint(0, n_classes, (int(m.sum()),), generator=g)
    return x, noisy, y


@pytest.mark.parametrize("wd", [1e-4, 3e-2])
def test_matches_sklearn_same_penalty(wd):
    """Here accuracy moves by 2+ points when sklearn's C is off by 2x: the mapping matters."""
    from sklearn.linear_model import LogisticRegression

    x, noisy, clean = noisy_classes(1400, 200, 4, 0.15, seed=0, flip=0.2)
    xtr, ytr, xte, yte = x[:600], noisy[:600], x[600:], clean[600:]
    ours = fit_probe(xtr, ytr, xte, yte, grid=(wd,))
    # ours minimises mean CE + wd/2 ||W||^2; sklearn 0.5||W||^2 + C * sum CE: C = 1/(wd n)
    clf = LogisticRegression(C=1.0 / (wd * len(ytr)), max_iter=2000, tol=1e-6)
    clf.fit(F.normalize(xtr, dim=1).double().numpy(), ytr.numpy())
    sk = float((clf.predict(F.normalize(xte, dim=1).double().numpy()) == yte.numpy()).mean())
    assert 0.4 < sk < 0.9  # overlapping classes: neither chance nor separable
    assert abs(ours.accuracy - sk) <= 0.01
    assert ours.weight_decay == wd and ours.n_train == 600 and ours.n_test == 800


def test_separable_near_one_and_random_labels_near_chance():
    x, y = gaussian_classes(1500, 32, 4, 3.0, seed=1)
    res = fit_probe(x[:1000], y[:1000], x[1000:], y[1000:])
    assert res.accuracy >= 0.99
    y_rand = torch.randint(0, 4, (1500,), generator=torch.Generator().manual_seed(2))
    res = fit_probe(x[:1000], y_rand[:1000], x[1000:], y_rand[1000:])
    assert abs(res.accuracy - 0.25) < 0.07  # 500 test samples: std ~0.02


def test_labels_remapped_and_deterministic(overlapping):
    xtr, ytr, xte, yte = overlapping
    names = torch.tensor([-3, 7, 11, 40, 1000])
    a = fit_probe(xtr, ytr, xte, yte, grid=(1e-4, 1e-3), seed=3)
    b = fit_probe(xtr, names[ytr], xte, names[yte], grid=(1e-4, 1e-3), seed=3)
    assert a == b
    # a test label never seen in train is always wrong
    c = fit_probe(xtr, ytr, xte, torch.where(yte == 0, torch.tensor(99), yte), grid=(1e-4,))
    d = fit_probe(xtr, ytr, xte, yte, grid=(1e-4,))
    assert c.accuracy < d.accuracy


def two_class(n, dim, sep, seed, flip=0.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, dim, generator=g)
    x[:, 0] += (2 * y - 1) * sep
    if flip:
        y = y.clone()
        k = int(flip * n) // 2 * 2
        y[:k] = 1 - y[:k]  # the same number of flips in each class: priors stay equal
    return x, y


def anisotropic(n, seed):
    """Low-variance class signal in dim 1, high-variance nuisance in dim 0."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 20, generator=g) * 0.05
    x[:, 0] *= 40
    x[:, 0] += (2 * y - 1) * 1.0
    x[:, 1] += (2 * y - 1) * 0.15
    return x, y


def test_grid_selection_behaviour():
    grid = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    # few samples per dimension and 20% label noise: a strong penalty wins
    x, y = two_class(1000, 800, 1.5, seed=0, flip=0.2)
    xt, yt = two_class(1000, 800, 1.5, seed=100)
    noisy = fit_probe(x, y, xt, yt, grid=grid, seed=0)
    weakest = fit_probe(x, y, xt, yt, grid=(1e-4,))
    assert noisy.weight_decay >= 1e-2
    assert noisy.accuracy > weakest.accuracy + 0.05
    # many clean samples whose signal hides in a low-variance direction: a weak one wins
    x, y = anisotropic(3000, seed=0)
    xt, yt = anisotropic(1000, seed=200)
    clean = fit_probe(x, y, xt, yt, grid=grid, seed=0)
    assert clean.weight_decay <= 1e-3 and clean.accuracy > 0.95
    for res in (noisy, clean):
        assert set(res.val_accuracies) == set(grid)
        best = max(res.val_accuracies.values())
        # the chosen value has the best held-out accuracy; ties go to the stronger penalty
        assert res.val_accuracies[res.weight_decay] == best
        assert all(v < best for k, v in res.val_accuracies.items() if k > res.weight_decay)
    # the final fit is the chosen penalty refit on all of train
    direct = fit_probe(x, y, xt, yt, grid=(clean.weight_decay,))
    assert abs(direct.accuracy - clean.accuracy) <= 0.002


def test_final_fit_uses_all_of_train():
    # random labels in more dimensions than samples: only a fit that saw every train sample
    # (the held-out 10% included) scores 1.0 when tested on train itself
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(200, 400, generator=g), torch.randint(0, 2, (200,), generator=g)
    res = fit_probe(x, y, x, y, grid=(1e-6, 1e-5))
    assert res.accuracy == 1.0 and res.n_train == 200
    assert min(res.val_accuracies.values()) < 0.9  # held-out labels are noise to the fit


def test_stratified_split():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 1 + [5] * 20)
    fit, val = stratified_split(y, 0.1, seed=0)
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(len(y)))
    assert torch.bincount(y[val], minlength=6).tolist() == [5, 3, 0, 0, 0, 2]
    assert torch.equal(val, stratified_split(y, 0.1, seed=0)[1])
    assert not torch.equal(val, stratified_split(y, 0.1, seed=1)[1])


def test_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ConfigError, match="grid"):
        fit_probe(x, torch.arange(4), x, torch.arange(4), grid=())
    with pytest.raises(DataError, match="validation"):
        fit_probe(x, torch.arange(4), x, torch.arange(4), grid=(1e-3, 1e-2))
    res = fit_probe(x, torch.arange(4), x, torch.arange(4), grid=(1e-6,))
    assert isinstance(res, ProbeResult) and res.accuracy == 1.0


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 6)

    def forward(self, x):
        h = self.bn(self.conv(x)).relu().mean((2, 3))
        return self.fc(self.drop(h))


def test_extract_features_matches_manual_forward_and_restores_mode():
    torch.manual_seed(0)
    enc = Tiny()
    enc.bn.running_mean.uniform_(-1, 1)
    enc.train()
    enc.drop.eval()  # mixed modes must come back exactly as they were
    imgs = torch.randn(10, 3, 8, 8)
    ds = TensorDataset(imgs, torch.arange(10) % 3, torch.zeros(10, dtype=torch.long))
    feats, labels = extract_features(enc, ds, batch_size=4)
    assert enc.training and enc.bn.training and not enc.drop.training
    enc.eval()
    with torch.no_grad():
        expected = enc(imgs)
    assert feats.shape == (10, 6) and feats.dtype == torch.float32
    assert torch.allclose(feats, expected, atol=1e-6)
    assert labels.dtype == torch.long and labels.tolist() == (torch.arange(10) % 3).tolist()
    with pytest.raises(ConfigError, match="precision"):
        extract_features(enc, ds, precision="fp8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(overlapping):
    xtr, ytr, xte, yte = overlapping
    cpu = fit_probe(xtr, ytr, xte, yte, grid=(1e-4, 1e-3))
    gpu = fit_probe(xtr.cuda(), ytr.cuda(), xte.cuda(), yte.cuda(), grid=(1e-4, 1e-3))
    assert abs(cpu.accuracy - gpu.accuracy) <= 0.01
    enc = Tiny().cuda()
    ds = TensorDataset(torch.randn(6, 3, 8, 8), torch.arange(6))
    f32, _ = extract_features(enc, ds, device="cuda")
    bf16, _ = extract_features(enc, ds, device="cuda", precision="bf16")
    assert f32.device.type == "cpu" and bf16.dtype == torch.float32
    assert torch.allclose(f32, bf16, atol=5e-2)
