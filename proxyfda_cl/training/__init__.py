"""What every run trains with: the Avalanche plugins of the training loop (optimiser and
schedule, clipping, precision, timing, heads, BatchNorm, the divergence guard, the gradient
ratio), the batch samplers and the loggers. Each plugin works inside any Avalanche strategy."""
from .batchnorm import FrozenBatchNormPlugin, RecomputeBatchNormPlugin, recompute_statistics
from .guard import DivergedError, DivergenceGuardPlugin
from .heads import HeadInitPlugin
from .optim import AutocastPlugin, GradClipPlugin, LRSchedulePlugin, make_optimizer
from .timing import StageTimes, StepTimerPlugin, Stopwatch

__all__ = ["AutocastPlugin", "DivergedError", "DivergenceGuardPlugin", "FrozenBatchNormPlugin",
           "GradClipPlugin", "HeadInitPlugin", "LRSchedulePlugin", "RecomputeBatchNormPlugin",
           "StageTimes", "StepTimerPlugin", "Stopwatch", "make_optimizer", "recompute_statistics"]
