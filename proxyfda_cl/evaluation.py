"""Evaluation after each experience: linear probes (P), feature distances and kNN overlap.

Features are extracted once per (encoder state, dataset split) and reused by the probe,
the L2 distance and OTDD. The pre-trained encoder's test features are kept as the
reference ``f_0`` of every distance.
"""
from __future__ import annotations

from typing import Optional

import torch

from .analysis.otdd import feature_distances
from .analysis.probe import extract_features, fit_probe
from .analysis.structure import knn_overlap
from .benchmarks.streams import Stream, limit


class Evaluator:
    """Probe accuracy and distances of an encoder on every dataset of a stream.

    Args:
        stream: the stream with its evaluation sets.
        cfg: the ``EvalConfig``.
        device: where features are extracted and probes fitted.
        precision: ``fp32`` or ``bf16`` (feature extraction under autocast).
        seed: seeds the probe splits and OTDD subsampling.
    """

    def __init__(self, stream: Stream, cfg, *, device: torch.device, precision: str = "fp32",
                 seed: int = 0, num_workers: int = 0) -> None:
        self.stream, self.cfg, self.device = stream, cfg, device
        self.precision, self.seed, self.num_workers = precision, seed, num_workers
        self.columns = list(stream.experiences) + list(stream.probes)
        self.reference: dict[str, torch.Tensor] = {}

    def _probe_train(self, name: str):
        """The probe's training split of ``name``: at most ``probe_train_size`` items, the
        same seeded subset after every experience (an experience's own training set can be
        larger than the probes')."""
        s = self.stream.sets[name]
        return limit(s.train, s.train_targets, self.cfg.probe_train_size, self.seed)

    def _features(self, encoder, ds) -> torch.Tensor:
        feats, _ = extract_features(encoder, ds, batch_size=self.cfg.batch_size,
                                    device=str(self.device), precision=self.precision,
                                    num_workers=self.num_workers)
        return feats

    def evaluate(self, encoder, experience: Optional[int]) -> tuple[list[float], list[dict]]:
        """One row of P and the distances to the reference features.

        Args:
            encoder: the encoder to probe (left in the mode it was in).
            experience: 1-based index of the experience just trained; ``None`` for the
                pre-trained encoder, whose test features become the reference.
        Returns:
            (P row in ``self.columns`` order, distance entries for the record).
        """
        row, dists = [], []
        for name in self.columns:
            s = self.stream.sets[name]
            train_ds, train_y = self._probe_train(name)
            train_x = self._features(encoder, train_ds)
            test_x = self._features(encoder, s.test)
            res = fit_probe(train_x.to(self.device), train_y.to(self.device),
                            test_x.to(self.device), s.test_targets.to(self.device), seed=self.seed,
                            grid=self.cfg.probe_grid, tol=self.cfg.probe_tol)
            row.append(float(res.accuracy))
            if experience is None:
                self.reference[name] = test_x
            elif self.cfg.distances:
                d = feature_distances(self.reference[name], test_x, s.test_targets,
                                      method=self.cfg.otdd_method, max_n=self.cfg.otdd_max_n,
                                      seed=self.seed)
                k = min(self.cfg.knn_k, len(test_x) - 1)
                d["knn_overlap"] = knn_overlap(self.reference[name], test_x, k) if k >= 1 else None
                dists.append({"experience": experience, "dataset": name, **d})
        return row, dists
