"""The concept world: procedurally generated images of shapes x colours x textures x backgrounds.

Every image carries all four attribute labels, so a task can be any attribute
(``concept:shape``), a combination (``concept:shape+colour``: one class per pair) or, with
the stream's class-subset syntax, a subset of classes (``concept:shape[0:3]``). Fine-tuning
on one attribute erodes what the encoder knows of the others: that is the concept forgetting
the suite measures. The images come from the world's generator (``proxyfda_cl.benchmarks.world``).
"""
from __future__ import annotations

import hashlib

import torch
from torch.utils.data import Dataset

from ..core.errors import ConfigError
from .world import ATTRIBUTES, BACKGROUNDS, COLOURS, SHAPES, TEXTURES, WorldParams, generate
from .base import DATASETS, TaskData

__all__ = ["ATTRIBUTES", "BACKGROUNDS", "COLOURS", "SHAPES", "TEXTURES", "TensorImageDataset",
           "WorldParams", "concept_dataset", "generate", "task_labels"]


class TensorImageDataset(Dataset):
    """In-memory images (uint8 ``[N, 3, H, W]``) with int64 labels; items ``(image, label)``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError("images and labels differ in length")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def task_labels(labels: dict[str, torch.Tensor], task: str) -> tuple[torch.Tensor, list[str]]:
    """Labels and class names of a task: an attribute or ``a+b`` combination."""
    parts = task.split("+")
    for p in parts:
        if p not in ATTRIBUTES:
            raise ConfigError(f"concept:{task}: unknown attribute {p!r}; choose from "
                              f"{', '.join(ATTRIBUTES)} or a combination like shape+colour")
    y = torch.zeros_like(labels[parts[0]])
    names = [""]
    for p in parts:
        vocab = ATTRIBUTES[p]
        y = y * len(vocab) + labels[p]
        names = [f"{a}+{b}" if a else b for a in names for b in vocab]
    return y, names


def _seed_for(task: str, seed: int, split: str) -> int:
    blob = f"concept-world/{task}/{split}/{seed}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little")


@DATASETS.register("concept")
def concept_dataset(spec: str, *, root: str = "", download: bool = False, seed: int = 0,
                    image_size: int = 32, n_train: int = 2400, n_test: int = 800) -> TaskData:
    """A concept-world task (``spec`` = attribute or ``a+b``) with its own images.

    Train and test images are fresh draws, seeded by task, split and ``seed``.
    """
    task = spec or "shape"
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = generate(n, seed=_seed_for(task, seed, split), size=image_size)
        y, names = task_labels(labels, task)
        splits[split] = TensorImageDataset(images, y)
    return TaskData(name=f"concept:{task}", train=splits["train"], test=splits["test"],
                    classes=names, train_targets=splits["train"].labels,
                    test_targets=splits["test"].labels)
