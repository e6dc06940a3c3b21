"""The backbone registry: a name prefix (``tiny``, ``openclip``, ``timm``, ``torch``) -> factory.

Each factory is called as ``factory(spec, cfg, cache_dir=..., progress=...)`` where ``spec`` is
the part of the name after the first colon and ``cfg`` the ``BackboneConfig``; it returns a
module honouring the contract in ``base.py``.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..core.registry import Registry

BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone", "backbone.name")
