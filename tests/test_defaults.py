"""One set of defaults: a plugin built with no arguments is the strategy ``--strategy`` ships."""
from __future__ import annotations

import inspect

import pytest
import torch

from proxyfda_cl.core.revisions import CHANGED_DEFAULTS
from proxyfda_cl.strategies import (FDAPlugin, L2SPPlugin, LDIFSPlugin, LPFTPlugin, ProxyFDAPlugin,
                                    build_strategy, strategy_defaults)
from proxyfda_cl.strategies.registry import PLUGIN_ONLY, plugin_parameters

PLUGINS = {"fda": FDAPlugin, "proxy_fda": ProxyFDAPlugin, "ldifs": LDIFSPlugin,
           "l2sp": L2SPPlugin, "lp_ft": LPFTPlugin}


def state(obj, depth: int = 0):
    """Every plain value an object holds, recursively (tensors as lists), for comparison."""
    if isinstance(obj, (bool, int, float, str, type(None))):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (list, tuple)):
        return [state(v, depth + 1) for v in obj]
    if isinstance(obj, dict):
        return {str(k): state(v, depth + 1) for k, v in obj.items()}
    if hasattr(obj, "__dict__") and depth < 3:
        return {type(obj).__name__: state(vars(obj), depth + 1)}
    return type(obj).__name__


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_a_plugin_built_without_arguments_is_the_shipped_strategy(name):
    recipe = build_strategy(name, {})
    assert len(recipe.plugins) == 1 and type(recipe.plugins[0]) is PLUGINS[name]
    assert state(PLUGINS[name]()) == state(recipe.plugins[0])


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_the_strategy_s_hyperparameters_are_the_plugin_s_arguments(name):
    params = {p.name: p.default for p in plugin_parameters(PLUGINS[name])}
    assert {k: v for k, v in params.items() if k not in PLUGIN_ONLY} == strategy_defaults(name)


def test_proxy_fda_extends_fda_and_keeps_its_defaults():
    assert issubclass(ProxyFDAPlugin, FDAPlugin)
    fda, proxy = FDAPlugin(), ProxyFDAPlugin()
    for key in ("lam", "k", "boundary", "neg_weight", "teacher_cache_mb", "layers"):
        assert getattr(fda, key) == getattr(proxy, key), key
    assert state(fda.temperature) == state(proxy.temperature)
    assert CHANGED_DEFAULTS["proxy_fda"]["tau"] == strategy_defaults("proxy_fda")["tau"] == 0.05
    assert strategy_defaults("fda")["lam"] == 3.0 and strategy_defaults("fda")["boundary"] == "teacher"
    # the proxy arguments come first, then FDA's, none twice
    names = [p.name for p in plugin_parameters(ProxyFDAPlugin)]
    assert len(names) == len(set(names)) and names[:6] == list(
        inspect.signature(ProxyFDAPlugin.__init__).parameters)[1:7]


def test_a_changed_argument_reaches_the_plugin():
    plugin = build_strategy("proxy_fda", {"tau": 0.2, "n_pos": 2, "lam": 1.5}).plugins[0]
    assert (plugin.n_pos, plugin.lam) == (2, 1.5)
    assert state(plugin.temperature) == state(ProxyFDAPlugin(tau=0.2).temperature)
    assert build_strategy("lp_ft", {"lp_epochs": 3}).extra_epochs == 3
