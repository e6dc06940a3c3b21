"""Every ``module.name`` that docs/DESIGN.md names exists: inline in backticks, and on the
arrows of its "The flow of one run" (``-> module.name``)."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "DESIGN.md"
TEXT = DESIGN.read_text()
DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+"
NAMES = sorted({n for n in re.findall(rf"`({DOTTED})`", TEXT) if not n.endswith((".md", ".py"))}
               | set(re.findall(rf"^\s*-> ({DOTTED})", TEXT, flags=re.M)))


def resolve(dotted: str):
    """The object ``proxyfda_cl.<dotted>`` names: the longest importable module prefix, then
    attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(["proxyfda_cl", *parts[:cut]]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_design_names_some_functions():
    assert len(NAMES) >= 6, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_name_design_mentions_exists(name):
    assert resolve(name) is not None
