"""Calibration of the offline default: probe headroom of the pre-trained tiny encoder on
every concept-world attribute, and the probe accuracy naive fine-tuning costs.

    python bench/calibrate.py [--preset ""|quick] [--finetune shape] [--epochs 2] [--lr 0.02]

Prints a markdown table: probe accuracy per attribute before and after naive fine-tuning
on one attribute (the demo's optimiser settings), and the change.
"""
from __future__ import annotations

import argparse
import torch
import torch.nn.functional as F

from proxyfda_cl.metrics.probe import extract_features, fit_probe
from proxyfda_cl.benchmarks.concept_world import ATTRIBUTES, concept_dataset
from proxyfda_cl.config import BackboneConfig
from proxyfda_cl.models import build_encoder, image_transform


def probe_all(encoder, data, transform) -> dict:
    out = {}
    for attr, task in data.items():
        xs = {}
        for split in ("train", "test"):
            ds = getattr(task, split)
            x = transform(ds.images)
            feats, _ = extract_features(encoder, torch.utils.data.TensorDataset(x, ds.labels))
            xs[split] = feats
        out[attr] = fit_probe(xs["train"], task.train_targets, xs["test"], task.test_targets).accuracy
    return out


def main() -> None:
    from proxyfda_cl.core.errors import quiet_third_party

    quiet_third_party()
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="")
    ap.add_argument("--finetune", default="shape")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--n-train", type=int, default=1350)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    name = "tiny" + (f":{a.preset}" if a.preset else "")
    enc = build_encoder(BackboneConfig(name=name))
    transform = image_transform(enc)
    data = {attr: concept_dataset(attr, seed=100 + a.seed, n_train=2000, n_test=1000)
            for attr in ATTRIBUTES}
    before = probe_all(enc, data, transform)

    torch.manual_seed(a.seed)
    ft = concept_dataset(a.finetune, seed=a.seed, n_train=a.n_train, n_test=10)
    x, y = transform(ft.train.images), ft.train_targets
    head = torch.nn.Linear(enc.feature_dim, len(ATTRIBUTES[a.finetune]))
    opt = torch.optim.SGD(list(enc.parameters()) + list(head.parameters()), lr=a.lr, momentum=0.9)
    enc.train()
    for _ in range(a.epochs):
        for idx in torch.randperm(len(y)).split(64):
            loss = F.cross_entropy(head(enc(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    enc.eval()
    after = probe_all(enc, data, transform)
    print(f"encoder {name}; naive fine-tuning on {a.finetune}: {a.epochs} epochs, "
          f"{a.n_train} images, SGD lr {a.lr}, momentum 0.9, batch 64; seed {a.seed}\n")
    print("| attribute | probe before | probe after | change (points) |")
    print("|---|---:|---:|---:|")
    for attr in ATTRIBUTES:
        print(f"| {attr} | {100 * before[attr]:.1f} | {100 * after[attr]:.1f} | "
              f"{100 * (after[attr] - before[attr]):+.1f} |")


if __name__ == "__main__":
    main()
