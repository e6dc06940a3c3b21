"""The Hugging Face hub as the weight loaders see it: its cache, whether it can be reached,
its progress bars; shared by ``timm_encoder`` and ``openclip``.

Reachability is decided in about a second and changes nothing: ``HF_HUB_OFFLINE`` is
honoured, never set, and a loader that finds the hub unreachable stops with one line rather
than calling huggingface_hub.
"""
from __future__ import annotations

import contextlib
import os
import threading
import urllib.error
import urllib.request
from typing import Iterable, Iterator, Optional


def hf_cache_dir() -> str:
    """The Hugging Face hub cache folder, read from the environment at call time."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(key):
            return os.path.expanduser(os.environ[key])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def _offline_env() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(url: Optional[str] = None, timeout: float = 1.5) -> bool:
    """Whether ``url`` (default: the HF endpoint) answers an HTTP HEAD within ``timeout`` s.

    Any HTTP status counts as reachable; a failed lookup, connection, TLS handshake or a
    timeout does not (the whole check, DNS included, is bounded). Returns False at once
    under ``HF_HUB_OFFLINE``. Honours proxy variables; sets nothing.
    """
    if _offline_env():
        return False
    target = url or os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    result: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(target, method="HEAD"),
                                   timeout=timeout).close()
            result.append(True)
        except urllib.error.HTTPError:
            result.append(True)
        except Exception:
            pass

    worker = threading.Thread(target=probe, daemon=True)  # bounds a slow DNS lookup too
    worker.start()
    worker.join(timeout + 0.5)
    return bool(result)


def cached_hf_file(repo_id: str, filenames: Iterable[str]) -> Optional[str]:
    """The first of ``filenames`` of ``repo_id`` already in the HF cache, else None."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo_id.partition("@")
    for name in filenames:
        found = try_to_load_from_cache(repo_id, name, cache_dir=hf_cache_dir(),
                                       revision=revision or None)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


@contextlib.contextmanager
def download_progress(enabled: bool) -> Iterator[None]:
    """Show (or hide) huggingface_hub and timm download progress bars inside the block."""
    from huggingface_hub.utils import (are_progress_bars_disabled, disable_progress_bars,
                                       enable_progress_bars)
    from timm.models import _builder

    was_disabled, was_timm = are_progress_bars_disabled(), _builder._DOWNLOAD_PROGRESS
    (enable_progress_bars if enabled else disable_progress_bars)()
    _builder._DOWNLOAD_PROGRESS = enabled
    try:
        yield
    finally:
        (disable_progress_bars if was_disabled else enable_progress_bars)()
        _builder._DOWNLOAD_PROGRESS = was_timm

