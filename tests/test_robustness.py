"""Robustness of the feature regularisers: the gradient bound of FDA and Proxy-FDA, the
gradient-ratio figure every run records, and FDA and Proxy-FDA at their shipped defaults
under plain SGD without clipping on a network with frozen BatchNorm statistics."""
import copy

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from proxyfda_cl.benchmarks.streams import tensor_benchmark
from proxyfda_cl.config import from_dict
from proxyfda_cl.models.base import Encoder, EncoderWithHeads
from proxyfda_cl.run.runner import run
from proxyfda_cl.strategies import build_strategy
from proxyfda_cl.strategies.common import GradientBound
from proxyfda_cl.training.grad_ratio import GradRatioPlugin
from proxyfda_cl.training import FrozenBatchNormPlugin

from .conftest import small_config_dict
from .test_plugins import make_strategy, toy_stream


def test_gradient_bound_on_a_hand_made_case():
    feats = torch.zeros(2, 2, requires_grad=True)
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # ||d task/d feats|| = 1
    b = torch.tensor([[0.0, 3.0], [4.0, 0.0]])  # ||d reg/d feats|| = 5
    bound = GradientBound(1.0)

    def losses():
        return (feats * a).sum(), (feats * b).sum()

    task, reg = losses()
    factor = bound.scale(reg, task, feats)
    assert float(factor) == pytest.approx(0.2)
    (g,) = torch.autograd.grad(task + factor * reg, feats)
    assert float((g - a).norm()) == pytest.approx(1.0)  # the regulariser's part: 1x the task's
    # below the bound nothing changes; a looser bound keeps more
    assert float(GradientBound(10.0).scale(*reversed(losses()), feats)) == 1.0
    assert float(GradientBound(2.5).scale(*reversed(losses()), feats)) == pytest.approx(0.5)
    task, reg = losses()
    # no task gradient at the features: the regulariser is switched off for that step
    assert float(bound.scale(reg, torch.zeros(()), feats)) == 0.0
    # 0 turns the bound off
    assert GradientBound(0.0).scale(reg, task, feats) == 1.0
    bound.end_experience(1)
    assert bound.log[0]["experience"] == 1
    assert bound.log[0]["ratio"] == pytest.approx(5.0)  # the step without a task gradient: no ratio
    assert bound.log[0]["kept"] == pytest.approx(0.1)  # mean of 0.2 and 0.0
    with pytest.raises(ValueError, match="max_grad_ratio"):
        GradientBound(-1.0)


class TimesTask(SupervisedPlugin):
    """Adds ``c`` times the task loss: a regulariser whose gradient is exactly ``c`` times the
    task's."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def before_backward(self, strategy, **kwargs):
        strategy.loss = strategy.loss + self.c * strategy.criterion()


@pytest.mark.parametrize("c", [2.5, 0.25])
def test_grad_ratio_is_the_ratio_of_the_two_gradients(c):
    bench = toy_stream(n_exp=2)
    ratio = GradRatioPlugin(steps=3)
    strategy = make_strategy([TimesTask(c), ratio])
    for exp in bench.train_stream:
        strategy.train(exp)
    assert [e["experience"] for e in ratio.log] == [1, 2]
    for e in ratio.log:
        assert e["steps"] == 2  # 24 samples in minibatches of 12: two steps an experience
        assert e["median"] == pytest.approx(c, rel=1e-4)
        assert e["max"] == pytest.approx(c, rel=1e-4)


def test_grad_ratio_changes_nothing_and_warns_only_when_extreme():
    bench = toy_stream(n_exp=1)
    weights = []
    for plugins in ([TimesTask(1.0)], [TimesTask(1.0), GradRatioPlugin()]):
        strategy = make_strategy(plugins, momentum=0.9)
        strategy.train(bench.train_stream[0])
        weights.append([p.detach().clone() for p in strategy.model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    entries = [{"experience": 1, "steps": 5, "median": 37.0, "max": 50.0},
               {"experience": 2, "steps": 5, "median": 1.0, "max": 2.0},
               {"experience": 3, "steps": 5, "median": 0.001, "max": 0.002}]
    lines = GradRatioPlugin.warnings(entries, "strategy.lam")
    assert len(lines) == 2
    assert lines[0].startswith("experience 1:") and "37x" in lines[0] and "lower strategy.lam" in lines[0]
    assert lines[1].startswith("experience 3:") and "raise strategy.lam" in lines[1]


@pytest.mark.slow
def test_a_run_records_the_gradient_ratio_and_the_bound(tmp_path, tiny_weights):
    d = small_config_dict(str(tmp_path / "f"), tiny_weights, strategy="fda")
    d["strategy"]["max_grad_ratio"] = 1.0
    rec = run(from_dict(d))
    assert [e["experience"] for e in rec["grad_ratio"]] == [1, 2]
    for e in rec["grad_ratio"]:
        assert e["median"] > 0 and e["max"] >= e["median"] and e["steps"] >= 1
        assert e["feature_ratio"] > 0 and 0.0 <= e["kept"] <= 1.0
    assert isinstance(rec["warnings"], list)
    naive = run(from_dict(small_config_dict(str(tmp_path / "n"), tiny_weights)))
    assert naive["grad_ratio"] == [] and naive["warnings"] == []  # no regulariser to measure


class BatchNormMLP(Encoder):
    """A small MLP with BatchNorm, pre-trained below with its statistics updating."""

    def __init__(self, d=32, h=64, out=32):
        super().__init__(feature_dim=out, input_size=1, mean=(0.0,), std=(1.0,),
                         ldifs_layers={"l1": 1, "l2": 1})
        self.l1, self.b1 = nn.Linear(d, h), nn.BatchNorm1d(h)
        self.l2, self.b2 = nn.Linear(h, h), nn.BatchNorm1d(h)
        self.l3 = nn.Linear(h, out)

    def forward(self, x):
        x = torch.relu(self.b1(self.l1(x.flatten(1))))
        return torch.relu(self.l3(torch.relu(self.b2(self.l2(x)))))


def clusters(seed, n_cls=10, per=60, d=32):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_cls, d, generator=g) * 1.5
    y = torch.arange(n_cls).repeat_interleave(per)
    return centres[y] + torch.randn(len(y), d, generator=g), y


@pytest.fixture(scope="module")
def pretrained_mlp():
    torch.manual_seed(0)
    enc = BatchNormMLP()
    x, y = clusters(1)
    head = nn.Linear(enc.feature_dim, 10)
    opt = torch.optim.Adam(list(enc.parameters()) + list(head.parameters()), 1e-2)
    for _ in range(300):
        idx = torch.randint(len(y), (64,))
        loss = nn.functional.cross_entropy(head(enc(x[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fda", "proxy_fda"])
def test_shipped_defaults_train_under_plain_sgd_without_clipping(name, pretrained_mlp):
    """Frozen BatchNorm statistics, SGD lr 0.01 (momentum 0.9), no clipping, a random head,
    300 steps on a new 10-class task: no collapse (chance is 10%)."""
    x, y = clusters(2)
    torch.manual_seed(0)
    model = EncoderWithHeads(copy.deepcopy(pretrained_mlp))
    recipe = build_strategy(name, {})
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=64, train_epochs=30,
                     plugins=list(recipe.plugins) + [FrozenBatchNormPlugin()],
                     evaluator=EvaluationPlugin(loggers=[]), eval_every=-1)
    strategy.train(tensor_benchmark([(x, y)]).train_stream[0])
    assert strategy.clock.train_exp_iterations == 300
    model.eval()
    with torch.no_grad():
        feats = model.encoder(x)
        acc = (model(x, torch.zeros_like(y)).argmax(1) == y).float().mean().item()
    assert torch.isfinite(feats).all()
    assert acc > 0.8


#: Run ids of the demo suites at 0.2.0, before the gradient bound option, the clipping
#: default, FDA's τ = 0.05 and the recomputed BatchNorm statistics: with the statistics as
#: they were (``train.batchnorm_recompute: false``) and FDA's and Proxy-FDA's τ at 0.02 then,
#: the settings are those of 0.2.0 and so are the ids.
IDS_0_2_0 = {"demo": {"ewc": "eff1eca8812cb9ca", "l2sp": "87f01191260d9dcd",
                      "ldifs": "41e7add82c49b165", "lp_ft": "86579638ba4e098f",
                      "lwf": "3170a41a952bd780", "naive": "6fb9a5600ebd40d8",
                      "fda": "9eed3120f3571105", "proxy_fda": "1c5b8b88e31a9e62"},
             "demo-quick": {"ewc": "223e844412fd94cb", "l2sp": "0100c47d643a910d",
                            "ldifs": "44a9ecc31c99383f", "lp_ft": "eb7662a476e083a5",
                            "lwf": "a1c5ec51f54b578c", "naive": "19ef8d8cfcf38d7d",
                            "fda": "122c48228130011e", "proxy_fda": "44ac5c2509a0a76a"}}


@pytest.mark.parametrize("suite", sorted(IDS_0_2_0))
def test_demo_runs_whose_settings_did_not_change_keep_their_ids(suite):
    from proxyfda_cl.config import to_dict
    from proxyfda_cl.run.sweep import expand, load_suite

    configs = {c.strategy.name: c for c in expand(load_suite(suite), out="x")}
    for name, old in IDS_0_2_0[suite].items():
        cfg = configs[name]
        assert cfg.train.batchnorm == "train" and cfg.train.batchnorm_recompute and cfg.id != old
        d = to_dict(cfg)
        d["train"]["batchnorm_recompute"] = False
        if name in ("fda", "proxy_fda"):
            assert cfg.strategy.params["tau"] == 0.05
            d["strategy"]["tau"] = 0.02
        assert from_dict(d).id == old, name


def test_clipping_is_on_by_default_and_null_turns_it_off():
    from proxyfda_cl.config import make_config

    assert make_config({}).train.grad_clip == 1.0
    assert make_config({}, ["train.grad_clip=null"]).train.grad_clip is None


def test_an_inline_stream_is_not_labelled_demo(tmp_path):
    from proxyfda_cl.config import make_config
    from proxyfda_cl.core.record import record_name

    cfg = make_config({"benchmark": {"experiences": ["digits[0:5]", "digits[5:10]"]}})
    assert cfg.benchmark.name == "digits[0:5]+digits[5:10]"
    assert "demo" not in record_name({"benchmark": {"name": cfg.benchmark.name},
                                      "strategy": {"name": "naive"}, "seed": 0}, cfg.id)
    assert make_config({}).benchmark.name == "demo"
    named = make_config({"benchmark": {"name": "mine", "experiences": ["digits"]}})
    assert named.benchmark.name == "mine"
