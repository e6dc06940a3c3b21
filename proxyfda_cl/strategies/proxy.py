"""Proxy-FDA: FDA extended with generated proxy features (METHOD.md "Proxy-FDA").

For each anchor ``i`` the teacher graph splits the rest of the batch into neighbours ``X_i^+``
(K) and non-neighbours ``X_i^-`` (B-1-K). A small ``ProxyGenerator`` pools each set into
proxies ``P = A X`` with estimated teacher weights ``w^p = A w`` (adaptive pooling), and FDA
runs over the extended sets ``[X_i^+, P_i^+]``, ``[X_i^-, P_i^-]``.

Choices that are ours (METHOD.md leaves them open):

- normalisation: ``L^i = 1/(B-1+n_pos+n_neg) sum_{j in extended set} softplus(...)``, i.e. the
  ``1/(B-1)`` of FDA becomes one over the size of the extended set (it reduces to FDA with no
  proxies);
- generator input: per set element, a fixed random projection of its feature to 32 dims (a
  buffer, not a parameter), its student cosine to the anchor and its teacher weight;
- contrastive proxy term: ``mean_{p, j in own set} softplus(-cos(p, x_j)/tau + b) +
  mean_{p, j in other set} softplus(cos(p, x_j)/tau - b)`` (SigLIP form with labels +1 / -1,
  the two sets weighted equally);
- variance term: ``mean_d relu(gamma - sqrt(Var_p(p_d) + 1e-4 gamma^2))`` over the L2-normalised
  proxies of one set, with ``gamma = gamma_scale / sqrt(D)``: unit vectors spread uniformly on the
  sphere have a per-dimension std of ``1/sqrt(D)``, so the hinge asks a set's proxies to be
  spread that much (VICReg's ``gamma = 1`` assumes unnormalised, unit-variance features).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from .common import as_float, batch_k
from .fda import FDAPlugin, anchor_bias, sigmoid_terms, teacher_graph, teacher_margin, with_memory
from .memory import MemoryView
from .proxy_generator import ProxyGenerator
from .registry import register_plugin


class ProxyFDAOutput(NamedTuple):
    """``fda``: the Proxy-FDA term (gradients to the student features only); ``proxy``:
    ``L_proxy`` (gradients to the generator only)."""

    fda: torch.Tensor
    proxy: torch.Tensor


def _contrastive(c_own: torch.Tensor, c_other: torch.Tensor, tau, bias) -> torch.Tensor:
    """SigLIP terms of proxies against their own set (label +1) and the other set (-1), given
    their cosines ``[N, n_p, n_own]`` and ``[N, n_p, n_other]``."""
    return sigmoid_terms(1.0, c_own, tau, bias).mean() + sigmoid_terms(-1.0, c_other, tau, bias).mean()


def variance_hinge(proxies: torch.Tensor, gamma: float) -> torch.Tensor:
    """VICReg-style ``mean relu(gamma - std)`` of ``[N, n_p, D]`` proxies over each set's n_p
    proxies (0 when ``n_p < 2``)."""
    if proxies.shape[1] < 2:
        return proxies.new_zeros(())
    centred = proxies - proxies.mean(dim=1, keepdim=True)
    var = centred.pow(2).sum(dim=1) / (proxies.shape[1] - 1)
    std = (var + 1e-4 * gamma ** 2).sqrt()
    return F.relu(gamma - std).mean()


@torch.no_grad()
def proxy_boundary(teacher_feats: torch.Tensor, order: torch.Tensor, k: int, pool: torch.Tensor,
                   n_pos: int, memory: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per proxy, a boundary that the teacher's own proxies satisfy, ``[B, n_pos + n_neg]``.

    The same pooling applied to the teacher's features gives each proxy a teacher cosine
    ``c_p`` to its anchor. A non-neighbour proxy is a normalised mean, so ``c_p`` can lie above
    the anchor's boundary ``m_i`` although every pooled non-neighbour lies below it. Each proxy
    keeps at least the margin ``h_i`` of the anchor's nearest real samples (half the gap
    between the K-th and (K+1)-th teacher cosines): ``min(m_i, c_p - h_i)`` for neighbour
    proxies, ``max(m_i, c_p + h_i)`` for non-neighbour proxies. The teacher's configuration
    then satisfies every term's ordering, proxies included. ``pool`` ``[B, n_p, n]`` holds
    the pooling weights over each anchor's first ``n`` candidates in ``order`` (batch, then
    ``memory`` teacher features).
    """
    m, h = teacher_margin(teacher_feats, order, k, memory)
    t = F.normalize(as_float(teacher_feats.detach()), dim=1)
    rows = with_memory(t, memory)[order[:, :pool.shape[2]]]
    c_p = torch.einsum("bd,bpd->bp", t, F.normalize(pool.to(t.dtype) @ rows, dim=-1))
    return torch.cat([torch.minimum(m, c_p[:, :n_pos] - h), torch.maximum(m, c_p[:, n_pos:] + h)], 1)


def proxy_fda_loss(feats: torch.Tensor, teacher_feats: torch.Tensor, generator: ProxyGenerator,
                   k: int = 8, tau=0.1, bias=0.0, *, alpha: float = 1.0, gamma_scale: float = 1.0,
                   neg_weight: str = "constant", eps: float = 1e-6,
                   boundary: str = "fixed", memory: Optional[MemoryView] = None) -> ProxyFDAOutput:
    """The Proxy-FDA term and the generator's ``L_proxy`` (METHOD.md "Proxy-FDA").

    Vectorised over anchors; the generator runs once on detached features: its pooling weights
    enter the FDA term detached, and ``L_proxy`` sees only detached features.

    Args:
        feats: ``[B, D]`` student features.
        teacher_feats: ``[B, D]`` teacher features (no gradient).
        generator: the proxy generator.
        k, tau, bias, neg_weight, eps, boundary: as in ``fda_loss``; with
            ``boundary="teacher"`` each proxy gets the boundary of ``proxy_boundary`` (the
            generator's contrastive term keeps ``b``).
        alpha: weight of the variance term in ``L_proxy``.
        gamma_scale: variance target ``gamma = gamma_scale / sqrt(D)`` (ours).
        memory: memory entries that join every anchor's sets as fixed points (as in
            ``fda_loss``). The generator pools the K neighbours over batch and memory, and
            the B-1-K non-neighbours nearest to the anchor under the teacher (with no memory,
            all of them).

    Returns:
        ``ProxyFDAOutput(fda, proxy)``, both scalars.
    """
    t_mem, s_mem = (None, None) if memory is None else memory
    order, w = teacher_graph(teacher_feats, k, neg_weight=neg_weight, eps=eps, memory=t_mem)
    x = F.normalize(as_float(feats), dim=1)
    cand = with_memory(x, s_mem)
    s = (x @ cand.T).gather(1, order)
    # The generator's sets: the K neighbours and the B-1-K nearest non-neighbours (all of them
    # without a memory), so its cost does not grow with the memory.
    n_gen = teacher_feats.shape[0] - 1
    o_gen = order[:, :n_gen]
    gen_rows = cand[o_gen]  # [B, n_gen, D]; gradients reach the batch's rows
    rows = gen_rows.detach()
    g = generator.projection.dtype
    a_pos, a_neg = generator.pool_both(rows.to(g), s[:, :n_gen].detach().to(g),
                                       w[:, :n_gen].to(g), k)
    # Both sets' pooling weights as one [B, n_p, n_gen] matrix over the generator's sets.
    pool_g = torch.cat([F.pad(a_pos.to(x.dtype), (0, n_gen - k)),
                        F.pad(a_neg.to(x.dtype), (k, 0))], 1)

    # Proxies P = A X (A detached) of the student's features.
    pool, n_pos = pool_g.detach(), a_pos.shape[1]
    cos_p = torch.einsum("bd,bpd->bp", x, F.normalize(pool @ gen_rows, dim=-1))
    w_p = torch.einsum("bpn,bn->bp", pool, w[:, :n_gen])
    b_i = anchor_bias(bias, tau, boundary, teacher_feats, order, k, t_mem)
    if boundary == "teacher":
        edge = proxy_boundary(teacher_feats, order, k, pool, n_pos, t_mem)
        b_i = torch.cat([b_i.expand_as(s), bias + edge / tau], 1)
    fda = sigmoid_terms(torch.cat([w, w_p], 1), torch.cat([s, cos_p], 1), tau, b_i).mean()

    tau_d = tau.detach() if torch.is_tensor(tau) else tau
    bias_d = bias.detach() if torch.is_tensor(bias) else bias
    gamma = gamma_scale / math.sqrt(x.shape[1])
    proxies = F.normalize(pool_g @ rows, dim=-1)
    c = proxies @ rows.transpose(1, 2)
    p_pos, p_neg = proxies[:, :n_pos], proxies[:, n_pos:]
    proxy = (_contrastive(c[:, :n_pos, :k], c[:, :n_pos, k:], tau_d, bias_d)
             + alpha * variance_hinge(p_pos, gamma)
             + _contrastive(c[:, n_pos:, k:], c[:, n_pos:, :k], tau_d, bias_d)
             + alpha * variance_hinge(p_neg, gamma))
    return ProxyFDAOutput(fda, proxy)


class ProxyFDAPlugin(FDAPlugin):
    """Adds ``lam * Proxy-FDA`` to the strategy loss and trains the proxy generator.

    An ``FDAPlugin`` whose term runs over the sets extended with proxies: every FDA argument
    (and default) holds, so a plugin built with no arguments is the shipped ``proxy_fda``
    strategy. The generator (built at the first minibatch, when D is known, on the features'
    device) is trained only by ``L_proxy`` with its own Adam optimizer (``gen_lr``), stepped
    inside ``before_backward``; Avalanche's optimizer never sees it, so its rebuilds between
    experiences do not drop it. At several depths (``layers``) the term is the mean over
    depths, and each depth has its own generator (``generators``, by depth name).

    Args:
        n_pos, n_neg: proxies per neighbour / non-neighbour set.
        alpha: weight of the variance term of ``L_proxy``.
        gen_lr: learning rate of the generator's optimizer.
        gamma_scale: variance target ``gamma = gamma_scale / sqrt(D)`` (ours).
        seed: seed of the generator's projection and initial weights; ``None`` draws it from
            torch's global generator when the generator is built, so runs with different seeds
            start from different generators.
        **fda_kwargs: the arguments of ``FDAPlugin`` (``lam``, ``k``, ``tau``, ``boundary``,
            ``teacher``, ``memory_size``, ``layers``, ...), with its defaults.
    """

    def __init__(self, *, n_pos: int = 4, n_neg: int = 4, alpha: float = 1.0,
                 gen_lr: float = 1e-3, gamma_scale: float = 1.0, seed: Optional[int] = None,
                 **fda_kwargs) -> None:
        for key, value, ok, rule in (("n_pos", n_pos, n_pos >= 1, ">= 1"),
                                     ("n_neg", n_neg, n_neg >= 1, ">= 1"),
                                     ("alpha", alpha, alpha >= 0, ">= 0"),
                                     ("gamma_scale", gamma_scale, gamma_scale >= 0, ">= 0"),
                                     ("gen_lr", gen_lr, gen_lr > 0, "> 0")):
            if not ok:
                raise ValueError(f"{key} must be {rule}, got {value}")
        super().__init__(**fda_kwargs)
        self.n_pos, self.n_neg, self.alpha, self.gamma_scale = n_pos, n_neg, alpha, gamma_scale
        self.gen_lr, self.seed = gen_lr, seed
        self.generators: dict = {}  # depth name -> (ProxyGenerator, its Adam optimizer)
        self.last_proxy_loss = None

    @property
    def generator(self) -> Optional[ProxyGenerator]:
        """The generator of the final embedding (None before the first minibatch)."""
        return self.generators.get("final", (None,))[0]

    def state_dict(self) -> dict:
        """The plugin's state with each depth's generator and its optimizer's state."""
        return {**super().state_dict(),
                "generators": {name: {"model": gen.state_dict(), "optimizer": opt.state_dict()}
                               for name, (gen, opt) in self.generators.items()}}

    def load_state_dict(self, state: dict, model=None) -> None:
        """Restore ``state_dict``'s result: the generators are rebuilt at their saved size."""
        super().load_state_dict(state, model)
        self.generators = {}
        for name, saved in state["generators"].items():
            gen = ProxyGenerator(saved["model"]["projection"].shape[0], n_pos=self.n_pos,
                                 n_neg=self.n_neg)
            gen.load_state_dict(saved["model"])
            opt = torch.optim.Adam(gen.parameters(), lr=self.gen_lr)
            opt.load_state_dict(saved["optimizer"])
            self.generators[name] = (gen, opt)

    def _ensure_generator(self, feats: torch.Tensor, name: str = "final") -> tuple:
        """``(generator, optimizer)`` of depth ``name``, built at its first minibatch."""
        if name not in self.generators:
            seed = self.seed if self.seed is not None else int(torch.randint(2**31 - 1, ()))
            gen = ProxyGenerator(feats.shape[1], n_pos=self.n_pos, n_neg=self.n_neg,
                                 seed=seed).to(feats.device)
            self.generators[name] = (gen, torch.optim.Adam(gen.parameters(), lr=self.gen_lr))
        gen, opt = self.generators[name]
        if gen.projection.device != feats.device:
            gen.to(feats.device)
            for state in opt.state.values():
                for key, v in state.items():
                    if torch.is_tensor(v) and key != "step":
                        state[key] = v.to(feats.device)
        return gen, opt

    def before_backward(self, strategy, **kwargs):
        k = batch_k(self, self.k) if self.lam else None
        if k is None:
            return
        tau, bias = self.temperature.values(strategy.device)
        outs = []
        for name, feats, teacher_feats in self.depth_pairs():
            gen, opt = self._ensure_generator(feats, name)
            out = proxy_fda_loss(feats, teacher_feats, gen, k, tau, bias, alpha=self.alpha,
                                 gamma_scale=self.gamma_scale, neg_weight=self.neg_weight,
                                 eps=self.eps, boundary=self.boundary, memory=self.memory_view())
            opt.zero_grad(set_to_none=True)
            out.proxy.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            outs.append(out)
        fda = torch.stack([o.fda for o in outs]).mean()
        # memory and bound are on only with the final embedding alone (``check_depths``), the
        # loop's last depth
        self.memory_push(strategy, teacher_feats, feats)
        strategy.loss = strategy.loss + self.bounded(strategy, self.lam * fda, feats)
        self.last_loss = fda.detach()
        self.last_proxy_loss = torch.stack([o.proxy for o in outs]).mean().detach()


register_plugin("proxy_fda", ProxyFDAPlugin, sampler="hard")
