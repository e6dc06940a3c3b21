"""Datasets, streams and batch samplers."""
from .base import DATASETS, TaskData, load_dataset, split_name
from . import concept_world, digits, emoji, imagefolder, torchvision_sets  # noqa: F401  (register datasets)
from .streams import BENCHMARKS, build_stream, resolve

__all__ = ["BENCHMARKS", "DATASETS", "TaskData", "build_stream", "load_dataset", "resolve",
           "split_name"]
