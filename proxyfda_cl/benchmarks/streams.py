"""Named benchmarks and the stream builder: config -> Avalanche benchmark + probe sets.

A benchmark is a list of experience datasets (one task each, task-incremental: one head
per experience) and a list of held-out probe datasets never trained on. Any dataset name
may carry a class subset, ``cifar100[0:10]`` or ``concept:shape[0,2,4]``; the classes are
relabelled 0..k-1 in the order given.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils import (_make_taskaware_classification_dataset,
                                        _make_taskaware_tensor_classification_dataset)
from torch.utils.data import Dataset, Subset

from ..core.errors import ConfigError
from ..core.registry import Registry
from .base import TaskData, load_dataset
from .concept_world import TensorImageDataset
from .splits import long_tail, train_val_split

BENCHMARKS: Registry[dict] = Registry("benchmark", "benchmark.name")
_MATERIALIZE_BYTES = 512 * 2**20

BENCHMARKS.register("demo")({
    "experiences": ["concept:shape", "concept:texture", "digits"],
    "probes": ["concept:colour", "concept:background"],
})
BENCHMARKS.register("concept")({
    "experiences": ["concept:shape", "concept:texture", "concept:background"],
    "probes": ["concept:colour"],
})
BENCHMARKS.register("split-cifar100")({
    "experiences": [f"cifar100[{i}:{i + 10}]" for i in range(0, 100, 10)],
    "probes": [],
})



def resolve(cfg) -> tuple[list[str], list[str]]:
    """Experience and probe names of a ``BenchmarkConfig`` (inline lists win over the name)."""
    if cfg.experiences:
        return [str(e) for e in cfg.experiences], [str(p) for p in (cfg.probes or [])]
    spec = BENCHMARKS.get(cfg.name)
    probes = cfg.probes if cfg.probes is not None else spec["probes"]
    return list(spec["experiences"]), [str(p) for p in probes]


_SUBSET = re.compile(r"^(?P<name>.*)\[(?P<sel>[0-9:, ]+)\]$")


def parse_subset(name: str) -> tuple[str, Optional[list[int]], Optional[tuple[int, int]]]:
    m = _SUBSET.match(name)
    if not m:
        return name, None, None
    sel = m.group("sel").replace(" ", "")
    if ":" in sel:
        a, _, b = sel.partition(":")
        if not (a.isdigit() and b.isdigit()) or int(a) >= int(b):
            raise ConfigError(f"benchmark dataset {name!r}: class range must be [a:b] with a < b")
        return m.group("name"), None, (int(a), int(b))
    picks = [int(c) for c in sel.split(",") if c]
    if not picks:
        raise ConfigError(f"benchmark dataset {name!r}: empty class selection; write [a:b] or [i,j,...]")
    return m.group("name"), picks, None


def _class_subset(task: TaskData, full_name: str, classes: list[int]) -> TaskData:
    if max(classes) >= task.num_classes:
        raise ConfigError(f"benchmark dataset {full_name!r}: class {max(classes)} out of range "
                          f"(the dataset has {task.num_classes})")
    remap = torch.full((task.num_classes,), -1, dtype=torch.int64)
    remap[torch.tensor(classes)] = torch.arange(len(classes))

    def cut(ds: Dataset, targets: torch.Tensor) -> tuple[Dataset, torch.Tensor]:
        idx = torch.nonzero(remap[targets] >= 0).flatten()
        new_t = remap[targets[idx]]
        if isinstance(ds, TensorImageDataset):
            return TensorImageDataset(ds.images[idx], new_t), new_t
        return _Relabelled(Subset(ds, idx.tolist()), new_t), new_t

    train, tr_t = cut(task.train, task.train_targets)
    test, te_t = cut(task.test, task.test_targets)
    return TaskData(name=full_name, train=train, test=test,
                    classes=[task.classes[c] for c in classes], train_targets=tr_t,
                    test_targets=te_t)


class _Relabelled(Dataset):
    def __init__(self, ds: Dataset, targets: torch.Tensor) -> None:
        self.ds, self.targets = ds, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.ds[i][0], int(self.targets[i])


def load_task(name: str, *, root: str, download: bool, seed: int, image_size: int) -> TaskData:
    """Load a dataset by name, applying a ``[a:b]`` / ``[i,j]`` class subset if present."""
    base, picks, rng = parse_subset(name)
    task = load_dataset(base, root=root, download=download, seed=seed, image_size=image_size)
    if rng is not None:
        picks = list(range(*rng))
    return _class_subset(task, name, picks) if picks is not None else task


def limit(ds: Dataset, targets: torch.Tensor, n: Optional[int], seed: int
          ) -> tuple[Dataset, torch.Tensor]:
    """A seeded random subset of at most ``n`` items (all of them when ``n`` is None)."""
    if n is None or n >= len(targets):
        return ds, targets
    idx = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return _take(ds, targets, idx)


class Preprocessed(Dataset):
    """Applies ``transform`` to each image on access; items ``(image, label)``."""

    def __init__(self, ds: Dataset, targets: torch.Tensor, transform: Callable) -> None:
        self.ds, self.targets, self.transform = ds, targets, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.transform(self.ds[i][0]), int(self.targets[i])


def preprocess(ds: Dataset, targets: torch.Tensor, transform: Callable, input_size: int
               ) -> tuple[Dataset, Optional[torch.Tensor]]:
    """Preprocess in-memory images once (a tensor dataset) when they fit in memory, else lazily.

    Returns the dataset and, when materialised, the image tensor.
    """
    if isinstance(ds, TensorImageDataset) and len(ds) * 3 * input_size ** 2 * 4 <= _MATERIALIZE_BYTES:
        chunks = [transform(ds.images[i:i + 1024]) for i in range(0, len(ds), 1024)]
        x = torch.cat(chunks) if chunks else torch.empty(0, 3, input_size, input_size)
        return torch.utils.data.TensorDataset(x, targets), x
    return Preprocessed(ds, targets, transform), None


@dataclass
class EvalSet:
    """A dataset as the evaluators see it: preprocessed splits and labels."""

    name: str
    num_classes: int
    train: Dataset
    train_targets: torch.Tensor
    test: Dataset
    test_targets: torch.Tensor


@dataclass
class Stream:
    """An Avalanche benchmark (train/test streams) plus every dataset for the probes."""

    benchmark: object
    experiences: list[str]
    probes: list[str]
    sets: dict[str, EvalSet]


def build_stream(cfg, transform: Callable, input_size: int, *, seed: int,
                 probe_train_size: Optional[int], probe_test_size: Optional[int]) -> Stream:
    """Load every dataset of ``cfg`` (a ``BenchmarkConfig``) and build the Avalanche benchmark.

    Each experience's training set is its dataset's train split minus a seeded, stratified
    ``val_fraction`` held out (kept for validation), made long-tailed when ``imbalance`` > 1
    (``long_tail``; test sets stay as loaded), limited to ``train_size``; tests to
    ``test_size``. Probe sets use ``probe_train_size``/``probe_test_size``.
    """
    exp_names, probe_names = resolve(cfg)
    if not exp_names:
        raise ConfigError("benchmark.experiences: the stream needs at least one experience")
    dup = {n for n in exp_names + probe_names if (exp_names + probe_names).count(n) > 1}
    if dup:
        raise ConfigError(f"benchmark: dataset(s) {', '.join(sorted(dup))} listed twice; "
                          f"a dataset is either an experience or a probe, once")
    root = os.path.expanduser(cfg.root)
    image_size = cfg.image_size or input_size
    train_sets, test_sets, sets = [], [], {}
    for t, name in enumerate(exp_names + probe_names):
        task = load_task(name, root=root, download=cfg.download, seed=seed, image_size=image_size)
        is_exp = t < len(exp_names)
        tr_ds, tr_t = task.train, task.train_targets
        if is_exp and cfg.val_fraction > 0:
            keep, _ = train_val_split(tr_t, cfg.val_fraction, seed=seed)
            tr_ds, tr_t = _take(tr_ds, tr_t, keep)
        if is_exp and cfg.imbalance != 1:
            tr_ds, tr_t = _take(tr_ds, tr_t, long_tail(tr_t, cfg.imbalance, seed=seed + 3))
        n_tr = cfg.train_size if is_exp else probe_train_size
        n_te = cfg.test_size if is_exp else probe_test_size
        tr_ds, tr_t = limit(tr_ds, tr_t, n_tr, seed + 1)
        te_ds, te_t = limit(task.test, task.test_targets, n_te, seed + 2)
        tr_p, tr_x = preprocess(tr_ds, tr_t, transform, input_size)
        te_p, te_x = preprocess(te_ds, te_t, transform, input_size)
        sets[name] = EvalSet(name, task.num_classes, tr_p, tr_t, te_p, te_t)
        if is_exp:
            train_sets.append(_avalanche(tr_p, tr_x, tr_t, t))
            test_sets.append(_avalanche(te_p, te_x, te_t, t))
    return Stream(benchmark=_benchmark(train_sets, test_sets), experiences=exp_names,
                  probes=probe_names, sets=sets)


def tensor_benchmark(data: list):
    """A task-incremental Avalanche benchmark from tensors: one experience (and task label)
    per ``(x, y)`` pair in ``data``; the same tensors serve as train and test sets."""
    sets = [_make_taskaware_tensor_classification_dataset(x, y, task_labels=torch.full_like(y, t),
                                                           targets=y)
            for t, (x, y) in enumerate(data)]
    return _benchmark(sets, sets)


def _benchmark(train_sets: list, test_sets: list):
    """Avalanche's task-aware benchmark over per-experience datasets, with class timelines."""
    return with_classes_timeline(with_task_labels(benchmark_from_datasets(train=train_sets,
                                                                          test=test_sets)))


def _take(ds: Dataset, targets: torch.Tensor, idx: torch.Tensor) -> tuple[Dataset, torch.Tensor]:
    if isinstance(ds, TensorImageDataset):
        return TensorImageDataset(ds.images[idx], targets[idx]), targets[idx]
    return _Relabelled(Subset(ds, idx.tolist()), targets[idx]), targets[idx]


def _avalanche(ds: Dataset, x: Optional[torch.Tensor], targets: torch.Tensor, task: int):
    if x is not None:
        return _make_taskaware_tensor_classification_dataset(x, targets, task_labels=task,
                                                              targets=targets)
    return _make_taskaware_classification_dataset(ds, task_labels=task, targets=targets.tolist())
