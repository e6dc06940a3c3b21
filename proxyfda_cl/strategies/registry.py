"""Strategy registry: a name -> recipe factory, validated against the factory's signature.

A strategy is Avalanche's ``Naive`` template plus the plugins its recipe lists. Adding a
strategy is one file that decorates a keyword-only factory::

    @register_strategy("ewc")
    def ewc(*, ewc_lambda: float = 100.0, mode: str = "separate") -> StrategyRecipe:
        return StrategyRecipe(plugins=[EWCPlugin(ewc_lambda=ewc_lambda, mode=mode)])

or, for a strategy that is one of the suite's plugins, registers the plugin itself::

    register_plugin("fda", FDAPlugin, sampler="hard")

Its hyper-parameters are then the plugin's keyword arguments with the plugin's defaults
(``PLUGIN_ONLY`` left out), so a plugin built with no arguments is the strategy that
``--strategy`` ships. Config values are type-checked against the defaults' types before the
call.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from ..core.coercion import coerce
from ..core.errors import ConfigError
from ..core.registry import Registry
from ..core.revisions import STRATEGY_REVISIONS

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


#: plugin arguments that are wiring, not hyper-parameters: no config sets them
PLUGIN_ONLY = ("eps", "encoder_attr", "seed")


def plugin_parameters(cls: type) -> list:
    """The keyword-only parameters of ``cls.__init__``, following ``**kwargs`` up to the
    base class the arguments are passed on to (a subclass lists what it adds first)."""
    params: list = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        sig = inspect.signature(init)
        params += [p for p in sig.parameters.values()
                   if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in
                   {q.name for q in params}]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
            return params
    return params


def register_plugin(name: str, cls: type, *, sampler: str = "random",
                    extra_epochs: Callable[[dict], int] = lambda kw: 0) -> Callable:
    """Register strategy ``name`` as ``Naive`` plus one ``cls(**hyper-parameters)``; its
    hyper-parameters and their defaults are ``cls``'s (``plugin_parameters``, without
    ``PLUGIN_ONLY``). ``extra_epochs`` maps them to the epochs the recipe adds."""
    params = [p for p in plugin_parameters(cls) if p.name not in PLUGIN_ONLY]

    def recipe(**kwargs) -> StrategyRecipe:
        return StrategyRecipe(plugins=[cls(**kwargs)], sampler=sampler,
                              extra_epochs=extra_epochs(kwargs))

    recipe.__signature__ = inspect.Signature(params)
    recipe.__name__ = recipe.__qualname__ = name
    recipe.__doc__ = f"``Naive`` plus one ``{cls.__name__}`` (batches: {sampler})."
    return STRATEGIES.register(name)(recipe)


def strategy_defaults(name: str) -> dict:
    """The hyper-parameters of strategy ``name`` with their defaults."""
    sig = inspect.signature(STRATEGIES.get(name))
    return {p.name: p.default for p in sig.parameters.values()
            if p.default is not inspect.Parameter.empty}


def _check(key: str, value: Any, default: Any) -> Any:
    """``value`` coerced to the type of the parameter's default (``None`` defaults: any). A
    list of names for a text parameter is joined with commas (``layers: [blocks.2, final]``)."""
    if default is None or value is None:
        return value
    if isinstance(default, str) and isinstance(value, (list, tuple)) \
            and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    return coerce(value, type(default), f"strategy.{key}")


def resolve_params(name: str, params: dict) -> dict:
    """Every hyper-parameter of strategy ``name``: ``params`` checked and coerced, the rest
    at their defaults. Raises ``ConfigError`` for an unknown strategy or parameter."""
    defaults = strategy_defaults(name)
    for key in params:
        if key not in defaults:
            valid = ", ".join(defaults) or "none"
            raise ConfigError(f"strategy.{key}: unknown parameter of {name}; valid: {valid}")
    return {key: _check(key, params[key], default) if key in params else default
            for key, default in defaults.items()}


def hyperparameters(name: str, params: dict) -> dict:
    """What a run record keeps of strategy ``name``'s hyper-parameters, so that analysis reads
    them without the registry: ``{"strategy": name, "values": every hyper-parameter resolved,
    "non_default": sorted names of those that differ from the defaults, "revision": the
    strategy's revision (``core.revisions.STRATEGY_REVISIONS``)}``."""
    defaults = strategy_defaults(name)
    values = resolve_params(name, params)
    return {"strategy": name, "values": values,
            "non_default": sorted(k for k, v in values.items() if v != defaults[k]),
            "revision": STRATEGY_REVISIONS.get(name, 1)}


def build_strategy(name: str, params: dict) -> StrategyRecipe:
    """Validate ``params`` against strategy ``name`` and build its recipe.

    Raises:
        ConfigError: unknown strategy, unknown parameter, wrong type, or a value the
            factory rejects (its ``ValueError`` becomes a one-line error).
    """
    factory = STRATEGIES.get(name)
    kwargs = resolve_params(name, params)
    try:
        return factory(**kwargs)
    except ValueError as e:
        raise ConfigError(f"strategy ({name}): {e}") from None
