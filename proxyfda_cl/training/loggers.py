"""Experiment tracking: Avalanche's own loggers, chosen by ``RunConfig.loggers``.

``loggers: [interactive, text, csv, tensorboard, wandb]`` (default ``[interactive]``) picks
Avalanche's ``InteractiveLogger``, ``TextLogger``, ``CSVLogger``, ``TensorboardLogger`` and
``WandBLogger``; they are wired through the ``EvaluationPlugin`` of the run. Each writes under
``OUT/logs/<benchmark>__<strategy>__seed<N>__<id>/`` (the run record's name), so every run of
a sweep has its own folder:

    log.txt                         text
    training_results.csv, eval_results.csv   csv (Avalanche's fixed columns)
    metrics.csv                     csv: every scalar as (name, step, value)
    events.out.tfevents.*           tensorboard
    wandb/                          wandb (offline unless ``WANDB_MODE`` is set)

Besides Avalanche's epoch and experience accuracy and loss, two series are logged:

* per training step (``step`` = the strategy's iteration counter): ``train/task_loss`` (the
  criterion alone) and each regulariser term its plugin exposes: ``train/fda`` (FDA, and the
  FDA term of Proxy-FDA), ``train/proxy`` (Proxy-FDA's proxy loss), ``train/ldifs``,
  ``train/l2sp``;
* per experience (``step`` = the experience, 1-based): the record's ``record/a_lp``,
  ``record/delta_lp``, ``record/fwt``, ``record/bwt``, ``record/forgetting``, the probe row
  ``record/P/<dataset>``, the task row ``record/R/<task>`` and the distances
  ``record/l2/<dataset>``, ``record/otdd/<dataset>`` and ``record/knn_overlap/<dataset>``
  where the record has them.

``interactive`` prints only when the run owns the terminal (``proxyfda-cl run``); sweep
workers leave it out. With no logger active the run's evaluator is exactly the minimal one
(experience accuracy only) and nothing is read per step.
"""
from __future__ import annotations

import csv
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Optional

from avalanche.core import SupervisedPlugin

from ..metrics.continual import compute_metrics
from ..config import to_dict
from ..core.record import record_name

# plugin class name -> {attribute: series name}; other plugins with ``last_loss`` are named
# after their class
REGULARIZERS = {"FDAPlugin": {"last_loss": "fda"},
                "ProxyFDAPlugin": {"last_loss": "fda", "last_proxy_loss": "proxy"},
                "LDIFSPlugin": {"last_loss": "ldifs"},
                "L2SPPlugin": {"last_loss": "l2sp"}}


def log_dir(cfg) -> Path:
    """The run's log folder: ``OUT/logs/<benchmark>__<strategy>__seed<N>__<id>``."""
    return Path(os.path.expanduser(cfg.out)) / "logs" / Path(record_name(to_dict(cfg), cfg.id)).stem


def regularizer_values(plugins: list) -> list[tuple[str, Any]]:
    """``(series name, value)`` of every regulariser value the plugins expose now (tensors
    or None); read with ``getattr``, never set."""
    out = []
    for plugin in plugins:
        attrs = REGULARIZERS.get(type(plugin).__name__)
        if attrs is None:
            if not hasattr(plugin, "last_loss"):
                continue
            name = type(plugin).__name__.lower()
            attrs = {"last_loss": name[:-6] if name.endswith("plugin") else name}
        out += [(series, getattr(plugin, attr, None)) for attr, series in attrs.items()]
    return out


def experience_values(t: int, R: list, P: list, columns: list, tasks: list,
                      distances: list) -> dict[str, float]:
    """The record's values after experience ``t`` (1-based) as ``{series name: float}``.

    Args:
        t: the experience just finished.
        R, P: the record's matrices so far (``t`` and ``t + 1`` rows).
        columns: ``P_columns``; tasks: ``R_columns`` (the stream).
        distances: the record's distance entries (all experiences so far).
    """
    n = len(tasks)
    pad_r = list(R) + [[None] * n for _ in range(n - len(R))]
    pad_p = list(P) + [[None] * len(columns) for _ in range(n + 1 - len(P))]
    per = compute_metrics(pad_r, pad_p, n)["per_experience"][t - 1]
    values = {f"record/{k}": v for k, v in per.items()}
    values.update({f"record/P/{c}": v for c, v in zip(columns, P[t])})
    values.update({f"record/R/{c}": v for c, v in zip(tasks, R[t - 1])})
    for d in distances:
        if d.get("experience") == t:
            for key in ("l2", "otdd", "knn_overlap"):
                values[f"record/{key}/{d.get('dataset')}"] = d.get(key)
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class TaskLossProbe(SupervisedPlugin):
    """Keeps the criterion's loss of each step, read before any plugin adds a penalty:
    it must come first in the strategy's plugin list."""

    def __init__(self) -> None:
        super().__init__()
        self.task_loss = None

    def before_training_iteration(self, strategy, **kwargs):
        self.task_loss = None

    def before_backward(self, strategy, **kwargs):
        self.task_loss = strategy.loss.detach()


def _step_metric(probe: TaskLossProbe):
    """A metric emitting ``train/task_loss`` and the regulariser terms after every step,
    with one host sync per step. A value its plugin did not renew this step (the plugin
    skipped the batch) is left out."""
    import torch
    from avalanche.evaluation import PluginMetric
    from avalanche.evaluation.metric_results import MetricValue

    class StepLosses(PluginMetric):
        def __init__(self) -> None:
            super().__init__()
            self._last: dict = {}

        def result(self):
            return None

        def reset(self):
            pass

        def after_training_iteration(self, strategy):
            names, tensors = [], []
            if torch.is_tensor(probe.task_loss):
                names.append("task_loss")
                tensors.append(probe.task_loss)
            for i, (name, value) in enumerate(regularizer_values(strategy.plugins)):
                if torch.is_tensor(value) and self._last.get((i, name)) is not value:
                    self._last[(i, name)] = value
                    names.append(name)
                    tensors.append(value)
            if not tensors:
                return None
            values = torch.stack([v.float().reshape(()) for v in tensors]).tolist()
            x = strategy.clock.train_iterations
            return [MetricValue(self, f"train/{n}", v, x) for n, v in zip(names, values)]

    return StepLosses()


class RunLoggers:
    """The loggers of one run, the metrics they need and the run's per-experience values.

    Args:
        cfg: the run config (``loggers``, ``out``).
        interactive: whether ``interactive`` may print (the run owns the terminal).
        resumed: the run resumes from a checkpoint: files are appended to, not replaced.
    """

    def __init__(self, cfg, *, interactive: bool, resumed: bool) -> None:
        self.interactive = interactive
        self.names = [n for n in cfg.loggers if n != "interactive" or interactive]
        self.folder = log_dir(cfg)
        self.loggers: list = []
        if any(n != "interactive" for n in self.names):
            if not resumed and self.folder.exists():
                shutil.rmtree(self.folder)  # a fresh start: no series of an earlier attempt
            self.folder.mkdir(parents=True, exist_ok=True)
        self._files: list = []
        for name in self.names:
            self.loggers.append(self._make(name, cfg, resumed))
        self.probe = TaskLossProbe() if self.loggers else None

    def _make(self, name: str, cfg, resumed: bool):
        from avalanche.logging import InteractiveLogger, TensorboardLogger, TextLogger

        if name == "interactive":
            return InteractiveLogger()
        if name == "text":
            f = open(self.folder / "log.txt", "a" if resumed else "w")
            self._files.append(f)
            return TextLogger(file=f)
        if name == "csv":
            return csv_logger(self.folder, resumed)
        if name == "tensorboard":
            return TensorboardLogger(tb_log_dir=self.folder)
        return wandb_logger(cfg, self.folder, quiet=not self.interactive)

    @property
    def plugins(self) -> list:
        """Plugins to put first in the strategy's list (the task-loss probe), if any."""
        return [self.probe] if self.probe is not None else []

    def metrics(self) -> list:
        """The ``EvaluationPlugin``'s metrics: experience accuracy (the record's R) always;
        epoch and experience accuracy and loss and the per-step losses when logging."""
        from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics

        if not self.loggers:
            return [accuracy_metrics(experience=True)]
        return [accuracy_metrics(epoch=True, experience=True),
                loss_metrics(epoch=True, experience=True), _step_metric(self.probe)]

    def log_experience(self, t: int, state: dict, columns: list, tasks: list,
                       step: int) -> Optional[dict]:
        """Log the record's values after experience ``t`` (1-based) to every logger.

        Args:
            state: the session's partial record (``R``, ``P``, ``distances``).
            columns, tasks: ``P_columns`` and ``R_columns``.
            step: the strategy's iteration counter (W&B needs increasing steps).
        Returns:
            The values logged, or None when no logger is active.
        """
        if not self.loggers:
            return None
        from avalanche.evaluation.metric_results import MetricValue
        from avalanche.logging import TextLogger, WandBLogger

        values = experience_values(t, state["R"], state["P"], columns, tasks,
                                   state["distances"])
        for lg in self.loggers:
            if isinstance(lg, TextLogger):  # interactive too: print now, not at the next epoch
                print(f"-- record after experience {t} --", file=lg.file)
                for k in sorted(values):
                    print(f"\t{k} = {values[k]:.4f}", file=lg.file)
                lg.file.flush()
            elif isinstance(lg, WandBLogger):
                lg.step = max(lg.step, step)
                lg.wandb.log({**values, "experience": t}, step=lg.step)
            else:
                lg.log_metrics([MetricValue(self, k, v, t) for k, v in values.items()])
        return values

    def close(self) -> None:
        """Flush and close every file and writer; finish the W&B run."""
        from avalanche.logging import CSVLogger, TensorboardLogger, WandBLogger

        for lg in self.loggers:
            if isinstance(lg, TensorboardLogger):
                lg.writer.flush()
                lg.writer.close()
            elif isinstance(lg, CSVLogger):
                lg.close()
            elif isinstance(lg, WandBLogger):
                lg.wandb.finish()
        for f in self._files:
            f.close()
        self.loggers, self._files = [], []


# --- two of Avalanche's loggers adapted to the suite ---------------------------------------

def csv_logger(folder: Path, resumed: bool):
    """Avalanche's ``CSVLogger`` writing into ``folder``, appending to its files on resume."""
    from avalanche.logging import CSVLogger as AvalancheCSV

    class CSVLogger(AvalancheCSV):
        """Avalanche's CSV files, kept on resume, plus ``metrics.csv`` (name, step, value)."""

        def __init__(self) -> None:
            files = ("training_results.csv", "eval_results.csv")
            old = {f: (folder / f).read_text() for f in files if resumed and (folder / f).exists()}
            super().__init__(log_folder=str(folder))
            if old:  # Avalanche truncates its files: put the earlier lines back and append
                self.training_file.close()
                self.eval_file.close()
                for f, text in old.items():
                    (folder / f).write_text(text)
                self.training_file = open(folder / files[0], "a")
                self.eval_file = open(folder / files[1], "a")
            path = folder / "metrics.csv"
            append = resumed and path.exists()
            self.metrics_file = open(path, "a" if append else "w", newline="")
            self.metrics_csv = csv.writer(self.metrics_file)
            if not append:
                self.metrics_csv.writerow(["name", "step", "value"])

        def log_single_metric(self, name, value, x_plot):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.metrics_csv.writerow([name, x_plot, repr(float(value))])

        def close(self):
            super().close()
            self.metrics_file.close()

    return CSVLogger()


def wandb_logger(cfg, folder: Path, quiet: bool):
    """Avalanche's ``WandBLogger`` for run ``cfg`` in ``folder``: offline unless ``WANDB_MODE``
    is set, silent in a sweep worker (``quiet``)."""
    import numpy as np
    from avalanche.evaluation.metric_results import AlternativeValues, TensorImage
    from avalanche.logging import WandBLogger as AvalancheWandB
    from matplotlib.figure import Figure
    from PIL.Image import Image
    from torch import Tensor

    class WandBLogger(AvalancheWandB):
        """Avalanche's W&B logger, made to work with wandb releases that dropped
        ``wandb.viz``, which Avalanche 0.6.0 names for every value it logs."""

        def log_single_metric(self, name, value, x_plot):
            if hasattr(self.wandb, "viz"):
                return super().log_single_metric(name, value, x_plot)
            self.step = x_plot
            if name.startswith("WeightCheckpoint"):
                if self.log_artifacts:
                    self._log_checkpoint(name, value, x_plot)
                return
            if isinstance(value, AlternativeValues):
                value = value.best_supported_value(Image, Tensor, TensorImage, Figure, float, int)
            if isinstance(value, Image):
                value = self.wandb.Image(value)
            elif isinstance(value, TensorImage):
                value = self.wandb.Image(np.array(value))
            elif isinstance(value, Tensor):
                value = self.wandb.Histogram(np_histogram=np.histogram(value.view(-1).numpy()))
            elif not isinstance(value, (float, int, Figure)):
                return
            self.wandb.log({name: value}, step=self.step)

    # an id of our own: Avalanche 0.6.0 calls wandb.util.generate_id, gone from recent wandb
    params: dict = {"group": cfg.benchmark.name, "job_type": cfg.strategy.name,
                    "id": f"{cfg.id}-{secrets.token_hex(4)}"}
    if "WANDB_MODE" not in os.environ:
        params["mode"] = "offline"
    if quiet:  # a sweep worker: no banners between the sweep's progress lines
        params["settings"] = {"silent": True}
    folder.mkdir(parents=True, exist_ok=True)
    return WandBLogger(project_name=os.environ.get("WANDB_PROJECT", "proxyfda-cl"),
                       run_name=folder.name, dir=str(folder), config=to_dict(cfg),
                       save_code=False, params=params)
