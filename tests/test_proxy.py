"""ProxyGenerator and proxy_fda_loss against a per-anchor reference (METHOD.md "Proxy-FDA")."""
import math

import pytest
import torch
import torch.nn.functional as F

from proxyfda_cl.strategies.fda import fda_loss, teacher_graph, teacher_margin
from proxyfda_cl.strategies.proxy import ProxyGenerator, proxy_boundary, proxy_fda_loss


def reference_proxy_fda(x, t, gen, k, tau, bias, alpha, gamma_scale, neg_weight="constant", eps=1e-6,
                        boundary="fixed", memory=None):
    """Proxy-FDA written anchor by anchor: explicit proxies P = A X over explicit sets.

    With ``boundary="teacher"`` real pairs use the anchor's midpoint ``m`` between its K-th and
    (K+1)-th teacher cosines, and each proxy ``m`` moved past its own teacher cosine by the half
    gap ``h``: ``min(m, c_p - h)`` for neighbour proxies, ``max(m, c_p + h)`` for the others.
    ``memory=(teacher, student)`` adds fixed candidates to every anchor; the generator then
    pools the K neighbours and the B-1-K non-neighbours nearest under the teacher."""
    b, d = x.shape
    xn, tn = F.normalize(x, dim=1), F.normalize(t, dim=1)
    if memory is not None:
        xn = torch.cat([xn, F.normalize(memory[1], dim=1)])
        tn = torch.cat([tn, F.normalize(memory[0], dim=1)])
    gamma = gamma_scale / math.sqrt(d)
    sp = F.softplus
    fda, con, var = 0.0, 0.0, 0.0
    for i in range(b):
        sims = sorted(((float(tn[i] @ tn[j]), j) for j in range(len(tn)) if j != i), reverse=True)
        pos, neg = [j for _, j in sims[:k]], [j for _, j in sims[k:]]
        w_pos = torch.tensor([max(s, eps) for s, _ in sims[:k]], dtype=x.dtype)
        if neg_weight == "constant":
            w_neg = -torch.ones(len(neg), dtype=x.dtype)
        else:
            w_neg = torch.tensor([-(1 - s) / 2 - eps for s, _ in sims[k:]], dtype=x.dtype)
        xp, xq = xn[pos], xn[neg]
        s_pos, s_neg = xp @ xn[i], xq @ xn[i]
        gq = slice(0, b - 1 - k)  # the generator's non-neighbours: the B-1-K nearest
        a_p = gen(xp.detach()[None], s_pos.detach()[None], w_pos[None], positive=True)[0]
        a_n = gen(xq[gq].detach()[None], s_neg[gq].detach()[None], w_neg[gq][None], positive=False)[0]
        p_pos, p_neg = a_p.detach() @ xp, a_n.detach() @ xq[gq]
        cos = torch.cat([s_pos, s_neg, p_pos @ xn[i] / p_pos.norm(dim=1), p_neg @ xn[i] / p_neg.norm(dim=1)])
        w = torch.cat([w_pos, w_neg, a_p.detach() @ w_pos, a_n.detach() @ w_neg[gq]])
        edge = torch.zeros_like(cos)
        if boundary == "teacher":
            m, h = (sims[k - 1][0] + sims[k][0]) / 2, (sims[k - 1][0] - sims[k][0]) / 2
            tp, tq = a_p.detach() @ tn[pos], a_n.detach() @ tn[neg][gq]
            c_p, c_q = tp @ tn[i] / tp.norm(dim=1), tq @ tn[i] / tq.norm(dim=1)
            edge = torch.cat([torch.full((len(sims),), m, dtype=x.dtype),
                              torch.clamp(c_p - h, max=m), torch.clamp(c_q + h, min=m)])
        fda = fda + torch.log(1 + torch.exp(w * ((edge - cos) / tau + bias))).sum() / (len(sims) + len(a_p) + len(a_n))
        xq = xq[gq]
        for a, own, other in ((a_p, xp.detach(), xq.detach()), (a_n, xq.detach(), xp.detach())):
            p = F.normalize(a @ own, dim=1)
            con = con + sp(-(p @ own.T) / tau + bias).mean() + sp((p @ other.T) / tau - bias).mean()
            if len(p) > 1:
                std = (p.var(dim=0) + 1e-4 * gamma ** 2).sqrt()
                var = var + torch.relu(gamma - std).mean()
    return fda / b, (con + alpha * var) / b


@pytest.mark.parametrize("dim", [64, 512])
def test_generator_is_small_for_any_dimension(dim):
    gen = ProxyGenerator(dim)
    n = sum(p.numel() for p in gen.parameters())
    assert n < 50_000
    assert n == sum(p.numel() for p in ProxyGenerator(16).parameters())
    assert "projection" in dict(gen.named_buffers())


def test_pooling_weights_are_a_permutation_equivariant_softmax():
    gen = ProxyGenerator(12, n_pos=3, n_neg=2)
    sets = F.normalize(torch.randn(5, 7, 12), dim=-1)
    sim, w = torch.randn(5, 7), torch.rand(5, 7)
    a = gen(sets, sim, w, positive=True)
    assert a.shape == (5, 3, 7) and gen(sets, sim, w, positive=False).shape == (5, 2, 7)
    torch.testing.assert_close(a.sum(-1), torch.ones(5, 3))
    perm = torch.randperm(7)
    torch.testing.assert_close(gen(sets[:, perm], sim[:, perm], w[:, perm], positive=True), a[:, :, perm])


def test_construction_leaves_the_global_rng_alone():
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    ProxyGenerator(32, seed=5)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("neg_weight,boundary", [("constant", "fixed"), ("similarity", "fixed"),
                                                 ("constant", "teacher")])
def test_matches_per_anchor_reference(neg_weight, boundary):
    torch.manual_seed(0)
    gen = ProxyGenerator(6, n_pos=3, n_neg=2).double()
    x = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(9, 6, dtype=torch.float64)
    out = proxy_fda_loss(x, t, gen, k=3, tau=0.2, bias=0.3, alpha=0.7, gamma_scale=2.0,
                         neg_weight=neg_weight, boundary=boundary)
    ref_fda, ref_proxy = reference_proxy_fda(x, t, gen, 3, 0.2, 0.3, 0.7, 2.0, neg_weight,
                                             boundary=boundary)
    torch.testing.assert_close(out.fda, ref_fda)
    torch.testing.assert_close(out.proxy, ref_proxy)
    torch.testing.assert_close(torch.autograd.grad(out.fda, x)[0], torch.autograd.grad(ref_fda, x)[0])
    params = list(gen.parameters())
    for a, b in zip(torch.autograd.grad(out.proxy, params), torch.autograd.grad(ref_proxy, params)):
        torch.testing.assert_close(a, b)


def test_fda_term_trains_features_only_and_proxy_term_trains_generator_only():
    gen = ProxyGenerator(8)
    x = torch.randn(12, 8, requires_grad=True)
    out = proxy_fda_loss(x, torch.randn(12, 8), gen, k=4)
    out.fda.backward()
    assert all(p.grad is None for p in gen.parameters())
    assert x.grad.abs().sum() > 0
    x.grad = None
    out.proxy.backward()
    assert x.grad is None
    assert sum(p.grad.abs().sum() for p in gen.parameters()) > 0


def test_generator_parameters_change_and_proxy_loss_drops_under_its_optimizer():
    torch.manual_seed(1)
    gen = ProxyGenerator(16)
    before = [p.detach().clone() for p in gen.parameters()]
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    x, t = torch.randn(16, 16), torch.randn(16, 16)
    losses = []
    for _ in range(40):
        out = proxy_fda_loss(x, t, gen, k=4)
        opt.zero_grad()
        out.proxy.backward()
        opt.step()
        losses.append(out.proxy.item())
    assert any(not torch.equal(a, p) for a, p in zip(before, gen.parameters()))
    assert losses[-1] < losses[0]


def test_one_proxy_per_set_has_no_variance_term_and_matches_reference():
    gen = ProxyGenerator(4, n_pos=1, n_neg=1)
    x = torch.randn(6, 4)
    out = proxy_fda_loss(x, x, gen, k=2, tau=1.0)
    ref_fda, ref_proxy = reference_proxy_fda(x, x, gen, 2, 1.0, 0.0, 1.0, 1.0)
    torch.testing.assert_close(out.fda, ref_fda)
    torch.testing.assert_close(out.proxy, ref_proxy)


def test_pool_both_equals_each_set_alone():
    """The fused, masked pass gives exactly the pooling weights of two separate passes."""
    torch.manual_seed(3)
    gen = ProxyGenerator(24, n_pos=3, n_neg=5)
    rows = F.normalize(torch.randn(7, 11, 24), dim=-1)
    sim, w = torch.rand(7, 11), torch.rand(7, 11)
    k = 4
    a_pos, a_neg = gen.pool_both(rows, sim, w, k)
    ref_pos = gen(rows[:, :k], sim[:, :k], w[:, :k], positive=True)
    ref_neg = gen(rows[:, k:], sim[:, k:], w[:, k:], positive=False)
    torch.testing.assert_close(a_pos, ref_pos, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a_neg, ref_neg, rtol=1e-5, atol=1e-6)
    assert a_pos.shape == (7, 3, k) and a_neg.shape == (7, 5, 11 - k)


def test_teacher_proxies_sit_on_their_own_side_of_the_proxy_boundary():
    """Post-ReLU features: a normalised mean of non-neighbours has a higher cosine to the
    anchor than the non-neighbours themselves, so under the anchor's boundary alone many
    non-neighbour proxies of the teacher's own configuration would be pushed; under
    ``proxy_boundary`` every teacher proxy keeps the margin of the nearest real samples."""
    g = torch.Generator().manual_seed(7)
    t = torch.rand(48, 32, generator=g, dtype=torch.float64)
    k, n_pos = 6, 4
    order, _ = teacher_graph(t, k)
    m, h = teacher_margin(t, order, k)
    pool = torch.zeros(48, n_pos + 4, 47, dtype=t.dtype)  # over each anchor's candidates
    logits = torch.randn(48, n_pos + 4, 47, generator=g, dtype=t.dtype)
    pool[:, :n_pos, :k] = logits[:, :n_pos, :k].softmax(-1)
    pool[:, n_pos:, k:] = logits[:, n_pos:, k:].softmax(-1)
    tn = F.normalize(t, dim=1)
    c_p = torch.einsum("bd,bpd->bp", tn, F.normalize(pool @ tn[order], dim=-1))
    edge = proxy_boundary(t, order, k, pool, n_pos)
    assert (c_p[:, n_pos:] > m).float().mean() > 0.5       # the anchor's boundary misplaces them
    assert (c_p[:, :n_pos] >= edge[:, :n_pos] + h - 1e-12).all()
    assert (c_p[:, n_pos:] <= edge[:, n_pos:] - h + 1e-12).all()
    assert (edge[:, :n_pos] <= m).all() and (edge[:, n_pos:] >= m).all()


def test_proxy_boundary_lowers_the_push_at_the_teacher(monkeypatch):
    """At student = teacher (post-ReLU features, an untrained generator) the proxy terms under
    the anchor's boundary push the anchor away from its non-neighbours' mean; with each
    proxy's own boundary the proxies add less than half as much to FDA's gradient."""
    from proxyfda_cl.strategies import proxy as proxy_module
    g = torch.Generator().manual_seed(8)
    t = torch.rand(48, 32, generator=g, dtype=torch.float64)
    gen = ProxyGenerator(32, seed=1).double()

    def grad_norm(loss_fn):
        x = t.clone().requires_grad_(True)
        return float(torch.autograd.grad(loss_fn(x), x)[0].norm())

    fda = grad_norm(lambda x: fda_loss(x, t, 6, 0.02, 0.0, boundary="teacher"))
    ours = grad_norm(lambda x: proxy_fda_loss(x, t, gen, 6, 0.02, 0.0, boundary="teacher").fda)
    monkeypatch.setattr(proxy_module, "proxy_boundary",
                        lambda tf, order, k, pool, n_pos, memory=None:
                        teacher_margin(tf, order, k, memory)[0].expand(-1, pool.shape[1]))
    anchor_only = grad_norm(lambda x: proxy_fda_loss(x, t, gen, 6, 0.02, 0.0, boundary="teacher").fda)
    assert anchor_only > 1.3 * fda
    assert ours - fda < 0.5 * (anchor_only - fda)
