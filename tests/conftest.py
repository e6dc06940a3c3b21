"""Shared fixtures: an isolated cache, small tiny-encoder weights, tiny run configs."""
from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Never touch the user's cache; keep torch to one thread per test process."""
    os.environ["PROXYFDA_CL_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> str:
    """A saved state_dict of a randomly initialised tiny encoder (no pre-training needed)."""
    from proxyfda_cl.models.tiny import TinyCNN

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(TinyCNN().state_dict(), path)
    return str(path)


def small_config_dict(out: str, weights: str, *, strategy: str = "naive", seed: int = 0) -> dict:
    """A two-experience run on tiny data that trains in seconds."""
    return {
        "seed": seed,
        "strategy": {"name": strategy},
        "benchmark": {"experiences": ["concept:shape[0:3]", "digits[0:4]"],
                      "probes": ["concept:colour[0:3]"], "train_size": 96, "test_size": 48,
                      "name": "tiny-test"},
        "backbone": {"name": "tiny", "weights": weights},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.01, "classes_per_batch": 3,
                  "samples_per_class": 8},
        "eval": {"batch_size": 128, "probe_train_size": 90, "probe_test_size": 45,
                 "otdd_max_n": 45},
        "device": "cpu",
        "out": out,
    }
