#!/usr/bin/env python
"""Write proxyfda_cl/suites/robustness.yaml: the robustness matrix (docs/benchmarks.md,
"Robustness matrix").

The settings users pick: optimiser and learning rate (SGD 0.01, SGD 0.003, AdamW 1e-3, AdamW
1e-4), gradient clipping (none, 1.0), BatchNorm statistics (frozen, train) and heads (random,
probe). Per optimiser level, the half fraction of the 2^3 design over (clip, BatchNorm, head)
with head = clip XOR BatchNorm, so every main effect of the three is balanced within each level;
each cell runs on one of two datasets, alternated so that every factor meets both. 16 cells,
each a benchmark named by its settings, so the leaderboard's per-benchmark rows and
``--vs naive`` pairs are the cells.

Run: python bench/robustness_suite.py   (then: proxyfda-cl sweep robustness --workers 2)
"""
from pathlib import Path

import yaml

LEVELS = [("sgd", 0.01), ("sgd", 0.003), ("adamw", 1.0e-3), ("adamw", 1.0e-4)]
DATASETS = {"fmnist-a": (["fashion_mnist[0:5]"], ["fashion_mnist[5:10]", "digits"]),
            "digits": (["digits"], ["fashion_mnist[0:5]", "fashion_mnist[5:10]"])}
HEADER = """\
# The robustness matrix (docs/benchmarks.md, "Robustness matrix"), written by
# bench/robustness_suite.py: the real-mini network, naive fine-tuning and the four
# feature/weight regularisers at their shipped defaults, over the training settings users pick
# (optimiser and learning rate, gradient clipping, BatchNorm statistics, heads): 16 cells of a
# fractional design, each a benchmark named by its settings. 2 epochs of 1,000 images.
# 80 runs; 70 minutes on 2 cores with --workers 2 (measured while other jobs shared them).
"""


def cells() -> list:
    out = []
    for li, (opt, lr) in enumerate(LEVELS):
        for clip in (0, 1):
            for bn in (0, 1):
                head = clip ^ bn
                data = "fmnist-a" if (head ^ (li % 2)) == 0 else "digits"
                exps, probes = DATASETS[data]
                name = (f"{data}/{opt}-{lr:g}/{'clip1' if clip else 'noclip'}/"
                        f"bn-{'train' if bn else 'frozen'}/{'probe' if head else 'random'}")
                overrides = {"train.optimizer": opt, "train.lr": lr,
                             "train.grad_clip": 1.0 if clip else None,
                             "train.batchnorm": "train" if bn else "frozen",
                             "train.head_init": "probe" if head else "random"}
                if opt == "adamw":
                    overrides["train.weight_decay"] = 0.1
                out.append({"name": name, "experiences": exps, "probes": probes,
                            "overrides": overrides})
    return out


def suite() -> dict:
    return {"name": "robustness",
            "base": {"backbone": {"name": "timm:tf_efficientnet_lite0", "input_size": 64},
                     "benchmark": {"train_size": 1000, "test_size": 500},
                     "train": {"epochs": 2, "batch_size": 64},
                     "eval": {"probe_train_size": 1000, "probe_test_size": 500,
                              "otdd_max_n": 500},
                     "device": "auto"},
            "strategies": ["naive", "l2sp", "ldifs", "fda", "proxy_fda"],
            "benchmarks": cells(),
            "seeds": [0]}


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "proxyfda_cl" / "suites" / "robustness.yaml"
    path.write_text(HEADER + yaml.dump(suite(), Dumper=_NoAliases, sort_keys=False, width=100))
    print(path)
