"""scikit-learn's bundled digits (1,797 real 8x8 scans) as an RGB task at the stream's size."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import DATASETS, TaskData
from .concept_world import TensorImageDataset
from .splits import TEST_SPLIT_SEED, train_val_split


@DATASETS.register("digits")
def digits_dataset(spec: str = "", *, root: str = "", download: bool = False, seed: int = 0,
                   image_size: int = 32) -> TaskData:
    """Digits 0-9, upsampled bilinearly to ``image_size`` with 3 equal channels.

    The split is a seeded, stratified 80/20 (the data set ships no split).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.as_tensor(d.target, dtype=torch.int64)
    tr, te = train_val_split(y, 0.2, seed=TEST_SPLIT_SEED)
    train, test = TensorImageDataset(images[tr], y[tr]), TensorImageDataset(images[te], y[te])
    return TaskData(name="digits", train=train, test=test, classes=[str(i) for i in range(10)],
                    train_targets=train.labels, test_targets=test.labels)
