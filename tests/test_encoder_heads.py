"""``EncoderWithHeads``: a single-task training batch goes straight to its head (no host
syncs), with the same outputs and gradients as Avalanche's routing, and a batch of another
task fails loudly."""
import copy

import pytest
import torch
from avalanche.models.dynamic_modules import avalanche_model_adaptation

from proxyfda_cl.models.base import EncoderWithHeads
from proxyfda_cl.models.tiny import TinyCNN
from proxyfda_cl.benchmarks.streams import tensor_benchmark


def _model():
    torch.manual_seed(0)
    model = EncoderWithHeads(TinyCNN()).train()
    x0, y0 = torch.randn(6, 3, 32, 32), torch.arange(6) % 3
    x1, y1 = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    exps = list(tensor_benchmark([(x0, y0), (x1, y1)]).train_stream)
    avalanche_model_adaptation(model, exps[0])  # as a strategy adapts it per experience
    avalanche_model_adaptation(model, exps[1])
    return model, x1


def test_fast_path_matches_avalanche_routing():
    fast, x = _model()
    slow = copy.deepcopy(fast)
    slow.train_task = None  # Avalanche's MultiTaskModule routing
    assert fast.train_task == 1
    t = torch.ones(len(x), dtype=torch.long)
    out_fast, out_slow = fast(x, t), slow(x, t)
    assert out_fast.shape == out_slow.shape == (8, 4)
    assert torch.equal(out_fast, out_slow)
    out_fast.square().sum().backward()
    out_slow.square().sum().backward()
    for (n, a), (_, b) in zip(fast.named_parameters(), slow.named_parameters()):
        assert (a.grad is None) == (b.grad is None), n
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad), n
    assert fast.heads.classifiers["0"].classifier.weight.grad is None  # old head untouched


def test_other_task_fails_loudly_and_eval_uses_avalanche():
    model, x = _model()
    with pytest.raises(RuntimeError, match="another task"):
        model(x, torch.zeros(len(x), dtype=torch.long))
    model.eval()
    mixed = torch.tensor([0, 1] * 4)
    out = model(x, mixed)  # evaluation routes per sample, as Avalanche does
    assert out.shape == (8, 4)
