"""The default encoder: a small CNN the suite pre-trains itself on the concept world.

``tiny`` is pre-trained on every concept-world attribute at once (one linear head per
attribute, summed cross-entropy), so it knows shape, colour, texture and background
before any fine-tuning. ``tiny:quick`` is the same network with a shorter pre-training,
for ``demo --quick``. Weights are cached under ``PROXYFDA_CL_CACHE`` keyed by the
pre-training config; concurrent processes wait on a lock instead of training twice.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, WeightsError
from ..benchmarks.world import ATTRIBUTES, generate
from .base import Encoder, wants_random_weights
from .registry import BACKBONES

WORLD_MEAN = (0.4, 0.4, 0.4)
WORLD_STD = (0.25, 0.25, 0.25)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class TinyCNN(Encoder):
    """Four conv stages (32 -> 16 -> 8 -> 4 px), global average pool, linear embedding.

    LDIFS compares the four stage outputs (channel dim 1) and the embedding.
    """

    def __init__(self, *, width: int = 16, feature_dim: int = 128, input_size: int = 32) -> None:
        super().__init__(feature_dim=feature_dim, input_size=input_size, mean=WORLD_MEAN,
                         std=WORLD_STD,
                         ldifs_layers={"stem": 1, "stage2": 1, "stage3": 1, "stage4": 1})
        w = width
        self.stem = _conv(3, w)
        self.stage2 = _conv(w, 2 * w, stride=2)
        self.stage3 = nn.Sequential(_conv(2 * w, 4 * w, stride=2), _conv(4 * w, 4 * w))
        self.stage4 = _conv(4 * w, 8 * w, stride=2)
        self.embed = nn.Linear(8 * w, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage4(self.stage3(self.stage2(self.stem(x))))
        return self.embed(x.mean(dim=(2, 3)))


@dataclass(frozen=True)
class PretrainConfig:
    """Pre-training of the default encoder on the concept world."""

    n_images: int = 8000
    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    width: int = 16
    feature_dim: int = 128
    image_size: int = 32

    def key(self) -> str:
        blob = json.dumps({"world": 1, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


PRESETS = {"": PretrainConfig(), "quick": PretrainConfig(n_images=3000, epochs=3)}


def pretrain(cfg: PretrainConfig, *, progress: bool = False) -> TinyCNN:
    """Train a ``TinyCNN`` on all concept-world attributes; returns it in eval mode."""
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    images, labels = generate(cfg.n_images, seed=10_000 + cfg.seed, size=cfg.image_size)
    model = TinyCNN(width=cfg.width, feature_dim=cfg.feature_dim, input_size=cfg.image_size)
    heads = nn.ModuleDict({a: nn.Linear(cfg.feature_dim, len(v)) for a, v in ATTRIBUTES.items()})
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    mean = torch.tensor(model.mean)[None, :, None, None]
    std = torch.tensor(model.std)[None, :, None, None]
    g = torch.Generator().manual_seed(cfg.seed)
    steps = cfg.epochs * ((cfg.n_images + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    bar = tqdm(total=steps, desc="pre-training the tiny encoder", disable=not progress,
               leave=False)
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(cfg.n_images, generator=g)
        for i in range(0, cfg.n_images, cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            x = (images[idx].float() / 255 - mean) / std
            feats = model(x)
            loss = sum(F.cross_entropy(h(feats), labels[a][idx]) for a, h in heads.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    return model.eval()


def load_or_pretrain(cfg: PretrainConfig, cache_dir: str, *, progress: bool = False) -> TinyCNN:
    """The cached pre-trained encoder for ``cfg``, training and caching it on first use."""
    folder = os.path.join(cache_dir, "tiny")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"cache folder {folder}: cannot be created ({e.strerror}); "
                           f"set PROXYFDA_CL_CACHE to a writable folder") from None
    path = os.path.join(folder, f"tiny-{cfg.key()}.pt")
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        model = TinyCNN(width=cfg.width, feature_dim=cfg.feature_dim, input_size=cfg.image_size)
        state: Optional[dict] = None
        if os.path.exists(path):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:
                state = None  # a damaged cache file is retrained and replaced
        if state is None:
            state = pretrain(cfg, progress=progress).state_dict()
            tmp = path + ".tmp"
            torch.save(state, tmp)
            os.replace(tmp, path)
        model.load_state_dict(state)
    return model.eval()


@BACKBONES.register("tiny")
def tiny(spec: str, cfg, *, cache_dir: str, progress: bool = False) -> TinyCNN:
    """``tiny`` or ``tiny:quick``; ``backbone.weights`` may point at a saved state_dict, or be
    ``random`` for the untrained network (no pre-training)."""
    if spec not in PRESETS:
        raise ConfigError(f"backbone.name: unknown tiny preset {spec!r}; use tiny or tiny:quick")
    pcfg = PRESETS[spec]
    if wants_random_weights(cfg):
        model = TinyCNN(width=pcfg.width, feature_dim=pcfg.feature_dim, input_size=pcfg.image_size)
        model.random_init = True
        return model.eval()
    if cfg.weights:
        path = os.path.expanduser(cfg.weights)
        if not os.path.isfile(path):
            raise WeightsError(f"backbone.weights {path}: not found; pass an existing state_dict file")
        model = TinyCNN(width=pcfg.width, feature_dim=pcfg.feature_dim, input_size=pcfg.image_size)
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as e:
            raise WeightsError(f"backbone.weights {path}: not a tiny state_dict ({e.__class__.__name__})") from None
        return model.eval()
    return load_or_pretrain(pcfg, cache_dir, progress=progress)
