"""Any torch module as an encoder: ``torch:<module>:<factory>``.

``<module>`` is a dotted import path (``mypkg.nets``) or a ``.py`` file path; ``<factory>``
is called with no arguments and returns an ``nn.Module`` mapping images ``[B, 3, H, W]`` to
features (outputs with more than two dims are flattened to ``[B, D]``). ``backbone.weights``,
when set, is a state dict loaded strictly into that module.

Preprocessing: ``backbone.input_size`` / ``mean`` / ``std``, else the module's own
``input_size`` / ``mean`` / ``std`` attributes, else 224 and ImageNet's mean and std.
The feature dim comes from one dry forward pass at that size.

LDIFS layers (METHOD.md, LDIFS): the module's own ``ldifs_layers`` attribute (names as in
its ``named_modules()``, mapped to the channel dim) if it has one, else none (LDIFS then
compares the final embedding only).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from types import ModuleType

import torch
from torch import nn

from ..core.errors import ConfigError, WeightsError, one_line
from .base import ModuleEncoder, wants_random_weights
from .registry import BACKBONES

__all__ = ["TorchEncoder", "create_torch", "import_user_module"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchEncoder(ModuleEncoder):
    """Wraps a user module so the ``Encoder`` attributes exist; ``self.model`` is the module."""


def import_user_module(target: str) -> ModuleType:
    """Import a dotted module path, or a ``.py`` file (registered in ``sys.modules``).

    Raises:
        ConfigError: naming ``backbone.name`` when the module is missing or fails to import.
    """
    if target.endswith(".py"):
        path = os.path.abspath(os.path.expanduser(target))
        if not os.path.isfile(path):
            raise ConfigError(f"backbone.name: module file not found: {path}")
        digest = hashlib.sha1(path.encode()).hexdigest()[:8]
        name = f"proxyfda_cl_user_{os.path.splitext(os.path.basename(path))[0]}_{digest}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise ConfigError(f"backbone.name: importing {path} failed: {one_line(e)}") from e
        return module
    try:
        return importlib.import_module(target)
    except ImportError as e:
        raise ConfigError(f"backbone.name: cannot import module {target!r} ({one_line(e)}); "
                          "give a dotted path on PYTHONPATH or a .py file") from e
    except Exception as e:
        raise ConfigError(f"backbone.name: importing {target!r} failed: {one_line(e)}") from e


def _load_weights(model: nn.Module, path: str, label: str) -> None:
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise WeightsError(f"backbone.weights: file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(path, device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(sd, dict) and isinstance(sd.get(key), dict):
                sd = sd[key]
        model.load_state_dict(sd, strict=True)
    except Exception as e:
        raise WeightsError(f"backbone {label}: cannot load weights from {path}: "
                           f"{one_line(e)}") from e


@BACKBONES.register("torch")
def create_torch(spec: str, cfg, *, cache_dir: str, progress: bool = False) -> TorchEncoder:
    """Build ``torch:<module>:<factory>`` (see the module docstring).

    Args:
        spec: ``<module>:<factory>``; ``<module>`` is dotted or a ``.py`` path.
        cfg: the ``BackboneConfig`` (``weights``, ``input_size``, ``mean``, ``std``).
        cache_dir: unused.
        progress: unused.
    """
    label = f"torch:{spec}"
    if wants_random_weights(cfg):
        raise ConfigError("backbone.weights: random is for openclip:, timm: and tiny backbones; "
                          f"{label} builds whatever its factory builds, so leave "
                          "backbone.weights unset")
    target, _, factory_name = spec.rpartition(":")
    if not target or not factory_name:
        raise ConfigError(f"backbone.name: {label!r} should be torch:<module>:<factory>, "
                          "e.g. torch:mypkg.nets:make_encoder or torch:./nets.py:make_encoder")
    module = import_user_module(target)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ConfigError(f"backbone.name: {target} has no callable {factory_name!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"backbone.name: {target}:{factory_name}() returned "
                          f"{type(model).__name__}, not a torch.nn.Module")
    if cfg.weights:
        _load_weights(model, cfg.weights, label)

    size = int(cfg.input_size or getattr(model, "input_size", None) or 224)
    mean = cfg.mean or getattr(model, "mean", None) or IMAGENET_MEAN
    std = cfg.std or getattr(model, "std", None) or IMAGENET_STD
    own = dict(getattr(model, "ldifs_layers", None) or {})
    names = dict(model.named_modules())
    missing = [n for n in own if n not in names]
    if missing:
        raise ConfigError(f"backbone.name: {label} ldifs_layers names no submodule "
                          f"{', '.join(missing)}")

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, 3, size, size))
    except Exception as e:
        raise ConfigError(f"backbone.input_size: {label} fails on a [2, 3, {size}, {size}] "
                          f"input: {one_line(e)}") from e
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"backbone.name: {label} must return a tensor [B, D], got {got}")
    return TorchEncoder(model, feature_dim=out.flatten(1).shape[1], input_size=size, mean=mean,
                        std=std, ldifs_layers={f"model.{n}": int(d) for n, d in own.items()})
