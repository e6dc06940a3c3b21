"""What every encoder exposes, and the encoder-plus-heads model the strategies train.

An encoder is any ``nn.Module`` mapping preprocessed images ``[B, 3, H, W]`` to features
``[B, D]`` that also carries:

- ``feature_dim`` (int): D;
- ``input_size`` (int), ``mean`` and ``std`` (3 floats each): its preprocessing;
- optionally ``resize_mode``: ``"squash"`` (default: resize to a square) or ``"shortest"``
  (resize the shorter side, then centre-crop, as CLIP's preprocessing does);
- ``ldifs_layers`` (dict): submodule name (as in ``named_modules()``) -> channel dimension
  of that submodule's output (``1`` for ``[B, C, H, W]``, ``-1`` for ``[B, N, C]`` tokens).
  LDIFS compares these outputs; the final embedding is always compared too;
- ``random_init`` (bool, default False): True when the encoder was built on purpose without
  pre-trained weights (``backbone.weights: random``, for speed measurements and tests).

``Encoder`` below sets these attributes; third-party modules are wrapped by the factories
in ``proxyfda_cl.models``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from torch import nn
from torchvision.transforms import v2 as T

RANDOM_WEIGHTS = "random"
"""The ``backbone.weights`` value that builds an architecture with random weights, on purpose."""


def wants_random_weights(cfg) -> bool:
    """Whether the ``BackboneConfig`` asks for random weights (``backbone.weights: random``).

    Only this exact value does: a missing weights file is never replaced by random weights.
    """
    return getattr(cfg, "weights", None) == RANDOM_WEIGHTS


class Encoder(nn.Module):
    """Base class: ``forward(images) -> [B, feature_dim]`` plus preprocessing metadata.

    Args:
        feature_dim: size of the output embedding.
        input_size: square image side the encoder expects.
        mean: per-channel normalisation mean.
        std: per-channel normalisation std.
        ldifs_layers: submodule name -> channel dim, compared by LDIFS.
        resize_mode: ``squash`` or ``shortest`` (shorter side, then centre crop).
    """

    random_init: bool = False

    def __init__(self, *, feature_dim: int, input_size: int, mean: Sequence[float],
                 std: Sequence[float], ldifs_layers: Optional[dict] = None,
                 resize_mode: str = "squash") -> None:
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.input_size = int(input_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.ldifs_layers = dict(ldifs_layers or {})
        self.resize_mode = resize_mode


class ModuleEncoder(Encoder):
    """An encoder that wraps a module mapping images to features (``self.model``); outputs with
    more than two dimensions are flattened to ``[B, D]``."""

    def __init__(self, model: nn.Module, *, feature_dim: int, input_size: int,
                 mean: Sequence[float], std: Sequence[float], ldifs_layers: dict,
                 resize_mode: str = "squash") -> None:
        super().__init__(feature_dim=feature_dim, input_size=input_size, mean=mean, std=std,
                         ldifs_layers=ldifs_layers, resize_mode=resize_mode)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out.flatten(1) if out.ndim > 2 else out


def batchnorm_layers(module: nn.Module) -> list:
    """Every BatchNorm layer (1d, 2d, 3d, sync) inside ``module``."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class _PILTransform:
    """Applies a transform written for PIL images to a PIL image, an image tensor (uint8, or
    float in [0, 1]) or a batch of image tensors ``[N, C, H, W]`` (stacked back)."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, img):
        if isinstance(img, torch.Tensor):
            if img.ndim == 4:
                return torch.stack([self(x) for x in img])
            img = T.functional.to_pil_image(img)
        return self.transform(img)


def image_transform(encoder: nn.Module, *, train: bool = False) -> T.Compose:
    """Preprocessing for ``encoder``: its own ``preprocess`` when it carries one (open_clip's
    evaluation transform), else to float tensor, resize to its input size, normalise.

    Works on PIL images, uint8 tensors and float tensors in [0, 1]. ``train`` adds no
    augmentation: inputs stay deterministic, so teacher features can be cached.
    """
    own = getattr(encoder, "preprocess", None)
    if own is not None:  # the library's own transform (open_clip): it takes PIL images
        return _PILTransform(own)
    size = encoder.input_size
    if getattr(encoder, "resize_mode", "squash") == "shortest":
        resize = [T.Resize(size, antialias=True), T.CenterCrop(size)]
    else:
        resize = [T.Resize((size, size), antialias=True)]
    return T.Compose([
        T.ToImage(),
        T.ToDtype(torch.float32, scale=True),
        *resize,
        T.Normalize(list(encoder.mean), list(encoder.std)),
    ])


class EncoderWithHeads(MultiTaskModule):
    """The model strategies train: a shared encoder and one linear head per task.

    ``forward(x, task_labels)`` runs the encoder once for the whole batch, then routes
    each sample to its task's head (Avalanche's ``MultiHeadClassifier``).

    Avalanche's routing reads the task labels on the host (``torch.unique``, boolean masks,
    ``.item()``), which on a GPU blocks the host in every training step. When the training
    experience has a single task label (task-incremental streams), the task is known on the
    host from the experience (``adaptation``), so a training forward calls that head directly
    and pads its output as Avalanche does (same values, same gradients); the labels are
    checked on the device (``torch._assert_async``), so a batch of another task fails loudly
    instead of being routed silently. Evaluation, mixed-task batches and other devices (MPS)
    take Avalanche's path.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = MultiHeadClassifier(encoder.feature_dim, initial_out_features=2,
                                         masking=False)
        self.train_task: Optional[int] = None

    def adaptation(self, experience) -> None:
        """Avalanche's adaptation; a training experience with one task label sets ``train_task``."""
        super().adaptation(experience)
        if self.training:
            tasks = {int(t) for t in experience.task_labels}
            self.train_task = tasks.pop() if len(tasks) == 1 else None

    def forward(self, x: torch.Tensor, task_labels: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        with _full_precision(feats):
            task = getattr(self, "train_task", None)  # None in checkpoints of older versions
            if (self.training and task is not None and isinstance(task_labels, torch.Tensor)
                    and task_labels.device.type in ("cpu", "cuda")):
                return self._train_task_forward(feats.float(), task_labels, task)
            return self.heads(feats.float(), task_labels)

    def _train_task_forward(self, feats: torch.Tensor, task_labels: torch.Tensor,
                            task: int) -> torch.Tensor:
        """``self.heads(feats, task_labels)`` for a batch of task ``task``, without host syncs."""
        torch._assert_async(torch.all(task_labels == task),
                            "EncoderWithHeads: a training batch holds samples of another task "
                            "than its experience's")
        out = self.heads.forward_single_task(feats, task)
        padded = out.new_zeros(out.shape[0], self.heads.max_class_label)
        padded[:, :out.shape[1]] = out
        return padded

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        feats = self.encoder(x)
        with _full_precision(feats):
            return self.heads.forward_single_task(feats.float(), task_label)


def _full_precision(t: torch.Tensor):
    """Heads run in fp32 even under autocast (Avalanche's multi-head routing needs one dtype)."""
    return torch.autocast(t.device.type, enabled=False)
