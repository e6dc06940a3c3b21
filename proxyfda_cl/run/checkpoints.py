"""A run's checkpoint after each experience: state_dicts and plain data only.

``last.pt`` in ``OUT/checkpoints/<id>`` holds the model's weights (and what it takes to rebuild
its grown task heads), the optimiser's state with its parameter names, each plugin's
``state_dict()`` by position in the recipe's plugin list, the run's ``state`` (matrices,
distances, timing), the evaluator's reference features and pre-trained encoder weights, the
RNG states, the clock's counters, the device and the version. It is read with
``torch.load(..., weights_only=True)``. A checkpoint resumes when all of it loads into the run
as rebuilt from its config; one that does not fit is discarded with one line.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
from avalanche.models import IncrementalClassifier, MultiHeadClassifier, MultiTaskModule
from torch import nn

from ..core.errors import one_line
from ..core.runtime import rng_state, set_rng_state
from ..core.version import __version__

FILE = "last.pt"


def checkpoint_dir(cfg) -> Path:
    """Per-run checkpoint folder: ``OUT/checkpoints/<id>``."""
    return Path(os.path.expanduser(cfg.out)) / "checkpoints" / cfg.id


class Resumed(NamedTuple):
    """What a fitting checkpoint restored: the run continues with these."""

    model: nn.Module
    plugins: list
    optimizer: torch.optim.Optimizer
    state: dict
    optimized: dict  # parameter name -> parameter, in the optimiser's order
    clock: dict
    rng: dict


def plain(obj):
    """``obj`` with NumPy scalars and arrays turned into Python numbers and lists, recursively
    through dicts, lists and tuples (what ``weights_only`` loading accepts)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(plain(v) for v in obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    return obj


def model_state(model: nn.Module) -> dict:
    """The model's weights, the task attributes of its multi-task modules (Avalanche's
    ``max_class_label`` and known task labels) and the names of its frozen parameters."""
    return {"weights": model.state_dict(),
            "tasks": {name: {"max_class_label": int(m.max_class_label),
                             "known": [int(t) for t in m.known_train_tasks_labels]}
                      for name, m in model.named_modules() if isinstance(m, MultiTaskModule)},
            "train_task": getattr(model, "train_task", None),
            "frozen": [n for n, p in model.named_parameters() if not p.requires_grad]}


def load_model_state(model: nn.Module, state: dict) -> None:
    """Grow ``model``'s task heads to the saved ones, then load ``model_state``'s result
    (strictly: a missing key or another shape raises)."""
    weights = state["weights"]
    for name, m in list(model.named_modules()):
        if isinstance(m, MultiHeadClassifier):
            _grow_heads(m, weights, f"{name}." if name else "")
    model.load_state_dict(weights)
    tasks = state["tasks"]
    for name, m in model.named_modules():
        if isinstance(m, MultiTaskModule):
            m.max_class_label = int(tasks[name]["max_class_label"])
            m.known_train_tasks_labels = set(tasks[name]["known"])
    if hasattr(model, "train_task"):
        model.train_task = state["train_task"]
    frozen = set(state["frozen"])
    for n, p in model.named_parameters():
        p.requires_grad_(n not in frozen)


def _grow_heads(heads: MultiHeadClassifier, weights: dict, prefix: str) -> None:
    """Add the saved task heads ``heads`` lacks and resize its heads and masks to theirs."""
    start, end = f"{prefix}classifiers.", ".classifier.weight"
    for key, w in weights.items():
        if not (key.startswith(start) and key.endswith(end)):
            continue
        tid = key[len(start):-len(end)]
        if tid not in heads.classifiers:
            heads.classifiers[tid] = IncrementalClassifier(
                heads.in_features, heads.starting_out_features, masking=False, auto_adapt=False)
            heads.register_buffer(f"active_units_T{tid}",
                                  torch.zeros(heads.starting_out_features, dtype=torch.int8))
        head = heads.classifiers[tid]
        if head.classifier.out_features != w.shape[0]:
            head.classifier = nn.Linear(head.classifier.in_features, w.shape[0])
        for owner, name in ((heads, f"active_units_T{tid}"), (head, "active_units")):
            saved = weights.get(f"{prefix}{name}" if owner is heads else f"{start}{tid}.{name}")
            buf = owner._buffers.get(name)
            if saved is not None and buf is not None and buf.shape != saved.shape:
                owner._buffers[name] = torch.zeros(saved.shape, dtype=saved.dtype)


def save_checkpoint(folder: Path, model: nn.Module, plugins: list, strategy, state: dict,
                    evaluator) -> None:
    """Write ``folder/last.pt`` atomically (a temporary file, then a rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{FILE}.tmp"
    names = {id(p): n for n, p in model.named_parameters()}
    opt = strategy.optimizer
    initial = evaluator.initial
    torch.save({"model": model_state(model),
                "plugins": [p.state_dict() if hasattr(p, "state_dict") else None
                            for p in plugins],
                "optimizer": opt.state_dict(),
                "optimizer_params": [[names.get(id(p)) for p in g["params"]]
                                     for g in opt.param_groups],
                "clock": {k: v for k, v in vars(strategy.clock).items() if isinstance(v, int)},
                "state": plain(state), "reference": dict(evaluator.reference),
                "initial": None if initial is None else initial.state_dict(),
                "rng": rng_state(), "device": str(strategy.device), "version": __version__}, tmp)
    tmp.replace(folder / FILE)


def load_checkpoint(folder: Path, device: torch.device,
                    say: Callable[[str], None]) -> Optional[dict]:
    """The checkpoint in ``folder``, its tensors where they were saved (on the CPU for a CPU
    run); None, with one line, when it is unreadable (an old pickled one included) or was
    written on another device."""
    path = folder / FILE
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu" if device.type == "cpu" else None,
                          weights_only=True)
        if not isinstance(ckpt, dict):
            raise TypeError(f"a {type(ckpt).__name__}, not a dict")
    except Exception as e:  # an unreadable checkpoint means starting over, never a crash
        say(f"checkpoint {path} is unreadable ({one_line(e, limit=200)}): starting over")
        return None
    if ckpt.get("device") != str(device):
        say(f"checkpoint {path} was written on {ckpt.get('device')}, this run is on {device}: "
            "starting over")
        return None
    return ckpt


def resume(folder: Path, model: nn.Module, plugins: list, evaluator, device: torch.device,
           make_optimizer: Callable, say: Callable[[str], None]) -> Optional[Resumed]:
    """The run restored from ``folder``'s checkpoint, or None (no checkpoint, or one that does
    not fit: one line, and ``model``, ``plugins``, ``evaluator`` and the RNGs are untouched).

    ``model`` and ``plugins`` are the run's as rebuilt from its config; the restored ones are
    copies of them. ``make_optimizer(params)`` builds the run's optimiser.
    """
    ckpt = load_checkpoint(folder, device, say)
    if ckpt is None:
        return None
    try:
        with torch.random.fork_rng(devices=[]):  # growing heads draws initial weights
            resumed, reference, initial = _restore(ckpt, model, plugins, device,
                                                   make_optimizer)
    except Exception as e:  # a checkpoint that does not fit means starting over, never a crash
        say(f"checkpoint {folder / FILE} does not fit this run ({one_line(e, limit=200)}): "
            "starting over")
        return None
    evaluator.reference, evaluator.initial = reference, initial
    saved = ckpt.get("version")
    if saved != __version__:  # the record says which experiences another version trained
        resumed.state.setdefault("warnings", []).append(
            f"experiences 1-{len(resumed.state['R'])} were trained by proxyfda-cl {saved}, "
            f"the rest by {__version__} (resumed from its checkpoint)")
    return resumed


def _restore(ckpt: dict, model: nn.Module, plugins: list, device: torch.device,
             make_optimizer: Callable) -> tuple:
    """``(Resumed, reference features, pre-trained encoder or None)``; raises when any part
    of ``ckpt`` does not load into copies of ``model`` and ``plugins``."""
    state = ckpt["state"]
    if not all(isinstance(state.get(k), list) for k in ("R", "P", "distances", "timing")):
        raise KeyError("state: R, P, distances and timing")
    reference = dict(ckpt["reference"])
    if not all(torch.is_tensor(v) for v in reference.values()):
        raise TypeError("reference: features must be tensors")
    model, plugins = copy.deepcopy((model, list(plugins)))
    load_model_state(model, ckpt["model"])
    model.to(device)
    saved = ckpt["plugins"]
    if len(saved) != len(plugins):
        raise ValueError(f"{len(saved)} plugin states for {len(plugins)} plugins")
    for p, s in zip(plugins, saved):
        if hasattr(p, "state_dict") != (s is not None):
            raise ValueError(f"plugin {type(p).__name__}: its state does not match")
        if s is not None:
            p.load_state_dict(s, model=model)
    initial = None
    if ckpt["initial"] is not None:
        initial = copy.deepcopy(model.encoder).cpu()
        initial.load_state_dict(ckpt["initial"])
    optimizer = make_optimizer(model.parameters())
    _load_optimizer(optimizer, model, ckpt["optimizer"], ckpt["optimizer_params"])
    now = rng_state()
    try:  # the RNG states are set once the strategy is built
        set_rng_state(ckpt["rng"])
    finally:
        set_rng_state(now)
    if not all(isinstance(v, int) for v in ckpt["clock"].values()):
        raise TypeError("clock: counters must be integers")
    named = dict(model.named_parameters())
    optimized = {n: named[n] for g in ckpt["optimizer_params"] for n in g}
    return (Resumed(model, plugins, optimizer, state, optimized, dict(ckpt["clock"]), ckpt["rng"]),
            reference, initial)


def _load_optimizer(opt: torch.optim.Optimizer, model: nn.Module, saved: dict,
                    groups: list) -> None:
    """Give ``opt`` the checkpoint's parameters (in its order) and state."""
    named = dict(model.named_parameters())
    if len(groups) != len(opt.param_groups):
        raise ValueError(f"optimizer: {len(groups)} parameter groups, the run has "
                         f"{len(opt.param_groups)}")
    for names, group in zip(groups, saved["param_groups"]):
        if len(names) != len(group["params"]):
            raise ValueError("optimizer: parameter names and state do not match")
        for n, i in zip(names, group["params"]):
            if n not in named:
                raise KeyError(f"optimizer parameter {n!r} is not in the model")
            for key, v in saved["state"].get(i, {}).items():
                if torch.is_tensor(v) and v.dim() and v.shape != named[n].shape:
                    raise ValueError(f"optimizer state {key} of {n}: shape {tuple(v.shape)}, "
                                     f"the parameter's is {tuple(named[n].shape)}")
    for group, names in zip(opt.param_groups, groups):
        group["params"] = [named[n] for n in names]
    opt.load_state_dict(saved)


def restore_strategy(strategy, resumed: Resumed) -> None:
    """Put a fresh strategy where the checkpointed one stood after its last experience.

    Avalanche's ``optimized_param_id`` is set so that its first ``make_optimizer`` keeps the
    restored optimiser state (momentum) instead of resetting it, as it does for a strategy
    that never trained; the clock's counters (``train_exp_counter``, read by EWC and the
    teacher) continue where they stopped.
    """
    for key, value in resumed.clock.items():
        setattr(strategy.clock, key, value)
    strategy.optimized_param_id = dict(resumed.optimized)
    set_rng_state(resumed.rng)
