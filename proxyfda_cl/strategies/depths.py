"""Where a feature-space regulariser looks: the final embedding, LDIFS's depths, or named
submodules (METHOD.md "Depths").

``layers`` is ``final`` (the encoder's output), ``ldifs`` (the encoder's ``ldifs_layers`` and the
final embedding, the depths LDIFS compares) or submodule names as in ``named_modules()``,
comma-separated, where ``final`` names the encoder's output. FDA and Proxy-FDA see one vector
per sample and depth (``pooled``); LDIFS compares every position (``layer_distance``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from .common import as_float

FINAL, LDIFS = "final", "ldifs"


def parse_layers(spec: str) -> tuple:
    """``spec`` as a tuple of names; a one-line ``ValueError`` for an empty spec, a repeated
    name, or ``ldifs`` beside other names."""
    names = tuple(n.strip() for n in str(spec).split(",") if n.strip())
    if not names:
        raise ValueError("layers must be final, ldifs or submodule names, got an empty value")
    if LDIFS in names and len(names) > 1:
        raise ValueError(f"layers: ldifs stands alone (it already includes the final "
                         f"embedding), got {spec!r}")
    if len(set(names)) < len(names):
        raise ValueError(f"layers: a name is repeated in {spec!r}")
    return names


def resolve_layers(names: tuple, encoder: nn.Module) -> tuple:
    """``({submodule name: channel dim or None}, whether the final embedding is compared)``.

    ``ldifs`` takes the encoder's ``ldifs_layers`` (none for an encoder that names none, so only
    its final embedding, as LDIFS does). Other names must be submodules of ``encoder``: a
    one-line ``ConfigError`` otherwise. A channel dim of None means "guess from the output"
    (``channel_dim``).
    """
    own = dict(getattr(encoder, "ldifs_layers", None) or {})
    if names == (LDIFS,):
        return own, True
    mods = dict(encoder.named_modules())
    for n in names:
        if n != FINAL and n not in mods:
            known = [m for m in mods if m][:3]
            raise ConfigError(f"strategy.layers: the encoder ({type(encoder).__name__}) has no "
                              f"submodule {n!r}; give final, ldifs or names as in "
                              f"named_modules(), e.g. {', '.join(known)}")
    return {n: own.get(n) for n in names if n != FINAL}, FINAL in names


def channel_dim(output: torch.Tensor, dim: Optional[int]) -> int:
    """The channel dimension of a layer output: ``dim`` when known, else 1 for
    ``[B, C, H, W]`` and ``[B, C]`` and the last for ``[B, N, C]`` (tokens)."""
    if dim is not None:
        return dim
    return -1 if output.dim() == 3 else 1


def pooled(output: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """One ``[B, C]`` vector per sample: each position L2-normalised over channels (as LDIFS
    does), then averaged over positions; a ``[B, C]`` output is returned as it is."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.dim() == 2:
        return output
    d = channel_dim(output, dim)
    x = F.normalize(as_float(output), dim=d).movedim(d, -1)
    return x.flatten(1, -2).mean(1)


class DepthsMixin:
    """For ``TeacherPlugin`` subclasses: the depths named by ``layers`` (``init_layers``),
    their submodules hooked through ``layer_names``, and ``depth_pairs`` per minibatch."""

    def init_layers(self, layers: str) -> None:
        self.layers = layers
        self._names = parse_layers(layers)
        self._dims: dict = {}
        self._final = True

    @property
    def final_only(self) -> bool:
        """Whether only the final embedding is compared."""
        return self._names == (FINAL,)

    def layer_names(self, encoder: nn.Module) -> list:
        self._dims, self._final = resolve_layers(self._names, encoder)
        return list(self._dims)

    def depth_outputs(self) -> list:
        """``[(name, student output, teacher output, channel dim)]`` for the current minibatch,
        the final embedding last (as ``[B, D]``, dim 1)."""
        t_feats, t_layers = self.teacher_outputs()
        s_layers = self.student_layers()
        out = []
        for n, d in self._dims.items():
            if n not in s_layers:
                raise RuntimeError(f"{type(self).__name__}: layer {n!r} was not called in the "
                                   "forward pass")
            out.append((n, s_layers[n], t_layers[n], channel_dim(s_layers[n], d)))
        if self._final:
            out.append((FINAL, self.student_features(), t_feats, 1))
        return out

    def depth_pairs(self) -> list:
        """``[(name, student [B, C], teacher [B, C])]``: each depth's ``pooled`` features."""
        return [(n, pooled(s, d), pooled(t, d)) for n, s, t, d in self.depth_outputs()]
