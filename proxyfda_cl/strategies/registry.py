"""Strategy registry: a name -> recipe factory, validated against the factory's signature.

A strategy is Avalanche's ``Naive`` template plus the plugins its recipe lists. Adding a
strategy is one file that decorates a keyword-only factory::

    @register_strategy("fda")
    def fda(*, lam: float = 1.0, k: int = 8, ...) -> StrategyRecipe:
        return StrategyRecipe(plugins=[FDAPlugin(lam=lam, k=k, ...)], sampler="hard")

Config values are type-checked against the defaults' types before the call.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ConfigError
from ..registry import Registry

STRATEGIES: Registry[Callable[..., "StrategyRecipe"]] = Registry("strategy", "strategy.name")


@dataclass
class StrategyRecipe:
    """What the runner needs to train one strategy.

    Attributes:
        plugins: Avalanche plugins added to the ``Naive`` template.
        sampler: batch sampler when ``train.sampler`` is ``auto``: random | balanced | hard.
        extra_epochs: epochs the recipe adds before ``train.epochs`` (LP-FT's head-only phase).
    """

    plugins: list = field(default_factory=list)
    sampler: str = "random"
    extra_epochs: int = 0


def register_strategy(name: str) -> Callable:
    """Register a recipe factory under ``name``."""
    return STRATEGIES.register(name)


def strategy_defaults(name: str) -> dict:
    """The hyper-parameters of strategy ``name`` with their defaults."""
    sig = inspect.signature(STRATEGIES.get(name))
    return {p.name: p.default for p in sig.parameters.values()
            if p.default is not inspect.Parameter.empty}


def _check(name: str, key: str, value: Any, default: Any) -> Any:
    where = f"strategy.{key}"
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def build_strategy(name: str, params: dict) -> StrategyRecipe:
    """Validate ``params`` against strategy ``name`` and build its recipe.

    Raises:
        ConfigError: unknown strategy, unknown parameter, wrong type, or a value the
            factory rejects (its ``ValueError`` becomes a one-line error).
    """
    factory = STRATEGIES.get(name)
    defaults = strategy_defaults(name)
    kwargs = {}
    for key, value in params.items():
        if key not in defaults:
            valid = ", ".join(defaults) or "none"
            raise ConfigError(f"strategy.{key}: unknown parameter of {name}; valid: {valid}")
        kwargs[key] = _check(name, key, value, defaults[key])
    try:
        return factory(**kwargs)
    except ValueError as e:
        raise ConfigError(f"strategy ({name}): {e}") from None
