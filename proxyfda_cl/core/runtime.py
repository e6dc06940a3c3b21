"""Where and how reproducibly a run executes: its device, its seeds and RNG states, versions.

A leaf that the runner, the session and the tools share.
"""
from __future__ import annotations

import platform
import random

import numpy as np
import torch

from .errors import ConfigError
from .version import __version__


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} asked for but CUDA is not available; use auto or cpu")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The state of every random generator ``seed_everything`` seeds (CUDA's when present), in
    types ``torch.load(..., weights_only=True)`` reads: NumPy's key as a tensor."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (kind, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss),
                       float(gauss)),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the generators from ``rng_state``'s result."""
    random.setstate(state["python"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.int64).astype(np.uint32), pos,
                         has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def versions(device: torch.device) -> dict:
    """Versions of the package, its main dependencies and the device used."""
    import avalanche

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"proxyfda_cl": __version__, "torch": torch.__version__,
            "avalanche": avalanche.__version__, "python": platform.python_version(),
            "device": f"{device.type}: {name}"}
