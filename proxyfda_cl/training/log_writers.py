"""Two of Avalanche's loggers adapted to the suite: CSV files kept on resume, with a
``metrics.csv`` of every scalar; W&B runs with releases of wandb that Avalanche 0.6.0 predates.
``loggers.RunLoggers`` builds them.
"""
from __future__ import annotations

import csv
import os
import secrets
from pathlib import Path

from ..config import to_dict


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
