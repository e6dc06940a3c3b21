"""The concept world's generator: images of shapes x colours x textures x backgrounds.

Every image carries all four attribute labels. Generation is vectorised in torch and
deterministic for a seed. Nuisances that keep the attributes from being trivially separable:
position, size and rotation of the shape; Gaussian hue jitter of the colour (neighbouring hues
overlap); texture phase and period; background colour and pattern; pixel noise.

A leaf below both the benchmarks, whose ``concept:`` datasets are drawn from it
(``benchmarks/concept_world.py``), and the default encoder, pre-trained on it
(``models/tiny.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
COLOURS = ("red", "yellow", "green", "cyan", "blue", "magenta")
TEXTURES = ("solid", "stripes", "checker", "dots")
BACKGROUNDS = ("flat", "gradient", "clouds", "grid")
ATTRIBUTES = {"shape": SHAPES, "colour": COLOURS, "texture": TEXTURES, "background": BACKGROUNDS}


@dataclass(frozen=True)
class WorldParams:
    """Difficulty knobs of the concept world (defaults are the calibrated ones)."""

    hue_jitter_deg: float = 16.0
    pixel_noise: float = 0.10
    min_radius: float = 0.24
    max_radius: float = 0.38
    max_rotation_deg: float = 20.0
    texture_contrast: float = 0.33


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Vectorised HSV (h in degrees) -> RGB in [0, 1]; returns ``[N, 3]``."""
    k = lambda n: torch.remainder(n + h / 60.0, 6.0)  # noqa: E731
    f = lambda n: v - v * s * torch.clamp(torch.minimum(k(n), 4 - k(n)), 0, 1)  # noqa: E731
    return torch.stack([f(5.0), f(3.0), f(1.0)], dim=1)


def generate(n: int, *, seed: int = 0, size: int = 32, params: WorldParams = WorldParams()
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Generate ``n`` images and their labels.

    Returns:
        images: uint8 ``[n, 3, size, size]``;
        labels: attribute name -> int64 ``[n]`` (indices into ``ATTRIBUTES[name]``).
    """
    g = torch.Generator().manual_seed(int(seed))
    rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    labels = {a: torch.randint(len(v), (n,), generator=g) for a, v in ATTRIBUTES.items()}
    shape, colour, texture, bg = (labels[a] for a in ATTRIBUTES)

    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centres in [0, 1]
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    yy, xx = yy[None], xx[None]

    radius = (params.min_radius + (params.max_radius - params.min_radius) * rand(n))[:, None, None]
    cx = (0.5 + (rand(n) - 0.5) * (1 - 2 * radius[:, 0, 0]) * 0.8)[:, None, None]
    cy = (0.5 + (rand(n) - 0.5) * (1 - 2 * radius[:, 0, 0]) * 0.8)[:, None, None]
    theta = ((rand(n) * 2 - 1) * math.radians(params.max_rotation_deg))[:, None, None]
    dx, dy = xx - cx, yy - cy
    u = (dx * torch.cos(theta) + dy * torch.sin(theta)) / radius
    v = (-dx * torch.sin(theta) + dy * torch.cos(theta)) / radius
    rr = torch.sqrt(u * u + v * v)
    masks = torch.stack([
        rr <= 1.0,                                                         # circle
        torch.maximum(u.abs(), v.abs()) <= 0.8,                            # square
        (v <= 0.75) & (u.abs() <= (v + 1.0) * 0.6),                        # triangle
        ((u.abs() <= 0.3) & (v.abs() <= 0.95)) | ((v.abs() <= 0.3) & (u.abs() <= 0.95)),
        (rr <= 1.0) & (rr >= 0.55),                                        # ring
        (u.abs() + v.abs()) <= 1.0,                                        # diamond
    ], dim=1)
    mask = masks[torch.arange(n), shape].float()                           # [n, H, W]

    period = (0.14 + 0.06 * rand(n))[:, None, None]
    phase = rand(n, 2)
    px, py = dx / period + phase[:, :1, None], dy / period + phase[:, 1:, None]
    fx, fy = torch.remainder(px, 1.0), torch.remainder(py, 1.0)
    patterns = torch.stack([
        torch.ones_like(px),                                               # solid
        (torch.remainder(px + py, 1.0) < 0.5).float(),                     # diagonal stripes
        ((fx < 0.5) ^ (fy < 0.5)).float(),                                 # checker
        (((fx - 0.5) ** 2 + (fy - 0.5) ** 2) < 0.09).float(),              # dots
    ], dim=1)
    pattern = patterns[torch.arange(n), texture]
    contrast = params.texture_contrast
    shade = torch.where(texture[:, None, None] == 0, torch.ones_like(pattern),
                        1.0 - contrast + contrast * pattern)

    hue = colour.float() * 60.0 + torch.randn(n, generator=g) * params.hue_jitter_deg
    fg = _hsv_to_rgb(hue, 0.65 + 0.35 * rand(n), 0.7 + 0.3 * rand(n))    # [n, 3]
    fg_img = fg[:, :, None, None] * shade[:, None]

    base = _hsv_to_rgb(rand(n) * 360.0, 0.35 * rand(n), 0.15 + 0.5 * rand(n))
    angle = rand(n) * 2 * math.pi
    ramp = (xx * torch.cos(angle)[:, None, None] + yy * torch.sin(angle)[:, None, None])
    ramp = ramp - ramp.amin(dim=(1, 2), keepdim=True)
    ramp = ramp / ramp.amax(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    clouds = torch.nn.functional.interpolate(rand(n, 1, 4, 4), size=(size, size), mode="bicubic",
                                             align_corners=False)[:, 0].clamp(0, 1)
    gstep = (0.18 + 0.08 * rand(n))[:, None, None]
    grid = ((torch.remainder(xx / gstep, 1.0) < 0.18) | (torch.remainder(yy / gstep, 1.0) < 0.18)).float()
    bg_mod = torch.stack([torch.ones_like(ramp), 0.35 + 0.9 * ramp, 0.35 + 0.9 * clouds,
                          1.0 - 0.6 * grid], dim=1)[torch.arange(n), bg]
    bg_img = base[:, :, None, None] * bg_mod[:, None]

    img = mask[:, None] * fg_img + (1 - mask[:, None]) * bg_img
    img = img + torch.randn(img.shape, generator=g) * params.pixel_noise
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, labels
