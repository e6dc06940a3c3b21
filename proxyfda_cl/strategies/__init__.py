"""Strategies: Avalanche's ``Naive`` template plus plugins, chosen by name."""
from .registry import (STRATEGIES, StrategyRecipe, build_strategy, hyperparameters,
                       register_strategy, strategy_defaults)
from . import builtin  # noqa: F401  (registers naive, ewc, lwf)
from .teacher import Teacher, TeacherPlugin
from .lpft import LPFTPlugin
from .l2sp import L2SPPlugin
from .ldifs import LDIFSPlugin
from .fda import FDAPlugin
from .proxy import ProxyFDAPlugin, ProxyGenerator

__all__ = ["STRATEGIES", "StrategyRecipe", "build_strategy", "hyperparameters", "register_strategy",
           "strategy_defaults", "Teacher", "TeacherPlugin", "LPFTPlugin", "L2SPPlugin",
           "LDIFSPlugin", "FDAPlugin", "ProxyFDAPlugin", "ProxyGenerator"]
