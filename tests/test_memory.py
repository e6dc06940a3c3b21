"""The cross-batch memory of FDA and Proxy-FDA (METHOD.md "Cross-batch memory")."""
import pytest
import torch
import torch.nn.functional as F

from proxyfda_cl.config import from_dict
from proxyfda_cl.core.record import read_record
from proxyfda_cl.run.runner import record_path, run
from proxyfda_cl.strategies.fda import fda_loss, teacher_graph
from proxyfda_cl.strategies.memory import FeatureMemory, MemoryView
from proxyfda_cl.strategies.proxy import ProxyGenerator, proxy_fda_loss
from tests.conftest import small_config_dict
from tests.test_proxy import reference_proxy_fda
from tests.test_resume import Interrupt, _results, _trained_experiences


def reference_memory_fda(x, t, mem_t, mem_s, k, tau, bias, boundary):
    """FDA anchor by anchor over explicit candidate lists: the rest of the batch, then memory."""
    xn = torch.cat([F.normalize(x, dim=1), F.normalize(mem_s, dim=1)])
    tn = torch.cat([F.normalize(t, dim=1), F.normalize(mem_t, dim=1)])
    total = 0.0
    for i in range(len(x)):
        cands = sorted(((float(tn[i] @ tn[j]), j) for j in range(len(tn)) if j != i), reverse=True)
        m = (cands[k - 1][0] + cands[k][0]) / 2 if boundary == "teacher" else 0.0
        li = 0.0
        for rank, (sim, j) in enumerate(cands):
            w = max(sim, 1e-6) if rank < k else -1.0
            li = li + F.softplus(w * ((m - xn[i] @ xn[j]) / tau + bias))
        total = total + li / len(cands)
    return total / len(x)


def _data(b=10, m=7, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(b, d, generator=g, dtype=torch.float64)
    mem = MemoryView(torch.randn(m, d, generator=g, dtype=torch.float64),
                     torch.randn(m, d, generator=g, dtype=torch.float64, requires_grad=True))
    return x, t, mem


@pytest.mark.parametrize("boundary", ["fixed", "teacher"])
def test_fda_over_batch_and_memory_matches_brute_force(boundary):
    x, t, mem = _data()
    ours = fda_loss(x, t, 3, 0.2, 0.3, boundary=boundary, memory=mem)
    ref = reference_memory_fda(x, t, mem.teacher, mem.student.detach(), 3, 0.2, 0.3, boundary)
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-10)
    g1, = torch.autograd.grad(ours, x)
    g2, = torch.autograd.grad(ref, x)
    torch.testing.assert_close(g1, g2)


def test_graph_over_batch_and_memory_is_the_brute_force_knn():
    x, t, mem = _data(b=12, m=20, seed=1)
    order, _ = teacher_graph(t, 4, memory=mem.teacher)
    cand = F.normalize(torch.cat([t, mem.teacher]), dim=1)
    for i in range(len(t)):
        sims = cand @ cand[i]
        sims[i] = -2
        assert set(order[i, :4].tolist()) == set(sims.topk(4).indices.tolist())
        assert sorted(order[i].tolist()) == [j for j in range(len(cand)) if j != i]


def test_an_empty_memory_gives_todays_loss_bit_for_bit():
    x, t, _ = _data()
    empty = MemoryView(t.new_zeros(0, 6), t.new_zeros(0, 6))
    for boundary in ("fixed", "teacher"):
        a = fda_loss(x, t, 3, 0.1, 0.0, boundary=boundary)
        b = fda_loss(x, t, 3, 0.1, 0.0, boundary=boundary, memory=empty)
        assert torch.equal(a, b)
        assert torch.equal(torch.autograd.grad(a, x)[0], torch.autograd.grad(b, x)[0])


def test_gradients_do_not_reach_memory_entries():
    x, t, mem = _data()
    gen = ProxyGenerator(6, n_pos=2, n_neg=2).double()
    loss = fda_loss(x, t, 3, 0.1, 0.0, memory=mem) + proxy_fda_loss(x, t, gen, 3, 0.1, memory=mem).fda
    loss.backward()
    assert mem.student.grad is None
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("boundary", ["fixed", "teacher"])
def test_proxy_fda_over_batch_and_memory_matches_reference(boundary):
    torch.manual_seed(0)
    x, t, mem = _data(b=9, m=5, seed=2)
    gen = ProxyGenerator(6, n_pos=3, n_neg=2).double()
    out = proxy_fda_loss(x, t, gen, 3, 0.2, 0.3, alpha=0.7, gamma_scale=2.0, boundary=boundary,
                         memory=mem)
    ref_fda, ref_proxy = reference_proxy_fda(x, t, gen, 3, 0.2, 0.3, 0.7, 2.0, boundary=boundary,
                                             memory=(mem.teacher, mem.student.detach()))
    torch.testing.assert_close(out.fda, ref_fda)
    torch.testing.assert_close(out.proxy, ref_proxy)
    torch.testing.assert_close(torch.autograd.grad(out.fda, x)[0], torch.autograd.grad(ref_fda, x)[0])


def test_memory_is_a_fifo_queue_that_excludes_the_batch_and_leaves_checkpoints():
    mem = FeatureMemory(5)
    feats = torch.eye(8)
    for start in (0, 3, 6):  # batches of 3, 3, 2 samples; the first two drop out
        idx = torch.arange(start, min(start + 3, 8))
        mem.enqueue(feats[idx], 2 * feats[idx], idx % 2, idx + 100)
    assert len(mem) == 5 and mem.step == 3
    student, indices, steps = mem.entries()
    assert sorted(indices.tolist()) == [103, 104, 105, 106, 107]
    assert sorted(steps.tolist()) == [2, 2, 2, 3, 3]
    view = mem.view(torch.tensor([104, 107, 999]))
    assert len(view.teacher) == 3
    torch.testing.assert_close(view.student, view.teacher)  # stored L2-normalised
    with pytest.raises(ValueError, match="memory_size must be >= 0"):
        FeatureMemory(-1)


def test_a_sample_drawn_twice_in_one_batch_takes_one_slot():
    mem = FeatureMemory(8)
    feats = torch.eye(4)
    mem.enqueue(feats, feats, torch.arange(4), torch.tensor([7, 3, 7, 5]))
    student, indices, _ = mem.entries()
    assert len(mem) == 3 and sorted(indices.tolist()) == [3, 5, 7]
    assert float(student[indices == 7][0][2]) == 1.0  # the last copy (row 2) is kept


def test_a_sample_enqueued_again_keeps_only_its_freshest_entry():
    mem = FeatureMemory(6)
    feats = torch.eye(4)
    mem.enqueue(feats, feats, torch.zeros(4), torch.arange(4))          # epoch 1
    mem.enqueue(feats[:2], -feats[:2], torch.zeros(2), torch.arange(2))  # epoch 2 starts
    student, indices, steps = mem.entries()
    assert len(mem) == 4 and sorted(indices.tolist()) == [0, 1, 2, 3]
    fresh = {int(i): (float(s.sum()), int(t)) for i, s, t in zip(indices, student, steps)}
    assert fresh[0] == (-1.0, 2) and fresh[1] == (-1.0, 2) and fresh[2] == (1.0, 1)


def _memory_cfg(out, weights, name="fda", size=48, warmup=1):
    d = small_config_dict(str(out), weights, strategy=name)
    d["strategy"].update(memory_size=size, memory_warmup=warmup)
    return from_dict(d)


@pytest.mark.slow
def test_memory_runs_record_staleness_and_resume_exactly(tmp_path, tiny_weights, monkeypatch):
    cfg = _memory_cfg(tmp_path / "ref", tiny_weights)
    ref = run(cfg)
    assert [e["experience"] for e in ref["memory"]] == [1, 2]
    for e in ref["memory"]:
        assert 0 < e["entries"] <= 48 and -1 <= e["staleness_cos_min"] <= e["staleness_cos"] <= 1
        assert e["mean_age_steps"] > 0 and e["epochs_cos"] == [e["staleness_cos"]]  # 1 epoch
    off = run(_memory_cfg(tmp_path / "off", tiny_weights, size=0))
    assert off["memory"] == [] and off["matrices"]["P"] != ref["matrices"]["P"]

    cfg = _memory_cfg(tmp_path / "resumed", tiny_weights)
    with monkeypatch.context() as m:
        _trained_experiences(m, crash_in=1)
        with pytest.raises(Interrupt):
            run(cfg)
    assert read_record(record_path(cfg))["status"] == "failed"
    rec = run(cfg)
    assert _results(rec) == {**_results(ref), "id": rec["id"]}
    assert rec["memory"] == ref["memory"]


@pytest.mark.slow
def test_proxy_fda_runs_with_a_memory(tmp_path, tiny_weights):
    rec = run(_memory_cfg(tmp_path, tiny_weights, name="proxy_fda", size=40, warmup=0))
    assert rec["status"] == "complete" and len(rec["memory"]) == 2


def test_bad_memory_settings_are_one_line_errors(tmp_path, tiny_weights):
    from proxyfda_cl.config import ConfigError
    with pytest.raises(ConfigError, match="memory_warmup must be >= 0"):
        run(_memory_cfg(tmp_path, tiny_weights, warmup=-1))
