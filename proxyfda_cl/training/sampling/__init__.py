"""Training batches: random, class-balanced and hard-class-mined (METHOD.md "Batch
construction and hard class mining").

``samplers`` holds the index samplers, ``mining`` the class ids and the teacher's class means
hard mining reads, ``plugin`` the ``BatchSamplerPlugin`` that puts them into a strategy and
hands each minibatch's dataset indices to the plugins that read the teacher.
"""
from .mining import dataset_class_ids, teacher_class_means
from .plugin import BatchSamplerPlugin, TeacherReader, current_batch_indices
from .samplers import SAMPLER_KINDS, ClassBatchSampler, RandomBatchSampler

__all__ = ["BatchSamplerPlugin", "ClassBatchSampler", "RandomBatchSampler", "SAMPLER_KINDS",
           "TeacherReader", "current_batch_indices", "dataset_class_ids", "teacher_class_means"]
