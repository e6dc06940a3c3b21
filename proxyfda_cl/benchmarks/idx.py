"""MNIST's idx files: the file names, a reader, and an in-memory dataset of their images.

Fashion-MNIST uses the same format and names; ``torchvision_sets`` finds the four files under
``root`` or a system folder.
"""
from __future__ import annotations

import gzip
import os
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..core.errors import DataError

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class GreyIdxDataset(Dataset):
    """In-memory greyscale images (uint8 ``[N, H, W]``, as in idx files) served as RGB PIL images."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        if images.ndim != 3 or len(images) != len(targets):
            raise ValueError(f"images {tuple(images.shape)} and targets {tuple(targets.shape)} do not match")
        self.images = images
        self.targets = targets.long()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[i].numpy(), mode="L").convert("RGB"), int(self.targets[i])


def read_idx(path: str) -> torch.Tensor:
    """Read a uint8 idx file (MNIST format), raw or gzip-compressed (``.gz``).

    Args:
        path: the file.

    Returns:
        a uint8 tensor of the file's shape (``[N, H, W]`` images or ``[N]`` labels).
    """
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 3:
        raise DataError(f"{path}: not a uint8 idx file (bad header); replace it with the original file")
    nd = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: holds {body.size} bytes of data for shape {shape}; the file is truncated")
    return torch.from_numpy(body.copy()).view(*shape)


def find_idx(dirs: Sequence[str]) -> Optional[dict[str, str]]:
    """The first folder holding all four idx files (each raw or ``.gz``), as stem -> path."""
    for d in dirs:
        found = {}
        for stem in (s for pair in IDX_FILES.values() for s in pair):
            for cand in (os.path.join(d, stem), os.path.join(d, stem + ".gz")):
                if os.path.isfile(cand):
                    found[stem] = cand
                    break
        if len(found) == 4:
            return found
    return None
