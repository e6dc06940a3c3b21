"""Every plugin inside a plain avalanche.training.Naive: the loss changes exactly by its formula."""
import copy
import math

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.models import FeatureExtractorModel
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from proxyfda_cl.core.errors import ConfigError, ResultWarning
from proxyfda_cl.models.base import Encoder, EncoderWithHeads
from proxyfda_cl.strategies import (FDAPlugin, L2SPPlugin, LDIFSPlugin, LPFTPlugin, ProxyFDAPlugin,
                                    build_strategy)
from proxyfda_cl.strategies.fda import fda_loss
from proxyfda_cl.strategies.ldifs import layer_distance
from proxyfda_cl.benchmarks.streams import tensor_benchmark
from proxyfda_cl.tools.overhead import measure_overhead
from proxyfda_cl.strategies.proxy import ProxyGenerator, proxy_fda_loss


class TinyEncoder(Encoder):
    """Two convolutions (optionally with BatchNorm) on 8x8 images, 8-d embedding."""

    def __init__(self, bn: bool = False):
        super().__init__(feature_dim=8, input_size=8, mean=(0.0,) * 3, std=(1.0,) * 3,
                         ldifs_layers={"conv1": 1, "conv2": 1})
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x))))).mean((2, 3))


def toy_stream(n_exp=2, n_cls=4, per_cls=6, extra=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = []
    for _ in range(n_exp):
        y = torch.cat([torch.arange(n_cls).repeat_interleave(per_cls), torch.arange(extra) % n_cls])
        data.append((torch.randn(len(y), 3, 8, 8, generator=g) + y[:, None, None, None] * 0.3, y))
    return tensor_benchmark(data)


def make_strategy(plugins, epochs=1, bn=False, momentum=0.0, model=None):
    torch.manual_seed(0)
    model = model or EncoderWithHeads(TinyEncoder(bn))
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum),
                 criterion=nn.CrossEntropyLoss(), train_mb_size=12, train_epochs=epochs,
                 plugins=plugins, evaluator=EvaluationPlugin(loggers=[]), eval_every=-1)


class Capture(SupervisedPlugin):
    """Put before the plugin: CE-only loss, inputs, a teacher copy and the generators' state
    (``gen`` the final embedding's, ``gens`` every depth's)."""

    def __init__(self, plugin):
        super().__init__()
        self.plugin, self.rows = plugin, []

    def before_training_exp(self, strategy, **kwargs):
        self.teacher = copy.deepcopy(strategy.model.encoder).eval()

    def before_backward(self, strategy, **kwargs):
        temp = getattr(self.plugin, "temperature", None)
        self.pending = dict(ce=strategy.loss.detach().clone(), x=strategy.mb_x.clone(),
                            teacher=self.teacher, gen=copy.deepcopy(getattr(self.plugin, "generator", None)),
                            temp=[float(torch.as_tensor(v).detach()) for v in temp.values()] if temp is not None else None,
                            gens={n: copy.deepcopy(g) for n, (g, _) in getattr(self.plugin, "generators", {}).items()})


class Total(SupervisedPlugin):
    """Put after the plugin: the total loss and the student as it ran."""

    def __init__(self, capture):
        super().__init__()
        self.capture = capture

    def before_backward(self, strategy, **kwargs):
        row = self.capture.pending
        row.update(total=strategy.loss.detach().clone(), student=copy.deepcopy(strategy.model.encoder))
        self.capture.rows.append(row)


def ref_fda(row):
    tau, bias = row["temp"]
    return fda_loss(row["student"](row["x"]), row["teacher"](row["x"]), k=3, tau=tau, bias=bias)


def ref_proxy(row):
    gen = row["gen"] if row["gen"] is not None else ProxyGenerator(8, seed=0)
    return proxy_fda_loss(row["student"](row["x"]), row["teacher"](row["x"]), gen, k=3).fda


def ref_ldifs(row):
    def layers(enc, x):
        c1 = enc.conv1(x)
        c2 = enc.conv2(torch.relu(c1))
        return [c1, c2], enc(x)

    (s1, s2), s = layers(row["student"], row["x"])
    (t1, t2), t = layers(row["teacher"], row["x"])
    unit = lambda a: a / a.norm(dim=1, keepdim=True)  # noqa: E731  (channel dim of [B, C, H, W])
    conv = [((unit(a) - unit(b)) ** 2).sum(1).mean((1, 2)).mean() for a, b in ((s1, t1), (s2, t2))]
    final = ((unit(s) - unit(t)) ** 2).sum(1).mean()
    return (conv[0] + conv[1] + final) / 3


def ref_l2sp(row):
    return sum(((p - q) ** 2).sum() for p, q in zip(row["student"].parameters(), row["teacher"].parameters()))


@pytest.mark.parametrize("shape,dim", [((3, 5, 4, 4), 1), ((3, 6, 5), -1), ((3, 7), 1)])
def test_layer_distance_normalises_channels_and_averages_positions(shape, dim):
    a, b = torch.randn(shape), torch.randn(shape)
    a.select(dim, 0).zero_()
    a.movedim(dim, -1).reshape(-1, shape[dim])[1].zero_()  # one position with a zero vector
    n = lambda t: torch.nn.functional.normalize(t, dim=dim)  # noqa: E731
    d = ((n(a) - n(b)) ** 2).sum(dim)
    expected = d.flatten(1).mean(1) if d.dim() > 1 else d
    torch.testing.assert_close(layer_distance(a, b, dim), expected)


#: the references compute METHOD.md's formula at its own defaults (fixed boundary, b = 0, τ = 0.1)
FORMULA = {"tau": 0.1, "boundary": "fixed"}
CASES = {
    "fda": (lambda c: FDAPlugin(lam=0.7, k=3, **FORMULA), 0.7, ref_fda),
    "fda_learnable": (lambda c: FDAPlugin(lam=0.7, k=3, learnable_temperature=True, temp_lr=0.05,
                                          **FORMULA), 0.7, ref_fda),
    "proxy_fda": (lambda c: ProxyFDAPlugin(lam=0.7, k=3, **FORMULA), 0.7, ref_proxy),
    "ldifs": (lambda c: LDIFSPlugin(alpha=10.0), 10.0, ref_ldifs),
    "l2sp": (lambda c: L2SPPlugin(alpha=0.5), 0.5, ref_l2sp),
}


@pytest.mark.parametrize("name", list(CASES))
def test_loss_changes_exactly_by_the_formula(name):
    factory, coef, reference = CASES[name]
    plugin = factory(None)
    capture = Capture(plugin)
    make_strategy([capture, plugin, Total(capture)], epochs=2).train(toy_stream().train_stream)
    assert len(capture.rows) == 8  # 2 experiences x 2 epochs x 2 minibatches
    with torch.no_grad():
        for row in capture.rows:
            expected = coef * reference(row)
            torch.testing.assert_close((row["total"] - row["ce"]).squeeze(), expected, atol=1e-5, rtol=1e-4)
    assert any(float(r["total"] - r["ce"]) > 1e-4 for r in capture.rows)
    if name == "fda_learnable":
        assert plugin.temperature.log_inv_tau.item() != pytest.approx(math.log(10.0))


class LossLog(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.losses = []

    def before_backward(self, strategy, **kwargs):
        self.losses.append(strategy.loss.detach().clone())


@pytest.mark.parametrize("plugin", [FDAPlugin(lam=0.0, k=3), ProxyFDAPlugin(lam=0.0, k=3),
                                    LDIFSPlugin(alpha=0.0), L2SPPlugin(alpha=0.0)],
                         ids=["fda", "proxy_fda", "ldifs", "l2sp"])
def test_zero_weight_gives_naive_losses(plugin):
    naive, ours = LossLog(), LossLog()
    make_strategy([naive]).train(toy_stream().train_stream)
    make_strategy([plugin, ours]).train(toy_stream().train_stream)
    assert len(naive.losses) == 4
    assert all(torch.equal(a, b) for a, b in zip(naive.losses, ours.losses))


def test_proxy_generator_is_trained_by_its_own_optimizer_only():
    plugin = ProxyFDAPlugin(k=3)
    grads = []

    class AfterBackward(SupervisedPlugin):
        def after_backward(self, strategy, **kwargs):
            grads.append([p.grad for p in plugin.generator.parameters()])

    strategy = make_strategy([plugin, AfterBackward()])
    strategy.train(toy_stream().train_stream[0])
    start = {k: v.clone() for k, v in plugin.generator.state_dict().items()}
    strategy.train(toy_stream().train_stream[1])
    assert all(g is None for step in grads for g in step)  # the FDA term leaves no gradient
    assert any(not torch.equal(start[k], v) for k, v in plugin.generator.state_dict().items())
    opt_params = {id(p) for g in strategy.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in opt_params for p in plugin.generator.parameters())
    assert plugin.last_proxy_loss is not None and plugin.last_proxy_loss.isfinite()


def test_lpft_freezes_the_encoder_for_the_probe_epochs_only():
    lpft = LPFTPlugin(lp_epochs=1)
    log = []

    class Spy(SupervisedPlugin):
        def before_training_exp(self, strategy, **kwargs):
            self.start = copy.deepcopy(strategy.model.encoder.state_dict())

        def before_forward(self, strategy, **kwargs):
            log.append(("mode", strategy.clock.train_exp_epochs, strategy.model.encoder.training))

        def after_training_iteration(self, strategy, **kwargs):
            strategy.model.train()  # as a careless plugin or runner might

        def after_training_epoch(self, strategy, **kwargs):
            enc = strategy.model.encoder.state_dict()
            log.append(("same", strategy.clock.train_exp_epochs,
                        all(torch.equal(enc[k], self.start[k]) for k in enc)))

    strategy = make_strategy([lpft, Spy()], epochs=2, bn=True, momentum=0.9)
    strategy.train(toy_stream().train_stream)
    modes = [(e, m) for kind, e, m in log if kind == "mode"]
    assert modes == [(0, False)] * 2 + [(1, True)] * 2 + [(0, False)] * 2 + [(1, True)] * 2
    assert [(e, s) for kind, e, s in log if kind == "same"] == [(0, True), (1, False)] * 2
    assert all(p.requires_grad for p in strategy.model.parameters())


def test_works_with_avalanche_feature_extractor_model():
    plugin = FDAPlugin(k=3, encoder_attr="feature_extractor")
    torch.manual_seed(0)
    model = FeatureExtractorModel(TinyEncoder(), nn.Linear(8, 4))
    make_strategy([plugin], model=model).train(toy_stream().train_stream)
    assert plugin.last_loss is not None and plugin.last_loss > 0
    assert plugin.teacher is not model.feature_extractor


@pytest.mark.parametrize("extra,message", [(2, "skipped minibatches of 2"),
                                           (4, "k=3 lowered to 2 for minibatches of 4")])
def test_small_minibatches_lower_k_or_are_skipped_with_a_warning_each(extra, message):
    plugin = FDAPlugin(k=3)
    steps = []

    class Log(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            steps.append((len(strategy.mb_y), plugin.last_loss))

    with pytest.warns(UserWarning, match=message) as record:
        make_strategy([plugin, Log()], epochs=2).train(toy_stream(n_exp=1, extra=extra).train_stream)
    # one ResultWarning per small minibatch (one each epoch), for the record to count
    assert len([w for w in record if "FDAPlugin" in str(w.message)]) == 2
    assert all(issubclass(w.category, ResultWarning) for w in record if "FDAPlugin" in str(w.message))
    assert sorted(b for b, _ in steps) == [extra] * 2 + [12] * 4
    for (_, before), (b, loss) in zip(steps, steps[1:]):
        assert (loss is before) == (b == 2)  # a term is added unless the batch is skipped


def test_registry_recipes():
    fda = build_strategy("fda", {"k": 4})
    assert fda.sampler == "hard" and isinstance(fda.plugins[0], FDAPlugin) and fda.plugins[0].k == 4
    proxy = build_strategy("proxy_fda", {"n_pos": 2})
    assert proxy.sampler == "hard" and proxy.plugins[0].n_pos == 2
    lp = build_strategy("lp_ft", {"lp_epochs": 2})
    assert lp.extra_epochs == 2 and lp.plugins[0].lp_epochs == 2
    assert build_strategy("l2sp", {}).plugins[0].alpha == 0.5
    assert build_strategy("ldifs", {}).plugins[0].alpha == 10.0
    with pytest.raises(ConfigError, match="teacher"):
        build_strategy("ldifs", {"teacher": "bogus"})
    with pytest.raises(ConfigError, match="tau"):
        build_strategy("fda", {"tau": 0.0})


@pytest.mark.slow
def test_overhead_reports_every_strategy_relative_to_naive():
    out = measure_overhead(TinyEncoder, ["fda", "proxy_fda", "ldifs", "l2sp", "lp_ft"], batch_size=12,
                           steps=2, warmup=1, params={"fda": {"k": 3}, "proxy_fda": {"k": 3}})
    assert list(out) == ["naive", "fda", "proxy_fda", "ldifs", "l2sp", "lp_ft"]
    assert out["naive"]["ratio"] == 1.0
    assert all(v["median_step_s"] > 0 and v["ratio"] > 0 for v in out.values())
