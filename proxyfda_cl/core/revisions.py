"""What a record says of its strategy's hyper-parameters, for records of every version: the
defaults of records written before they carried them, the strategies' revisions, and the
defaults that changed since."""
from __future__ import annotations


#: The strategies' default hyper-parameters when records did not yet carry
#: ``hyperparameters`` (proxyfda-cl 0.1.0, plus the memory options at 0): what an older
#: record's values are compared with.
LEGACY_DEFAULTS = {
    "naive": {},
    "ewc": {"ewc_lambda": 100.0, "mode": "separate"},
    "lwf": {"alpha": 1.0, "temperature": 2.0},
    "lp_ft": {"lp_epochs": 1},
    "l2sp": {"alpha": 0.5, "teacher": "previous"},
    "ldifs": {"alpha": 10.0, "teacher": "previous"},
    "fda": {"lam": 3.0, "k": 8, "tau": 0.02, "bias": 0.0, "neg_weight": "constant",
            "boundary": "teacher", "learnable_temperature": False, "temp_lr": 0.001,
            "teacher": "previous", "teacher_cache_mb": 256.0, "memory_size": 0,
            "memory_warmup": 0},
    "proxy_fda": {"lam": 3.0, "k": 8, "tau": 0.02, "bias": 0.0, "n_pos": 4, "n_neg": 4,
                  "alpha": 1.0, "gen_lr": 0.001, "gamma_scale": 1.0, "neg_weight": "constant",
                  "boundary": "teacher", "learnable_temperature": False, "temp_lr": 0.001,
                  "teacher": "previous", "teacher_cache_mb": 256.0, "memory_size": 0,
                  "memory_warmup": 0},
}


#: Strategies whose computation at a given setting changed: the revision joins the run id (so
#: a sweep does not take an older run for a new one) and the record's hyper-parameters, and
#: the leaderboard labels older runs apart. Proxy-FDA 2: each proxy's own boundary (0.2.0).
STRATEGY_REVISIONS = {"proxy_fda": 2}


#: Defaults that changed after records carried their hyper-parameters, with today's value: a
#: record's value of such a key counts as non-default when it differs from today's, so runs of
#: the old default are labelled apart (``fda(tau=0.02)``) and never merged with runs at the new
#: one. 0.4.0: FDA's and Proxy-FDA's τ, 0.02 -> 0.05.
CHANGED_DEFAULTS = {"fda": {"tau": 0.05}, "proxy_fda": {"tau": 0.05}}


def hyperparameters(rec: dict) -> dict:
    """The record's strategy hyper-parameters: ``{"strategy", "values", "non_default"}``.

    A record carries them (``hyperparameters``); for one written before, they come from
    ``config.strategy`` (complete, after defaults), and a value counts as non-default when it
    differs from ``LEGACY_DEFAULTS`` or is not listed there. Keys of ``CHANGED_DEFAULTS`` are
    compared with today's default.

    Raises:
        ValueError: ``config.strategy`` is missing or has no name.
    """
    hp = rec.get("hyperparameters")
    if (isinstance(hp, dict) and isinstance(hp.get("strategy"), str)
            and isinstance(hp.get("values"), dict) and isinstance(hp.get("non_default"), list)):
        return _with_changed_defaults(hp)
    cfg = rec.get("config")
    strategy = cfg.get("strategy") if isinstance(cfg, dict) else None
    strategy = {"name": strategy} if isinstance(strategy, str) else strategy
    if not isinstance(strategy, dict) or not isinstance(strategy.get("name"), str):
        raise ValueError("config.strategy.name missing or not a string")
    name = strategy["name"]
    values = {k: v for k, v in strategy.items() if k != "name"}
    defaults = LEGACY_DEFAULTS.get(name, {})
    return _with_changed_defaults({"strategy": name, "values": values,
                                   "non_default": sorted(k for k, v in values.items()
                                                         if k not in defaults or defaults[k] != v)})


def _with_changed_defaults(hp: dict) -> dict:
    changed = CHANGED_DEFAULTS.get(hp["strategy"], {})
    if not changed:
        return hp
    marked = set(hp["non_default"])
    for key, today in changed.items():
        if key in hp["values"]:
            (marked.discard if hp["values"][key] == today else marked.add)(key)
    return {**hp, "non_default": sorted(marked)}
