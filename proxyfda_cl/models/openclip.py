"""open_clip image towers: ``openclip:<arch>/<tag-or-file>``.

``openclip:ViT-B-32/openai`` loads a pretrained tag, ``openclip:ViT-B-32//path/to/file.bin``
a local checkpoint; ``backbone.weights`` (a local file) takes precedence over both.
``backbone.weights: random`` builds the architecture with open_clip's random initialisation
and loads nothing (``openclip:ViT-B-32``, or with a tag for its preprocessing and QuickGELU);
it is only ever used when asked for, for speed measurements and tests. A tag's
weights come from the Hugging Face cache, or are downloaded when the hub is reachable;
otherwise a ``WeightsError`` names the file to place. Checkpoints may hold the whole CLIP
model or just the image tower (``visual.*`` or bare keys).

The encoder is the image tower (``model.visual``): ``forward`` gives the projected image
embedding, as ``CLIP.encode_image`` does (not L2-normalised). Preprocessing (size, mean,
std) is open_clip's own for the architecture and tag.

LDIFS layers (METHOD.md, LDIFS):

- ViT towers: the output of ``ln_pre`` and of the residual blocks at evenly spaced
  quarters of the depth, 1-based ``ceil(k * depth / 4)`` for k = 1..4 (blocks 3, 6, 9, 12
  of 12, as in the LDIFS paper); tokens are ``[B, N, C]`` (open_clip 3 runs batch-first),
  so the channel dim is -1.
- ModifiedResNet towers (``RN50`` ...): the outputs of ``layer1`` .. ``layer4``, channel dim 1.
- timm-backed towers: the trunk's layers as chosen in ``timm_encoder``.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import torch
from torch import nn

from ..core.errors import ConfigError, WeightsError, one_line
from .base import Encoder, wants_random_weights
from .hub import cached_hf_file, download_progress, hf_cache_dir, hub_reachable
from .registry import BACKBONES
from .timm_encoder import quarter_depths, timm_ldifs_layers

__all__ = ["OpenCLIPEncoder", "create_openclip", "openclip_ldifs_layers"]

_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt", ".npz")


class OpenCLIPEncoder(Encoder):
    """An open_clip image tower: ``forward(images) -> [B, embed_dim]`` projected embedding."""

    def __init__(self, visual: nn.Module, *, feature_dim: int, input_size: int,
                 mean: Sequence[float], std: Sequence[float], ldifs_layers: dict,
                 resize_mode: str = "shortest") -> None:
        super().__init__(feature_dim=feature_dim, input_size=input_size, mean=mean, std=std,
                         resize_mode=resize_mode)
        self.visual = visual
        self.ldifs_layers = dict(ldifs_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


def openclip_ldifs_layers(visual: nn.Module, input_size: int, prefix: str = "visual.") -> dict:
    """LDIFS layers of an open_clip image tower (see the module docstring)."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        depth = len(visual.transformer.resblocks)
        names = ["ln_pre"] + [f"transformer.resblocks.{d - 1}" for d in quarter_depths(depth)]
        return {prefix + n: -1 for n in names}
    if isinstance(visual, ModifiedResNet):
        return {f"{prefix}layer{i}": 1 for i in range(1, 5)}
    if isinstance(visual, TimmModel):
        return timm_ldifs_layers(visual.trunk, input_size, prefix=prefix + "trunk.")[0]
    return {}


def _unknown_arch(arch: str) -> ConfigError:
    import difflib

    import open_clip

    names = open_clip.list_models()
    close = difflib.get_close_matches(arch, names, n=6, cutoff=0.4) or names[:6]
    return ConfigError(f"backbone.name: unknown open_clip architecture {arch!r}; e.g. "
                       f"{', '.join(close)} (see open_clip.list_models())")


def _tags(arch: str, limit: int = 8) -> str:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(arch)
    return ", ".join(tags[:limit]) + (", ..." if len(tags) > limit else "") if tags else "none"


def _unknown_tag(arch: str, tag: str) -> ConfigError:
    return ConfigError(f"backbone.name: {tag!r} is neither a pretrained tag of open_clip {arch} "
                       f"nor a file; tags: {_tags(arch)} (open_clip.list_pretrained())")


def _tag_weights(arch: str, tag: str, tcfg: dict, label: str, cache_dir: str,
                 progress: bool) -> str:
    """A local file for a pretrained tag: cached, downloaded, or a WeightsError."""
    from open_clip import pretrained as ocp

    hub = tcfg.get("hf_hub", "")
    if hub:
        repo, fname = os.path.split(hub)
        fname = fname or ocp.HF_WEIGHTS_NAME
        found = cached_hf_file(repo, [*ocp._get_safe_alternatives(fname), fname])
        where, reachable = f"https://huggingface.co/{repo}", (lambda: hub_reachable())
    else:
        url = tcfg["url"]
        fname = os.path.basename(url)
        local = [os.path.join(cache_dir, "open_clip", fname),
                 os.path.expanduser(os.path.join("~/.cache/clip", fname))]
        found = next((p for p in local if os.path.isfile(p)), None)
        where, reachable = url, (lambda: hub_reachable(url))
    if found:
        return found
    if not reachable():
        raise WeightsError(f"backbone {label}: weights not found offline; download {fname} from "
                           f"{where} and pass --set backbone.weights=/path/to/{fname}")
    try:
        with download_progress(progress):
            if hub:
                return ocp.download_pretrained_from_hf(repo, filename=fname,
                                                       cache_dir=hf_cache_dir())
            return ocp.download_pretrained_from_url(url, cache_dir=os.path.join(cache_dir,
                                                                                "open_clip"))
    except Exception as e:
        raise WeightsError(f"backbone {label}: downloading {fname} from {where} failed "
                           f"({one_line(e)}); download it and pass "
                           f"--set backbone.weights=/path/to/{fname}") from e


def _load(model: nn.Module, path: str, label: str, hint: str = "") -> None:
    """Load a whole-CLIP or image-tower-only checkpoint into ``model``; WeightsError if not."""
    from open_clip.factory import load_checkpoint, load_state_dict

    try:
        load_checkpoint(model, path, strict=True)
        return
    except Exception as e:
        first = e
    try:
        sd = load_state_dict(path)
        if sd and all(k.startswith("visual.") for k in sd):
            sd = {k[len("visual."):]: v for k, v in sd.items()}
        model.visual.load_state_dict(sd, strict=True)
    except Exception:
        raise WeightsError(f"backbone {label}: cannot load weights from {path}: "
                           f"{one_line(first)}{hint}") from first


def _side(size) -> int:
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ConfigError(f"backbone.input_size: non-square input {tuple(size)} is not "
                              "supported; set backbone.input_size")
        size = size[0]
    return int(size)


@BACKBONES.register("openclip")
def create_openclip(spec: str, cfg, *, cache_dir: str, progress: bool = False) -> OpenCLIPEncoder:
    """Build the image tower of ``openclip:<arch>/<tag-or-file>``.

    Args:
        spec: ``<arch>/<tag>`` or ``<arch>/<path>``; ``<arch>`` alone when ``cfg.weights`` is set.
        cfg: the ``BackboneConfig``: ``weights`` (local file, takes precedence; ``random``
            for open_clip's random initialisation, nothing loaded),
            ``input_size`` (forces the tower's image size; ViT position embeddings are
            resampled), ``mean``/``std`` (override open_clip's preprocessing).
        cache_dir: where URL-only weights are cached (``<cache_dir>/open_clip``); hub weights
            use the Hugging Face cache.
        progress: show download progress bars.
    """
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    label = f"openclip:{spec}"
    arch, _, source = spec.partition("/")
    if arch not in open_clip.list_models():
        raise _unknown_arch(arch)
    tcfg = get_pretrained_cfg(arch, source) if source else {}
    source_file = os.path.expanduser(source) if source and not tcfg else ""

    path: Optional[str]
    random_init = wants_random_weights(cfg)
    if random_init:
        if source_file:
            raise ConfigError(f"backbone.weights: random builds {arch} without weights, but "
                              f"backbone.name also names {source!r}; use openclip:{arch} "
                              f"(or openclip:{arch}/<tag> for the tag's preprocessing)")
        path = None
    elif cfg.weights:
        path = os.path.expanduser(cfg.weights)
        if not os.path.isfile(path):
            raise WeightsError(f"backbone.weights: file not found: {path}")
        if source and not tcfg and not os.path.isfile(source_file):
            raise _unknown_tag(arch, source)
    elif source_file:
        if not os.path.isfile(source_file):
            if os.sep in source or source.endswith(_WEIGHT_SUFFIXES):
                raise WeightsError(f"backbone.name: weights file not found: {source_file}")
            raise _unknown_tag(arch, source)
        path = source_file
    elif tcfg:
        path = _tag_weights(arch, source, tcfg, label, cache_dir, progress)
    else:
        raise ConfigError(f"backbone.name: {label} names no weights; use openclip:{arch}/<tag> "
                          f"(tags: {_tags(arch)}) or "
                          "--set backbone.weights=/path/to/file")

    model_cfg = open_clip.get_model_config(arch)
    force_size = None
    if cfg.input_size and cfg.input_size != _side(model_cfg["vision_cfg"].get("image_size", 224)):
        force_size = int(cfg.input_size)
    preprocess = {k: tcfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tcfg}
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns "initialized randomly"; weights follow
    # (unless backbone.weights is random: then the random initialisation is what was asked)
    try:
        model = open_clip.create_model(
            arch, pretrained=None, force_quick_gelu=bool(tcfg.get("quick_gelu", False)),
            force_image_size=force_size, force_preprocess_cfg=preprocess, pretrained_image=False,
            pretrained_text=False)
    finally:
        logging.disable(previous)
    if path is not None:
        _load(model, path, label, f" (backbone.input_size={force_size} may not fit these "
              "weights)" if force_size else "")
    visual = model.visual
    del model
    pp = open_clip.get_model_preprocess_cfg(visual)
    size = int(cfg.input_size or _side(pp["size"]))
    encoder = OpenCLIPEncoder(visual, feature_dim=int(model_cfg["embed_dim"]), input_size=size,
                              mean=cfg.mean or pp["mean"], std=cfg.std or pp["std"],
                              ldifs_layers=openclip_ldifs_layers(visual, size),
                              resize_mode="squash" if pp.get("resize_mode") == "squash"
                              else "shortest")
    encoder.random_init = random_init
    # open_clip's own evaluation transform (bicubic resize, centre crop, RGB, normalise), used
    # as is by ``image_transform`` rather than rebuilt
    encoder.preprocess = open_clip.image_transform(
        size, is_train=False, mean=tuple(encoder.mean), std=tuple(encoder.std),
        resize_mode=pp.get("resize_mode"), interpolation=pp.get("interpolation"))
    return encoder
