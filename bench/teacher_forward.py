#!/usr/bin/env python
"""How much a teacher forward costs next to a training step, in each way it can run.

Times, on one fixed batch, the median of ``--steps`` calls (after ``--warmup``), modes
round-robin: ``train_step`` (the student: forward + cross-entropy on a linear head + backward +
SGD step), ``forward_grad`` (a training-mode forward that keeps activations for backward, no
backward), and the frozen teacher in eval mode under ``no_grad`` (what ``Teacher`` does),
``inference_mode``, and ``no_grad`` with bf16 autocast. docs/benchmarks.md, "Overhead at ViT
scale".

    python bench/teacher_forward.py --backbone timm:vit_small_patch16_224 --batch-size 16
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="timm:vit_small_patch16_224")
    p.add_argument("--weights", default="random")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    from proxyfda_cl.core.errors import quiet_third_party

    quiet_third_party()
    if a.threads:
        torch.set_num_threads(a.threads)
    from proxyfda_cl.config import BackboneConfig
    from proxyfda_cl.models import build_encoder
    from proxyfda_cl.strategies.teacher import frozen_copy

    dev = torch.device(a.device)
    torch.manual_seed(0)
    student = build_encoder(BackboneConfig(name=a.backbone, weights=a.weights)).to(dev).train()
    head = nn.Linear(student.feature_dim, 10).to(dev)
    teacher = frozen_copy(copy.deepcopy(student)).to(dev)
    opt = torch.optim.SGD(list(student.parameters()) + list(head.parameters()), lr=1e-4,
                          momentum=0.9)
    size = student.input_size
    x = torch.randn(a.batch_size, 3, size, size, device=dev)
    y = torch.arange(a.batch_size, device=dev) % 10
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)

    def train_step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(head(student(x)), y).backward()
        opt.step()

    def forward_grad():
        student(x).sum()

    def no_grad():
        with torch.no_grad():
            teacher(x)

    def inference():
        with torch.inference_mode():
            teacher(x)

    def bf16():
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
            teacher(x)

    modes = {"train_step": train_step, "forward_grad": forward_grad,
             "teacher_no_grad": no_grad, "teacher_inference_mode": inference,
             "teacher_no_grad_bf16": bf16}
    times: dict = {k: [] for k in modes}
    for i in range(a.warmup + a.steps):
        for k, fn in modes.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if i >= a.warmup:
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"settings": vars(a), "threads": torch.get_num_threads(), "image_size": size,
           "median_s": med, "share_of_train_step": {k: v / med["train_step"] for k, v in med.items()}}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
