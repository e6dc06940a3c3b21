"""fda_loss against a per-anchor reference loop, its invariances and its errors."""
import math

import pytest
import torch

from proxyfda_cl.strategies.fda import fda_loss, teacher_graph


def reference_fda(x, t, k, tau, bias, neg_weight="constant", eps=1e-6):
    """METHOD.md "FDA" written anchor by anchor, pair by pair."""
    b = x.shape[0]
    xn = x / x.norm(dim=1, keepdim=True)
    tn = t / t.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(b):
        sims = sorted(((float(tn[i] @ tn[j]), j) for j in range(b) if j != i), reverse=True)
        neighbours = {j for _, j in sims[:k]}
        li = 0.0
        for j in range(b):
            if j == i:
                continue
            s_hat = float(tn[i] @ tn[j])
            if j in neighbours:
                w = max(s_hat, eps)
            elif neg_weight == "constant":
                w = -1.0
            else:
                w = -(1.0 - s_hat) / 2 - eps
            li = li + torch.log(1 + torch.exp(w * (-(xn[i] @ xn[j]) / tau + bias)))
        total = total + li / (b - 1)
    return total / b


@pytest.mark.parametrize("neg_weight", ["constant", "similarity"])
def test_matches_reference_loop_in_value_and_gradient(neg_weight):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 6, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(10, 6, generator=g, dtype=torch.float64)
    ours = fda_loss(x, t, k=3, tau=0.2, bias=0.5, neg_weight=neg_weight)
    (g_ours,) = torch.autograd.grad(ours, x)
    ref = reference_fda(x, t, 3, 0.2, 0.5, neg_weight)
    (g_ref,) = torch.autograd.grad(ref, x)
    assert ours.dim() == 0
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)


def test_hand_computed_three_points():
    # Teacher = student = three unit vectors at 0, 60 and 150 degrees, k = 1, tau = 0.5, b = 0.
    ang = torch.tensor([0.0, 60.0, 150.0]) * math.pi / 180
    x = torch.stack([ang.cos(), ang.sin()], 1)
    c01, c02, c12 = math.cos(math.radians(60)), math.cos(math.radians(150)), math.cos(math.radians(90))
    sp = lambda z: math.log1p(math.exp(z))  # noqa: E731
    # anchor 0: neighbour 1 (0.5 > -0.87); anchor 1: neighbour 0 (0.5 > 0); anchor 2: neighbour 1.
    l0 = (sp(c01 * -c01 / 0.5) + sp(-1 * -c02 / 0.5)) / 2
    l1 = (sp(c01 * -c01 / 0.5) + sp(-1 * -c12 / 0.5)) / 2
    l2 = (sp(1e-6 * -c12 / 0.5) + sp(-1 * -c02 / 0.5)) / 2  # s_hat(2,1) = 0 is clamped to eps
    expected = (l0 + l1 + l2) / 3
    assert fda_loss(x, x, k=1, tau=0.5).item() == pytest.approx(expected, rel=1e-5)


def test_invariant_to_rotation_and_rescaling():
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    scale = torch.rand(16, 1, generator=g) * 5 + 0.1
    base = fda_loss(x, t, k=4)
    torch.testing.assert_close(fda_loss(x @ q, t, k=4), base)
    torch.testing.assert_close(fda_loss(x * scale, t * scale.flip(0), k=4), base)


def test_aligned_graph_scores_lower_than_shuffled():
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(4, 16, generator=g) * 3
    t = centres.repeat_interleave(4, 0) + 0.3 * torch.randn(16, 16, generator=g)
    aligned = fda_loss(t.clone(), t, k=3)
    shuffled = [fda_loss(t[torch.randperm(16, generator=g)], t, k=3) for _ in range(5)]
    assert all(aligned < 0.5 * s for s in shuffled)


def test_teacher_gets_no_gradient_and_low_precision_is_promoted():
    x = torch.randn(8, 4, requires_grad=True)
    t = torch.randn(8, 4, requires_grad=True)
    fda_loss(x, t, k=2).backward()
    assert t.grad is None and x.grad is not None and x.grad.abs().sum() > 0
    xb, tb = x.detach().bfloat16(), t.detach().bfloat16()
    out = fda_loss(xb, tb, k=2)
    assert out.dtype == torch.float32
    # computed in float32 on the bf16-rounded inputs, not in bf16
    assert out.item() == pytest.approx(fda_loss(xb.float(), tb.float(), k=2).item(), rel=1e-6)


def test_graph_orders_neighbours_first_with_their_weights():
    t = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    order, w = teacher_graph(t, 1)
    assert order.shape == (4, 3) and order[0, 0] == 1 and order[3, 0] == 2
    assert (w[:, 0] > 0).all() and (w[:, 1:] == -1).all()
    _, w_sim = teacher_graph(t, 1, neg_weight="similarity")
    assert w_sim[0, 2].item() == pytest.approx(-(1 - (-1.0)) / 2 - 1e-6)  # anchor 0 vs opposite


@pytest.mark.parametrize("b,k", [(8, 7), (8, 9), (2, 1), (5, 0)])
def test_bad_batch_or_k_is_a_one_line_error(b, k):
    with pytest.raises(ValueError, match="FDA needs") as e:
        fda_loss(torch.randn(b, 4), torch.randn(b, 4), k=k)
    assert "\n" not in str(e.value)


def test_unknown_negative_weight_is_rejected():
    with pytest.raises(ValueError, match="neg_weight"):
        fda_loss(torch.randn(6, 4), torch.randn(6, 4), k=2, neg_weight="zero")


def reference_boundary_fda(x, t, k, tau, bias):
    """``boundary="teacher"`` anchor by anchor: the sigmoid's boundary sits at the midpoint
    of anchor i's K-th and (K+1)-th teacher cosines, ``softplus(w (( m_i - cos)/tau + b))``."""
    b = x.shape[0]
    xn = x / x.norm(dim=1, keepdim=True)
    tn = t / t.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(b):
        sims = sorted(((float(tn[i] @ tn[j]), j) for j in range(b) if j != i), reverse=True)
        m = (sims[k - 1][0] + sims[k][0]) / 2
        neighbours = {j for _, j in sims[:k]}
        li = 0.0
        for j in range(b):
            if j == i:
                continue
            w = max(float(tn[i] @ tn[j]), 1e-6) if j in neighbours else -1.0
            li = li + torch.log(1 + torch.exp(w * ((m - xn[i] @ xn[j]) / tau + bias)))
        total = total + li / (b - 1)
    return total / b


@pytest.mark.parametrize("bias", [0.0, -0.7])
def test_teacher_boundary_matches_reference_loop(bias):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(9, 5, generator=g, dtype=torch.float64).abs()  # all cosines positive
    ours = fda_loss(x, t, k=3, tau=0.1, bias=bias, boundary="teacher")
    ref = reference_boundary_fda(x, t, 3, 0.1, bias)
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-10)
    g1, = torch.autograd.grad(ours, x)
    g2, = torch.autograd.grad(ref, x)
    assert torch.allclose(g1, g2, atol=1e-10)


def test_teacher_boundary_learnable_tau_gets_the_gradient_of_the_whole_term():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 4, generator=g, dtype=torch.float64)
    t = torch.randn(8, 4, generator=g, dtype=torch.float64)
    tau = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    fda_loss(x, t, 2, tau, 0.0, boundary="teacher").backward()
    eps = 1e-6
    num = (fda_loss(x, t, 2, 0.2 + eps, 0.0, boundary="teacher")
           - fda_loss(x, t, 2, 0.2 - eps, 0.0, boundary="teacher")) / (2 * eps)
    assert float(tau.grad) == pytest.approx(float(num), rel=1e-6)


def test_teacher_boundary_pushes_less_when_every_cosine_is_positive():
    """Non-negative features (post-ReLU): at the teacher's own configuration the fixed
    boundary cos = 0 pushes every non-neighbour away; the teacher boundary barely does."""
    g = torch.Generator().manual_seed(6)
    t = torch.rand(32, 16, generator=g, dtype=torch.float64)
    x = t.clone().requires_grad_(True)
    fixed = torch.autograd.grad(fda_loss(x, t, 4, 0.2, 0.0), x)[0].norm()
    teach = torch.autograd.grad(fda_loss(x, t, 4, 0.2, 0.0, boundary="teacher"), x)[0].norm()
    assert teach < 0.5 * fixed


def test_unknown_boundary_is_rejected():
    x = torch.randn(6, 3)
    with pytest.raises(ValueError, match="boundary must be one of"):
        fda_loss(x, x, 2, boundary="middle")
