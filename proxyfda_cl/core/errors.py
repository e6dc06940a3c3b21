"""Errors a user can cause, and the warnings a run records.

The CLI prints an error as one line and exits with code 2. A ``ResultWarning`` is a condition
that can change a reported number: a run counts each in its record (``recorded_warnings``),
while third-party noise is filtered by module and category (``quiet_third_party``).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections import Counter
from typing import Iterator


class ProxyFDAError(Exception):
    """Base class for user-facing errors: bad config, missing files or weights.

    The message is one line that names the field or path and says how to fix it.
    """


class ConfigError(ProxyFDAError):
    """A config value, CLI flag or config file is wrong."""


class DataError(ProxyFDAError):
    """A dataset or results folder is missing, unreadable or malformed."""


class WeightsError(ProxyFDAError):
    """Pre-trained weights are neither local nor reachable."""


def one_line(e: BaseException, limit: int = 240) -> str:
    """An exception as one line, its type first and its text cut at ``limit`` characters."""
    text = " ".join(str(e).split())
    if not text:
        return type(e).__name__
    return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


class ResultWarning(UserWarning):
    """A warning of the suite's own whose condition can change a reported number (a lowered
    k, a skipped minibatch, an OTDD that did not converge). A run counts each one in its
    record's ``warnings``; the leaderboard and the report show them."""


#: packages whose own warnings and log lines a user of the CLI does not act on
THIRD_PARTY = ("avalanche", "torch", "torchvision", "timm", "open_clip", "qpsolvers", "ray",
               "sklearn", "ot", "huggingface_hub", "matplotlib", "PIL", "pytorchcv", "wandb")


def quiet_third_party() -> None:
    """Hide third-party warnings (by module) and deprecation notices (by category), and
    third-party log lines below errors. The suite's own warnings stay visible."""
    for module in THIRD_PARTY:
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")
        logging.getLogger(module).setLevel(logging.ERROR)
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)


@contextlib.contextmanager
def recorded_warnings(into: list) -> Iterator[list]:
    """Collect the ``ResultWarning`` s raised inside the block into ``into``: one line per
    distinct message, with its count when it repeats. Every other warning is shown as it
    would have been without the block."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResultWarning)
        try:
            yield into
        finally:
            ours = Counter(str(w.message) for w in caught if issubclass(w.category, ResultWarning))
            into.extend(m if n == 1 else f"{m} ({n} times)" for m, n in ours.items())
            others = [w for w in caught if not issubclass(w.category, ResultWarning)]
    for w in others:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
