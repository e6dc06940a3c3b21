"""The dataset contract every loader returns, and the dataset registry.

A dataset is named ``prefix`` or ``prefix:spec`` (``concept:shape``, ``digits``, ``mnist``,
``imagefolder:/data/resisc45``). Its factory is registered under ``prefix`` and called as
``factory(spec, root=..., download=..., seed=..., image_size=...) -> TaskData``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from ..core.registry import Registry

DATASETS: Registry[Callable[..., "TaskData"]] = Registry("dataset", "benchmark.experiences/probes")


@dataclass
class TaskData:
    """One labelled dataset with its train and test splits.

    Items of ``train`` and ``test`` are ``(image, label)``: the image is a PIL image or a
    ``[3, H, W]`` tensor (uint8, or float in [0, 1]); no encoder preprocessing applied yet.
    ``train_targets``/``test_targets`` are int64 tensors of the labels, in item order.
    """

    name: str
    train: Dataset
    test: Dataset
    classes: Sequence[str]
    train_targets: torch.Tensor
    test_targets: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def split_name(name: str) -> tuple[str, str]:
    """``"imagefolder:/x"`` -> ``("imagefolder", "/x")``; ``"mnist"`` -> ``("mnist", "")``."""
    prefix, _, spec = name.partition(":")
    return prefix, spec


def load_dataset(name: str, *, root: str, download: bool = False, seed: int = 0,
                 image_size: int = 32) -> TaskData:
    """Load a dataset by its full name through the registry."""
    prefix, spec = split_name(name)
    return DATASETS.get(prefix)(spec, root=root, download=download, seed=seed,
                                image_size=image_size)
