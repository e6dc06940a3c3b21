"""Batch samplers and BatchSamplerPlugin (METHOD.md "Batch construction and hard class mining")."""
import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as mk
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from torch import nn

from proxyfda_cl.training.sampling import (BatchSamplerPlugin, ClassBatchSampler,
                                            RandomBatchSampler, current_batch_indices,
                                            dataset_class_ids)
from proxyfda_cl.core.errors import ConfigError
from proxyfda_cl.models.base import EncoderWithHeads


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _batches(sampler):
    return [torch.tensor(b) for b in sampler]


def test_balanced_batches_are_m_classes_by_n_samples():
    y = torch.arange(10).repeat_interleave(torch.tensor([5, 6, 7, 8, 9, 10, 11, 12, 13, 14]))
    s = ClassBatchSampler(y, 4, 3, generator=_gen())
    batches = _batches(s)
    assert len(s) == len(batches) == len(y) // 12
    for b in batches + [b for _ in range(9) for b in _batches(s)]:
        assert len(b) == 12 and len(set(b.tolist())) == 12      # no repeated sample
        counts = Counter(y[b].tolist())
        assert len(counts) == 4 and set(counts.values()) == {3}


def test_balanced_covers_classes_and_samples_evenly():
    y = torch.arange(7).repeat(20)                               # 7 classes x 20
    s = ClassBatchSampler(y, 3, 2, generator=_gen(1))
    idx = torch.cat(_batches(s) + _batches(s))                   # two epochs
    per_class = torch.bincount(y[idx], minlength=7) // 2
    assert per_class.max() - per_class.min() <= 1               # in units of n draws
    per_sample = torch.bincount(idx, minlength=len(y))
    assert per_sample.max() - per_sample.min() <= 1


def test_fewer_classes_than_m_uses_all_and_keeps_batch_size():
    y = torch.tensor([0] * 40 + [1] * 40 + [2] * 2)
    s = ClassBatchSampler(y, 16, 4, generator=_gen())
    batches = _batches(s)
    assert len(batches) == 1
    for b in batches + _batches(s):
        counts = torch.bincount(y[b], minlength=3)
        assert len(b) == 64 and (counts > 0).all()
        assert sorted(counts.tolist()) == [21, 21, 22]            # 64 = 21 + 21 + 22
        assert set(b[y[b] == 2].tolist()) == {80, 81}            # the tiny class: all + repeats


def test_record_matches_yielded_batches_after_a_partial_epoch():
    from collections import deque
    record = deque()
    s = ClassBatchSampler(torch.arange(5).repeat(8), 2, 2, generator=_gen(), record=record)
    it = iter(s)
    next(it), next(it)                                           # abandoned epoch
    got = _batches(s)
    assert [r.tolist() for r in record] == [b.tolist() for b in got]


def test_random_sampler_is_a_permutation():
    s = RandomBatchSampler(10, 4, generator=_gen())
    batches = _batches(s)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))


# ---------------------------------------------------------------- plugin on a fake strategy

class RingEncoder(nn.Module):
    """Class c (stored as x[:, 0]) -> a point on a circle: class c's neighbours are c +- 1."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes, self.feature_dim = num_classes, 2
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        a = 2 * math.pi * x[:, 0] / self.num_classes
        return torch.stack([a.cos(), a.sin()], 1) + 0 * self.drop(x[:, :2])


def _ring_strategy(C=32, per_class=8, exp_index=0):
    y = torch.arange(C).repeat(per_class)
    x = torch.stack([y.float(), torch.randn(len(y))], 1)
    ds = mk(x, y, task_labels=torch.zeros_like(y), targets=y)
    model = SimpleNamespace(encoder=RingEncoder(C))
    return SimpleNamespace(model=model, adapted_dataset=ds, device=torch.device("cpu"),
                           experience=SimpleNamespace(current_experience=exp_index),
                           clock=SimpleNamespace(train_exp_counter=exp_index)), y


def _adjacent_pair_fraction(strategy, y, C, epochs):
    adjacent = pairs = 0
    for _ in range(epochs):
        for b in strategy.dataloader.batch_sampler:
            cls = sorted(set(y[torch.tensor(b)].tolist()))
            for i in range(len(cls)):
                for j in range(i + 1, len(cls)):
                    d = (cls[j] - cls[i]) % C
                    adjacent += min(d, C - d) == 1
                    pairs += 1
    return adjacent / pairs


def test_hard_mining_prefers_near_classes():
    C, m = 32, 4
    uniform = 2 / (C - 1)                   # P(a random class pair is adjacent on the ring)
    fractions = {}
    for kind in ("balanced", "hard"):
        strategy, y = _ring_strategy(C)
        strategy.model.encoder.train()
        plugin = BatchSamplerPlugin(kind=kind, classes_per_batch=m, samples_per_class=2)
        plugin.before_training_exp(strategy)
        fractions[kind] = _adjacent_pair_fraction(strategy, y, C, epochs=8)  # 256 batches
        assert strategy.model.encoder.training and strategy.model.encoder.drop.training
    sim = plugin.class_similarity
    assert torch.allclose(sim[0, 1], torch.tensor(math.cos(2 * math.pi / C)), atol=1e-5)
    assert abs(fractions["balanced"] - uniform) < 0.03
    assert fractions["hard"] > 4 * uniform


def test_hard_mining_restores_per_module_modes():
    strategy, _ = _ring_strategy(C=20)
    enc = strategy.model.encoder
    enc.train()
    enc.drop.eval()                                              # e.g. a frozen submodule
    BatchSamplerPlugin(kind="hard", classes_per_batch=4, samples_per_class=2
                       ).before_training_exp(strategy)
    assert enc.training and not enc.drop.training


@pytest.mark.parametrize("kind", ["random", "balanced", "hard"])
def test_deterministic_per_seed_and_experience(kind):
    def run(seed, exp_index):
        strategy, _ = _ring_strategy(C=20, exp_index=exp_index)
        plugin = BatchSamplerPlugin(kind=kind, batch_size=16, classes_per_batch=4,
                                    samples_per_class=2, seed=seed)
        plugin.before_training_exp(strategy)
        return [b for _ in range(2) for b in strategy.dataloader.batch_sampler]
    assert run(3, 1) == run(3, 1)
    assert run(3, 1) != run(4, 1) and run(3, 1) != run(3, 2)


def test_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="train.sampler"):
        BatchSamplerPlugin(kind="hardest")
    with pytest.raises(ConfigError, match="classes_per_batch"):
        BatchSamplerPlugin(kind="balanced", classes_per_batch=0)
    strategy, _ = _ring_strategy()
    with pytest.raises(ConfigError, match="encoder_attr"):
        BatchSamplerPlugin(kind="hard", encoder_attr="backbone").before_training_exp(strategy)


def test_class_ids_separate_tasks():
    y = torch.tensor([0, 1, 0, 1])
    ds = mk(torch.zeros(4, 2), y, task_labels=torch.tensor([0, 0, 1, 1]), targets=y)
    ids, C = dataset_class_ids(ds)
    assert C == 4 and len(set(ids.tolist())) == 4


# ---------------------------------------------------------------- inside avalanche Naive

class TinyEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.feature_dim = 8
        self.net = nn.Linear(3, 8)

    def forward(self, x):
        return self.net(x)


class CheckIndices(SupervisedPlugin):
    def __init__(self, xs, ys):
        super().__init__()
        self.xs, self.ys, self.checked = xs, ys, 0

    def before_forward(self, strategy, **kwargs):
        idx = current_batch_indices(strategy)
        exp = strategy.experience.current_experience
        assert torch.equal(strategy.mb_y, self.ys[exp][idx])
        assert torch.equal(strategy.mb_x, self.xs[exp][idx])
        assert (strategy.mb_task_id == exp).all()
        self.checked += 1


@pytest.mark.slow
@pytest.mark.parametrize("kind,workers", [("hard", 0), ("balanced", 2), ("random", 2)])
def test_plugin_inside_naive(kind, workers):
    torch.manual_seed(0)
    xs, ys, trains = [], [], []
    for t in range(2):
        y = torch.arange(6).repeat(10)
        x = torch.randn(len(y), 3) + y[:, None].float()
        xs.append(x), ys.append(y)
        trains.append(mk(x, y, task_labels=torch.full_like(y, t), targets=y))
    bm = with_classes_timeline(with_task_labels(benchmark_from_datasets(train=trains,
                                                                         test=trains)))
    model = EncoderWithHeads(TinyEncoder())
    checker = CheckIndices(xs, ys)
    sampler = BatchSamplerPlugin(kind=kind, batch_size=16, classes_per_batch=4,
                                 samples_per_class=3, num_workers=workers)
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     train_mb_size=7, train_epochs=2, plugins=[sampler, checker],
                     evaluator=None, eval_every=-1)
    before = model.encoder.net.weight.detach().clone()
    for exp in bm.train_stream:
        strategy.train(exp, num_workers=0)
        assert current_batch_indices(strategy) is None
    per_exp = math.ceil(60 / 16) if kind == "random" else 60 // 12
    assert checker.checked == 2 * 2 * per_exp
    assert not torch.equal(before, model.encoder.net.weight)


def test_hard_mining_uses_the_frozen_teacher_it_is_handed():
    from types import SimpleNamespace

    teacher, encoder = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    handed = SimpleNamespace(teacher=teacher)
    strategy = SimpleNamespace(plugins=[handed], model=SimpleNamespace(encoder=encoder))
    assert BatchSamplerPlugin(kind="hard", teachers=[handed])._encoder(strategy) is teacher
    not_yet = SimpleNamespace(teacher=None)  # no snapshot yet: the model's encoder
    assert BatchSamplerPlugin(kind="hard", teachers=[not_yet, handed])._encoder(strategy) is teacher
    assert BatchSamplerPlugin(kind="hard", teachers=[not_yet])._encoder(strategy) is encoder
    assert BatchSamplerPlugin(kind="hard")._encoder(strategy) is encoder  # only what it is handed


class IndexReader:
    """Stands for a plugin that reads the teacher: records what the sampler hands it."""

    teacher = None

    def __init__(self):
        self.batches = []

    def set_batch(self, indices, size, key):
        self.batches.append((indices, size, key))


def test_every_minibatch_is_handed_to_the_teacher_readers():
    y = torch.arange(6).repeat(5)
    train = mk(torch.randn(len(y), 3), y, task_labels=torch.zeros_like(y), targets=y)
    bm = with_classes_timeline(with_task_labels(benchmark_from_datasets(train=[train],
                                                                         test=[train])))
    model = EncoderWithHeads(TinyEncoder())
    reader = IndexReader()
    seen = []

    class Seen(SupervisedPlugin):
        def before_forward(self, strategy, **kwargs):
            seen.append(current_batch_indices(strategy))

    sampler = BatchSamplerPlugin(kind="random", batch_size=8, teachers=[reader])
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     train_mb_size=7, train_epochs=2, plugins=[sampler, Seen()],
                     evaluator=None, eval_every=-1)
    strategy.train(bm.train_stream[0], num_workers=0)
    assert len(reader.batches) == len(seen) == 2 * 4
    for (indices, size, key), idx in zip(reader.batches, seen):
        assert indices is idx and size == 30 and key == (id(strategy), 0)
