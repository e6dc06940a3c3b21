"""Evaluation after each experience: linear probes (P), feature distances and kNN overlap.

Features are extracted once per (encoder state, dataset split) and reused by the probe,
the L2 distance and OTDD. The pre-trained encoder's test features are kept as the
reference ``f_0`` of every distance.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch

from ..metrics.otdd import feature_distances
from ..metrics.probe import extract_features, fit_probe
from ..metrics.structure import knn_overlap
from ..benchmarks.streams import Stream, limit
from ..training.batchnorm import recompute_statistics
from ..training.timing import StageTimes


class Evaluator:
    """Probe accuracy and distances of an encoder on every dataset of a stream.

    Args:
        stream: the stream with its evaluation sets.
        cfg: the ``EvalConfig``.
        device: where features are extracted and probes fitted.
        precision: ``fp32`` or ``bf16`` (feature extraction under autocast).
        seed: seeds the probe splits and OTDD subsampling.
        stages: a ``StageTimes`` that times feature extraction (``eval_features``), probe
            fits (``probe_fit``) and distances (``distances``: L2, OTDD, kNN overlap).
    """

    def __init__(self, stream: Stream, cfg, *, device: torch.device, precision: str = "fp32",
                 seed: int = 0, num_workers: int = 0,
                 stages: Optional[StageTimes] = None) -> None:
        self.stages = stages if stages is not None else StageTimes()
        self.stream, self.cfg, self.device = stream, cfg, device
        self.precision, self.seed, self.num_workers = precision, seed, num_workers
        self.columns = list(stream.experiences) + list(stream.probes)
        self.reference: dict[str, torch.Tensor] = {}
        self.initial: Optional[torch.nn.Module] = None  # pre-trained encoder, for BN-only drift

    def _probe_train(self, name: str):
        """The probe's training split of ``name``: at most ``probe_train_size`` items, the
        same seeded subset after every experience (an experience's own training set can be
        larger than the probes')."""
        s = self.stream.sets[name]
        return limit(s.train, s.train_targets, self.cfg.probe_train_size, self.seed)

    def _features(self, encoder, ds) -> torch.Tensor:
        with self.stages("eval_features"):
            feats, _ = extract_features(encoder, ds, batch_size=self.cfg.batch_size,
                                        device=str(self.device), precision=self.precision,
                                        num_workers=self.num_workers)
        return feats

    def _drift(self, name: str, feats: torch.Tensor) -> dict:
        """L2, OTDD (with ``n`` and ``otdd_method``) and kNN overlap of ``feats`` against the
        reference features of dataset ``name``."""
        s = self.stream.sets[name]
        with self.stages("distances"):
            d = feature_distances(self.reference[name], feats, s.test_targets,
                                  method=self.cfg.otdd_method, max_n=self.cfg.otdd_max_n,
                                  seed=self.seed)
            k = min(self.cfg.knn_k, len(feats) - 1)
            d["knn_overlap"] = knn_overlap(self.reference[name], feats, k) if k >= 1 else None
        return d

    def keep_initial(self, encoder) -> None:
        """Keep a copy of the pre-trained encoder for ``bn_data`` in ``evaluate``."""
        self.initial = copy.deepcopy(encoder).cpu()

    def _bn_only(self, data) -> torch.nn.Module:
        """The pre-trained encoder with its BatchNorm statistics re-estimated on ``data`` (a
        cumulative average over one pass in train mode) and no weight changed."""
        return recompute_statistics(copy.deepcopy(self.initial).to(self.device), data,
                                    batch_size=self.cfg.batch_size, device=self.device,
                                    num_workers=self.num_workers)

    def evaluate(self, encoder, experience: Optional[int], bn_data=None
                 ) -> tuple[list[float], list[dict]]:
        """One row of P and the distances to the reference features.

        Args:
            encoder: the encoder to probe (left in the mode it was in).
            experience: 1-based index of the experience just trained; ``None`` for the
                pre-trained encoder, whose test features become the reference.
            bn_data: the experience's training set, for a BatchNorm network trained with
                its statistics updating: each distance entry then also gives ``bn_l2``,
                ``bn_otdd`` and ``bn_knn_overlap``, the drift of the pre-trained encoder
                whose BatchNorm statistics alone were re-estimated on ``bn_data`` (needs
                ``keep_initial``): the part of the drift no loss term can hold.
        Returns:
            (P row in ``self.columns`` order, distance entries for the record).
        """
        bn_enc = self._bn_only(bn_data) if bn_data is not None and self.initial is not None else None
        row, dists = [], []
        for name in self.columns:
            s = self.stream.sets[name]
            train_ds, train_y = self._probe_train(name)
            train_x = self._features(encoder, train_ds)
            test_x = self._features(encoder, s.test)
            with self.stages("probe_fit"):
                res = fit_probe(train_x.to(self.device), train_y.to(self.device),
                                test_x.to(self.device), s.test_targets.to(self.device),
                                seed=self.seed, grid=self.cfg.probe_grid, tol=self.cfg.probe_tol)
            row.append(float(res.accuracy))
            if experience is None:
                self.reference[name] = test_x
            elif self.cfg.distances:
                d = self._drift(name, test_x)
                if bn_enc is not None:
                    bn = self._drift(name, self._features(bn_enc, s.test))
                    d.update({f"bn_{key}": bn[key] for key in ("l2", "otdd", "knn_overlap")})
                dists.append({"experience": experience, "dataset": name, **d})
        return row, dists
