"""Encoders by name: ``tiny`` (the suite's own), ``openclip:...``, ``timm:...``, ``torch:...``.

Each factory is registered under the name's prefix and called as
``factory(spec, cfg, cache_dir=...)`` where ``spec`` is the part after the first colon and
``cfg`` the ``BackboneConfig``. It returns a module honouring the contract in ``base.py``.
"""
from __future__ import annotations

import os

from torch import nn

from . import tiny, timm_encoder, openclip, custom  # noqa: F401  (register backbones, in this order)
from .base import Encoder, EncoderWithHeads, image_transform
from .registry import BACKBONES


def cache_dir() -> str:
    """``PROXYFDA_CL_CACHE`` or ``~/.cache/proxyfda_cl``."""
    return os.path.expanduser(os.environ.get("PROXYFDA_CL_CACHE", "~/.cache/proxyfda_cl"))


def build_encoder(cfg, *, progress: bool = False) -> nn.Module:
    """The encoder named by ``cfg.name`` (a ``BackboneConfig``), pre-trained weights loaded."""
    prefix, _, spec = cfg.name.partition(":")
    return BACKBONES.get(prefix)(spec, cfg, cache_dir=cache_dir(), progress=progress)


__all__ = ["BACKBONES", "Encoder", "EncoderWithHeads", "build_encoder", "cache_dir",
           "image_transform"]
