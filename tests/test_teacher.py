"""The frozen teacher: what it equals during and across experiences, and how it is shared."""
import copy

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from proxyfda_cl.models.base import Encoder, EncoderWithHeads
from proxyfda_cl.strategies import FDAPlugin, LDIFSPlugin, Teacher
from proxyfda_cl.strategies.builtin import EvalModeLwFPlugin
from proxyfda_cl.benchmarks.streams import tensor_benchmark
from proxyfda_cl.strategies.teacher import as_features


class TinyEncoder(Encoder):
    """Two convolutions with BatchNorm, on 8x8 images."""

    def __init__(self):
        super().__init__(feature_dim=8, input_size=8, mean=(0.0,) * 3, std=(1.0,) * 3,
                         ldifs_layers={"conv1": 1, "conv2": 1})
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x))))).mean((2, 3))


def toy_stream(n_exp=2, n_cls=4, per_cls=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = []
    for _ in range(n_exp):
        y = torch.arange(n_cls).repeat_interleave(per_cls)
        data.append((torch.randn(len(y), 3, 8, 8, generator=g) + y[:, None, None, None] * 0.3, y))
    return tensor_benchmark(data)


def make_strategy(plugins, epochs=1):
    torch.manual_seed(0)
    model = EncoderWithHeads(TinyEncoder())
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                 criterion=nn.CrossEntropyLoss(), train_mb_size=12, train_epochs=epochs,
                 plugins=plugins, evaluator=EvaluationPlugin(loggers=[]), eval_every=-1)


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


class Spy(SupervisedPlugin):
    """Records encoder states at experience boundaries and the teacher at every step."""

    def __init__(self, plugin):
        super().__init__()
        self.plugin = plugin
        self.starts, self.ends, self.steps = [], [], []

    def before_training_exp(self, strategy, **kwargs):
        self.starts.append(state(strategy.model.encoder))

    def before_backward(self, strategy, **kwargs):
        self.steps.append((len(self.starts) - 1, state(self.plugin.teacher),
                           state(strategy.model.encoder), self.plugin.teacher))

    def after_training_exp(self, strategy, **kwargs):
        self.ends.append(state(strategy.model.encoder))


@pytest.mark.parametrize("mode", ["previous", "pretrained"])
def test_teacher_is_the_frozen_model_at_the_start_of_the_experience(mode):
    plugin = FDAPlugin(k=3, teacher=mode)
    spy = Spy(plugin)
    strategy = make_strategy([spy, plugin], epochs=2)
    strategy.train(toy_stream().train_stream)

    assert [e for e, *_ in spy.steps] == [0] * 4 + [1] * 4
    assert not same(spy.ends[0], spy.starts[0])
    assert same(spy.starts[1], spy.ends[0])
    for exp, teacher, student, module in spy.steps:
        expected = spy.starts[exp] if mode == "previous" else spy.starts[0]
        assert same(teacher, expected)  # includes BatchNorm running statistics
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
        assert not module._forward_hooks
    assert any(not same(t, s) for e, t, s, _m in spy.steps if e == 1)  # the student moves on
    model_params = {id(p) for p in strategy.model.parameters()}
    opt_params = {id(p) for g in strategy.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in model_params | opt_params for p in plugin.teacher.parameters())


class CountTeacherCalls(SupervisedPlugin):
    def __init__(self, plugins):
        super().__init__()
        self.plugins, self.calls, self.per_step = plugins, 0, []

    def before_training_exp(self, strategy, **kwargs):
        assert self.plugins[0].teacher is self.plugins[1].teacher
        self.plugins[0].teacher.register_forward_pre_hook(lambda *a: setattr(self, "calls", self.calls + 1))

    def before_forward(self, strategy, **kwargs):
        self.calls = 0

    def before_backward(self, strategy, **kwargs):
        self.per_step.append(self.calls)


def test_plugins_handed_one_teacher_share_it_and_one_teacher_forward():
    shared = Teacher(mode="previous")
    fda, ldifs = FDAPlugin(k=3, teacher=shared), LDIFSPlugin(teacher=shared)
    counter = CountTeacherCalls([fda, ldifs])
    make_strategy([fda, ldifs, counter]).train(toy_stream().train_stream)
    assert counter.per_step == [1] * 4
    assert ldifs.last_loss is not None and fda.last_loss is not None


def test_plugins_built_by_name_hold_their_own_teacher():
    """No hidden link between plugins: each named teacher is the plugin's own."""
    fda, ldifs = FDAPlugin(k=3), LDIFSPlugin()
    make_strategy([fda, ldifs]).train(toy_stream().train_stream[0])
    assert fda.teacher is not ldifs.teacher
    assert all(torch.equal(a, b) for a, b in zip(fda.teacher.state_dict().values(),
                                                 ldifs.teacher.state_dict().values()))


def test_an_explicit_teacher_instance_is_used():
    shared = Teacher(mode="pretrained")
    a, b = FDAPlugin(k=3, teacher=shared), FDAPlugin(k=3, lam=0.5, teacher=shared)
    make_strategy([a, b]).train(toy_stream().train_stream[0])
    assert a.teacher is shared.module is b.teacher


class AutocastEncoderModel(EncoderWithHeads):
    """Runs its encoder under bf16 autocast (Avalanche's multi-head classifier itself cannot)."""

    def forward(self, x, task_labels):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = self.encoder(x)
        return self.heads(feats.float(), task_labels)


def test_teacher_runs_under_the_students_autocast():
    plugin = FDAPlugin(k=3)
    dtypes = []

    class Probe(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            dtypes.append((plugin.student_features().dtype, plugin.teacher_outputs()[0].dtype))

    strategy = make_strategy([plugin, Probe()])
    strategy.model = AutocastEncoderModel(strategy.model.encoder)
    strategy.optimizer = torch.optim.SGD(strategy.model.parameters(), lr=0.1)
    strategy.train(toy_stream().train_stream[0])
    assert dtypes and all(d == (torch.bfloat16, torch.bfloat16) for d in dtypes)
    assert plugin.last_loss.dtype == torch.float32 and plugin.last_loss.isfinite()


def test_encoder_outputs_are_flattened_and_bad_modes_rejected():
    assert as_features(torch.randn(2, 3, 4, 4)).shape == (2, 48)
    assert as_features((torch.randn(2, 5), None)).shape == (2, 5)
    with pytest.raises(ValueError, match="teacher must be one of"):
        FDAPlugin(teacher="latest")
    with pytest.raises(AttributeError, match="encoder_attr"):
        make_strategy([FDAPlugin(k=3, encoder_attr="backbone")]).train(toy_stream().train_stream[0])


def test_a_deep_copy_of_the_model_mid_experience_neither_drags_the_plugin_nor_feeds_its_hooks():
    plugin = FDAPlugin(k=3)
    seen = []

    class Copier(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            twin = copy.deepcopy(strategy.model)  # a live forward hook must not copy the plugin
            plugin._capturing = True  # even while capturing, the copy's calls are ignored
            twin(torch.ones_like(strategy.mb_x), strategy.mb_task_id)
            plugin._capturing = False

    class Probe(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            with torch.no_grad():
                seen.append(torch.allclose(plugin.student_features(), strategy.model.encoder(strategy.mb_x)))

    lwf = EvalModeLwFPlugin(alpha=1.0, temperature=2.0)
    make_strategy([lwf, Copier(), plugin, Probe()]).train(toy_stream().train_stream)
    assert seen == [True] * 4


def test_a_pretrained_teacher_survives_a_new_strategy_object():
    # As after restoring a checkpoint: the same plugin (and model) in a fresh strategy.
    plugin = FDAPlugin(k=3, teacher="pretrained")
    first = make_strategy([plugin])
    start = state(first.model.encoder)
    first.train(toy_stream().train_stream[0])
    assert not same(state(first.model.encoder), start)
    second = Naive(model=first.model, optimizer=torch.optim.SGD(first.model.parameters(), lr=0.1),
                   train_mb_size=12, plugins=[plugin], evaluator=EvaluationPlugin(loggers=[]),
                   eval_every=-1)
    second.train(toy_stream().train_stream[1])
    assert same(state(plugin.teacher), start)


class TeacherSamples(SupervisedPlugin):
    """Counts the samples that go through the teacher at each training step."""

    def __init__(self, plugin):
        super().__init__()
        self.plugin, self.per_step, self.n = plugin, [], 0

    def before_training_exp(self, strategy, **kwargs):
        self.plugin.teacher.register_forward_pre_hook(
            lambda m, args: setattr(self, "n", self.n + len(args[0])))

    def before_forward(self, strategy, **kwargs):
        self.n = 0

    def before_backward(self, strategy, **kwargs):
        self.per_step.append((self.n, self.plugin.last_loss))


@pytest.mark.parametrize("cache_mb,expected", [(16.0, [12, 12, 0, 0, 0, 0]), (1e-6, [12] * 6),
                                               (0.0, [12] * 6)])
def test_teacher_features_are_cached_by_dataset_index(cache_mb, expected):
    from proxyfda_cl.training.sampling import BatchSamplerPlugin

    runs = {}
    for mb in (0.0, cache_mb):
        plugin = FDAPlugin(k=3, teacher_cache_mb=mb)
        counter = TeacherSamples(plugin)
        sampler = BatchSamplerPlugin(kind="random", batch_size=12, teachers=[plugin])
        make_strategy([plugin, counter, sampler],
                      epochs=3).train(toy_stream().train_stream)
        runs[mb] = counter.per_step
    assert [n for n, _ in runs[cache_mb]] == expected * 2
    for (_, live), (_, cached) in zip(runs[0.0], runs[cache_mb]):
        torch.testing.assert_close(cached, live)


def test_the_sampler_hands_each_step_its_dataset_indices():
    from proxyfda_cl.training.sampling import BatchSamplerPlugin, current_batch_indices

    plugin = FDAPlugin(k=3)
    pairs = []

    class Reads(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            pairs.append((plugin.batch_indices, current_batch_indices(strategy)))

    sampler = BatchSamplerPlugin(kind="random", batch_size=12, teachers=[plugin])
    make_strategy([plugin, Reads(), sampler], epochs=1).train(toy_stream().train_stream)
    assert pairs and all(mine is theirs and mine is not None for mine, theirs in pairs)
    assert plugin.batch_indices is None  # cleared after each step
    alone = FDAPlugin(k=3)  # no sampler: no indices, the teacher runs on every batch
    make_strategy([alone], epochs=1).train(toy_stream().train_stream)
    assert alone.batch_indices is None


def test_teacher_cache_runs_only_the_unseen_samples():
    teacher = Teacher(cache_mb=1.0)
    teacher.module = nn.Linear(4, 3).eval().requires_grad_(False)
    seen = []
    teacher.module.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    x = torch.randn(10, 4)
    amp = ("cpu", False, torch.bfloat16)
    for idx in ([0, 1, 2, 3], [2, 3, 4, 5], [5, 4, 3, 2]):
        i = torch.tensor(idx)
        out, _ = teacher.forward((x[i].clone(),), {}, amp, indices=i, size=10, key=0)
        lin = teacher.module
        torch.testing.assert_close(out, x[i] @ lin.weight.T + lin.bias)
    assert seen == [4, 2]
    teacher.forward((x[:2].clone(),), {}, amp, indices=torch.tensor([0, 1]), size=10, key=1)
    assert seen == [4, 2, 2]  # a new experience starts an empty cache
