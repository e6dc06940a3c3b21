"""Run configuration: dataclasses, YAML loading, ``--set`` overrides and validation.

A ``RunConfig`` is complete after defaults; its ``id`` is a stable hash of every field
except ``out`` and ``loggers`` (where results and logs go does not change what is computed).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from .core.coercion import coerce, parse_scalar
from .core.errors import ConfigError
from .core.revisions import STRATEGY_REVISIONS


@dataclass
class StrategyConfig:
    """Which strategy and its hyper-parameters (validated by the strategy registry).

    In YAML the hyper-parameters sit beside the name: ``strategy: {name: fda, k: 8}``.
    """

    name: str = "naive"
    params: dict = field(default_factory=dict)


@dataclass
class BenchmarkConfig:
    """A named benchmark, or a stream spelled out inline with ``experiences`` and ``probes``.

    ``name`` left out: ``demo`` for no inline stream, else the stream's own label (its
    experiences joined by ``+``), so an inline stream is never labelled ``demo``.
    """

    name: Optional[str] = None
    experiences: Optional[list] = None
    probes: Optional[list] = None
    root: str = "~/.cache/proxyfda_cl/data"
    download: bool = False
    image_size: Optional[int] = None
    train_size: Optional[int] = None
    test_size: Optional[int] = None
    val_fraction: float = 0.1
    #: most / least frequent class in each experience's training set (1: as loaded)
    imbalance: float = 1.0


@dataclass
class BackboneConfig:
    """The encoder: ``tiny`` (pre-trained by the suite), ``openclip:...``, ``timm:...``, ``torch:...``."""

    name: str = "tiny"
    weights: Optional[str] = None
    input_size: Optional[int] = None
    mean: Optional[list] = None
    std: Optional[list] = None


@dataclass
class TrainConfig:
    """Optimisation of each experience."""

    epochs: int = 2
    lr: float = 0.01
    batch_size: int = 64
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    grad_clip: Optional[float] = 1.0  # the LDIFS protocol's; None: no clipping
    sampler: str = "auto"
    classes_per_batch: int = 16
    samples_per_class: int = 4
    num_workers: int = 0
    precision: str = "fp32"
    head_init: str = "random"
    freeze_head: bool = False
    batchnorm: str = "frozen"
    batchnorm_recompute: bool = True  # with batchnorm: train, statistics of the final weights


@dataclass
class EvalConfig:
    """Evaluation after each experience: task heads, linear probes, feature distances."""

    batch_size: int = 256
    probe_train_size: Optional[int] = 2000
    probe_test_size: Optional[int] = 1000
    probe_grid: list = field(default_factory=lambda: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2])
    probe_tol: float = 1e-4
    distances: bool = True
    otdd_method: str = "auto"
    otdd_max_n: int = 1000
    knn_k: int = 8
    bn_drift: bool = True


#: Fields added after results existed, left out of ``RunConfig.id`` at these values, so that
#: earlier runs keep their ids (a sweep skips or resumes them instead of running them again).
ID_NEUTRAL = {("benchmark", "imbalance"): 1.0, ("strategy", "memory_size"): 0,
              ("strategy", "memory_warmup"): 0, ("strategy", "max_grad_ratio"): 0.0,
              ("strategy", "layers"): {"fda": "final", "proxy_fda": "final", "ldifs": "ldifs"},
              ("train", "batchnorm_recompute"): False}


@dataclass
class RunConfig:
    """One run: a strategy trained over one benchmark stream from one backbone and seed."""

    seed: int = 0
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"
    out: str = "results"
    loggers: list = field(default_factory=lambda: ["interactive"])

    @property
    def id(self) -> str:
        """Stable hash of the complete config, ``out`` and ``loggers`` excluded."""
        d = to_dict(self)
        d.pop("out")
        d.pop("loggers")
        for (section, key), neutral in ID_NEUTRAL.items():
            if isinstance(neutral, dict):  # per strategy
                neutral = neutral.get(self.strategy.name, object())
            if key in d[section] and d[section][key] == neutral:
                del d[section][key]
        if d["train"].get("batchnorm") != "train":  # no statistics update, nothing to recompute
            d["train"].pop("batchnorm_recompute", None)
        if self.strategy.name in STRATEGY_REVISIONS:
            d["strategy"]["revision"] = STRATEGY_REVISIONS[self.strategy.name]
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


CHOICES = {
    "train.optimizer": ("sgd", "adam", "adamw"),
    "train.schedule": ("constant", "cosine"),
    "train.sampler": ("auto", "random", "balanced", "hard"),
    "train.precision": ("fp32", "bf16"),
    "train.head_init": ("random", "probe"),
    "train.batchnorm": ("train", "frozen"),
    "eval.otdd_method": ("auto", "exact", "sinkhorn"),
}
POSITIVE = {"train.epochs", "train.lr", "train.batch_size", "train.classes_per_batch",
            "train.samples_per_class", "eval.batch_size", "eval.otdd_max_n", "eval.knn_k",
            "eval.probe_train_size", "eval.probe_test_size", "eval.probe_tol", "benchmark.train_size",
            "benchmark.test_size", "benchmark.image_size", "backbone.input_size", "train.grad_clip"}
NON_NEGATIVE = {"seed", "train.momentum", "train.weight_decay", "train.warmup_steps",
                "train.num_workers"}

LOGGERS = ("interactive", "text", "csv", "tensorboard", "wandb")
# logger -> (module it needs, the optional extra that installs it)
EXTRAS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


def to_dict(cfg: Any) -> dict:
    """A plain, JSON-ready dict of a config; strategy params sit beside the name."""
    d = dataclasses.asdict(cfg)
    if isinstance(cfg, RunConfig):
        s = d.pop("strategy")
        d["strategy"] = {"name": s["name"], **s["params"]}
    return d


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    data = dict(data)
    if cls is StrategyConfig:
        name = data.pop("name", "naive")
        params = data.pop("params", {}) or {}
        params.update(data)
        return StrategyConfig(name=coerce(name, str, "strategy.name"), params=params)
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(f"{where}: unknown field; valid fields: {', '.join(names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if isinstance(value, str) and key in ("strategy", "benchmark", "backbone"):
                value = {"name": value}
            kwargs[key] = _build(tp, value or {}, where)
        else:
            kwargs[key] = coerce(value, tp, where)
    return cls(**kwargs)


def validate(cfg: RunConfig) -> RunConfig:
    """Range and choice checks; raises a one-line ``ConfigError`` naming the field.

    The strategy's hyper-parameters are completed with their defaults, so that a config
    spelling a default out and one leaving it implicit have the same ``id``.
    """
    from .strategies.registry import resolve_params  # here: reading a config needs no torch

    cfg.strategy.params = resolve_params(cfg.strategy.name, cfg.strategy.params)
    if cfg.benchmark.name is None:  # see BenchmarkConfig
        cfg.benchmark.name = "+".join(map(str, cfg.benchmark.experiences or [])) or "demo"
    for where, allowed in CHOICES.items():
        value = _get(cfg, where)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of: {', '.join(allowed)}")
    for where in POSITIVE | NON_NEGATIVE:
        value = _get(cfg, where)
        if value is None:
            continue
        if where in POSITIVE and value <= 0:
            raise ConfigError(f"{where}: must be > 0, got {value!r}")
        if where in NON_NEGATIVE and value < 0:
            raise ConfigError(f"{where}: must be >= 0, got {value!r}")
    if not cfg.benchmark.imbalance >= 1.0:
        raise ConfigError(f"benchmark.imbalance: must be >= 1 (the most frequent class's count over "
                          f"the least frequent's), got {cfg.benchmark.imbalance!r}")
    if not 0.0 <= cfg.benchmark.val_fraction < 1.0:
        raise ConfigError(f"benchmark.val_fraction: must be in [0, 1), got {cfg.benchmark.val_fraction!r}")
    cfg.eval.probe_grid = [coerce(v, float, "eval.probe_grid") for v in cfg.eval.probe_grid]
    if not cfg.eval.probe_grid or min(cfg.eval.probe_grid) <= 0:
        raise ConfigError(f"eval.probe_grid: give positive penalties, got {cfg.eval.probe_grid!r}")
    cfg.loggers = check_loggers(cfg.loggers)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", cfg.device):
        raise ConfigError(f"device: {cfg.device!r} is not auto, cpu, cuda[:N] or mps")
    return cfg


def _available(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def check_loggers(names: list) -> list:
    """The logger names, checked: known, each once, and their optional extra installed.

    Raises:
        ConfigError: one line naming ``loggers`` and the fix.
    """
    out: list = []
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"loggers: {name!r} is not one of: {', '.join(LOGGERS)}")
        if name in out:
            raise ConfigError(f"loggers: {name} is listed twice; list each logger once")
        out.append(name)
    for name in out:
        if name in EXTRAS and not _available(EXTRAS[name][0]):
            raise ConfigError(f"loggers: {name} needs the optional extra; install it with "
                              f"pip install 'proxyfda-cl[{EXTRAS[name][1]}]' or drop it from loggers")
    return out


def _get(cfg: Any, dotted: str) -> Any:
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating levels as needed."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        nxt = node.get(part)
        if isinstance(nxt, str) and part in ("strategy", "benchmark", "backbone"):
            nxt = {"name": nxt}
        if not isinstance(nxt, dict):
            nxt = {}
        node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def from_dict(data: dict) -> RunConfig:
    """Build and validate a ``RunConfig`` from a nested dict (YAML shape)."""
    return validate(_build(RunConfig, data, ""))


def load_yaml(path: str) -> dict:
    """Read a YAML mapping; a one-line ``ConfigError`` when missing or unparsable."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path}: not found; pass an existing YAML file")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        at = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"config file {path}: not valid YAML{at}; fix its syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
    return data


def make_config(base: Optional[dict] = None, sets: Optional[list] = None, **flags: Any) -> RunConfig:
    """Merge a base dict, CLI flags (``strategy=...``, ``seed=...``) and ``--set`` pairs.

    Args:
        base: nested dict, usually from a YAML file.
        sets: ``dotted.key=value`` strings, applied last.
        **flags: top-level shortcuts; ``None`` values are ignored.
    """
    data = copy.deepcopy(base or {})
    for key, value in flags.items():
        if value is None:
            continue
        if key in ("strategy", "benchmark", "backbone"):
            set_dotted(data, f"{key}.name", value)
        else:
            data[key] = value
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        key, text = item.split("=", 1)
        set_dotted(data, key.strip(), parse_scalar(text))
    return from_dict(data)
