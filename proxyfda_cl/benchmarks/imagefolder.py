"""``imagefolder:<dir>``: a labelled data set from class sub-folders of images.

Two layouts are read:

- ``<dir>/train/<class>/...`` and ``<dir>/test/<class>/...`` (``<dir>/val`` stands in for a
  missing ``test``): the classes found under ``train`` define the label indices (sorted names,
  as ``torchvision.datasets.ImageFolder`` orders them); a test class not in ``train`` is an error,
  a training class with no test images is allowed.
- ``<dir>/<class>/...`` with no such split: a stratified 80/20 split drawn with the fixed
  ``TEST_SPLIT_SEED``, so every run sees the same test set.

A relative ``<dir>`` is looked up under ``benchmark.root`` first, then the working directory.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from ..core.errors import ConfigError, DataError
from .base import DATASETS, TaskData
from .splits import TEST_SPLIT_SEED, train_val_split


def rgb_loader(path: str) -> Image.Image:
    """Open an image file as an RGB PIL image (greyscale, palette and RGBA are converted)."""
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


class ImageFileDataset(Dataset):
    """Items ``(RGB PIL image, label)`` from a list of ``(path, label)`` samples."""

    def __init__(self, samples: Sequence[tuple[str, int]]) -> None:
        self.samples = list(samples)
        self.targets = torch.tensor([y for _, y in self.samples], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        path, y = self.samples[i]
        return rgb_loader(path), int(y)


def _classes(directory: str, name: str) -> list[str]:
    try:
        return find_classes(directory)[0]
    except FileNotFoundError:
        raise DataError(f"{name}: no class sub-folders in {directory}; put each class's images in "
                        f"{directory}/<class>/") from None


def _samples(directory: str, class_to_idx: dict[str, int], name: str) -> list[tuple[str, int]]:
    samples = make_dataset(directory, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise DataError(f"{name}: no images ({', '.join(IMG_EXTENSIONS)}) under {directory}/<class>/; "
                        f"add image files there")
    return samples


def resolve_dir(spec: str, root: str) -> str:
    """The folder an ``imagefolder:<spec>`` names: absolute or ``~`` paths as given, a relative
    one under ``root`` if it exists there, else relative to the working directory."""
    path = os.path.expanduser(spec)
    if not os.path.isabs(path):
        under_root = os.path.join(os.path.expanduser(str(root)), path)
        if os.path.isdir(under_root):
            return under_root
    return os.path.abspath(path)


@DATASETS.register("imagefolder")
def imagefolder(spec: str = "", *, root: str = "", download: bool = False, seed: int = 0,
                image_size: int = 32) -> TaskData:
    """Load ``imagefolder:<dir>`` (see the module docstring for the layouts).

    Args:
        spec: the folder.
        root: ``benchmark.root``, searched first for a relative folder.
        download: unused (image folders are local).
        seed: unused (the 80/20 split uses ``TEST_SPLIT_SEED``).
        image_size: unused (the runner resizes).

    Returns:
        the ``TaskData``; its name is ``imagefolder:<spec>``.
    """
    name = f"imagefolder:{spec}"
    if not spec:
        raise ConfigError("benchmark.experiences/probes: imagefolder needs a folder, as imagefolder:/path/to/dir")
    d = resolve_dir(spec, root)
    if not os.path.isdir(d):
        raise DataError(f"{name}: folder {d} not found; create it with class sub-folders "
                        f"(or train/ and test/ holding them) or fix the path")
    train_dir = os.path.join(d, "train")
    test_dir = next((os.path.join(d, s) for s in ("test", "val") if os.path.isdir(os.path.join(d, s))), None)
    if os.path.isdir(train_dir) and test_dir is not None:
        classes = _classes(train_dir, name)
        class_to_idx = {c: i for i, c in enumerate(classes)}
        extra = sorted(set(_classes(test_dir, name)) - set(classes))
        if extra:
            raise DataError(f"{name}: classes {', '.join(extra)} are in {test_dir} but not in {train_dir}; "
                            f"add their training images or remove them")
        train = ImageFileDataset(_samples(train_dir, class_to_idx, name))
        test = ImageFileDataset(_samples(test_dir, class_to_idx, name))
    elif os.path.isdir(train_dir) or test_dir is not None:
        raise DataError(f"{name}: {d} has only one of train/ and test/ (or val/); add the other split "
                        f"or put the class folders directly in {d}")
    else:
        classes = _classes(d, name)
        samples = _samples(d, {c: i for i, c in enumerate(classes)}, name)
        targets = torch.tensor([y for _, y in samples], dtype=torch.int64)
        tr, te = train_val_split(targets, 0.2, seed=TEST_SPLIT_SEED)
        train = ImageFileDataset([samples[i] for i in tr.tolist()])
        test = ImageFileDataset([samples[i] for i in te.tolist()])
    empty = [c for c, n in zip(classes, torch.bincount(train.targets, minlength=len(classes)).tolist()) if n == 0]
    if empty:
        raise DataError(f"{name}: classes {', '.join(empty)} have no training images; add images or remove "
                        f"their folders")
    if len(test) == 0:
        raise DataError(f"{name}: the test split is empty (each class needs at least 2 images); add images")
    return TaskData(name=name, train=train, test=test, classes=classes,
                    train_targets=train.targets, test_targets=test.targets)
