"""Config values as written in YAML or ``--set`` text, coerced to the type of their field.

A leaf: the run config and the strategy registry both check values with ``coerce``.
"""
from __future__ import annotations

import math
import typing
from typing import Any

import yaml

from .errors import ConfigError


def parse_scalar(text: str) -> Any:
    """Turn a ``--set`` value into bool, None, int, float, a YAML list/dict, or keep the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none", "~"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.strip()[:1] in "[{":
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            pass
    return text


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp`` (bool, int, float, str, list, dict, Optional[...]); a one-line
    ``ConfigError`` naming ``where`` otherwise. Numbers written as text (``1e-3``, which YAML
    reads as a string) are accepted for int and float fields."""
    origin = typing.get_origin(tp)
    if tp in (int, float) and isinstance(value, str):
        value = parse_scalar(value)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is list or origin is list:
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return list(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value
