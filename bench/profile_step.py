#!/usr/bin/env python
"""Profile one training step of each strategy with ``torch.profiler`` (docs/benchmarks.md).

Each strategy is set up as ``proxyfda-cl overhead`` sets it up (second experience, the same
fixed batch already on the device), stepped ``--warmup`` times, then one step is profiled.
Printed per strategy: the wall time of the profiled step, the number of operator calls, the
operators that would block the host on a GPU (``aten::_local_scalar_dense`` is what
``.item()``, ``float(t)``, ``bool(t)`` and ``if t:`` become; ``aten::nonzero`` is boolean
indexing and ``torch.nonzero``; a copy to the CPU shows as ``aten::_to_copy`` with a CPU
destination and is listed by its caller's shapes), and the top operators by self time.

    python bench/profile_step.py --backbone timm:vit_small_patch16_224 --weights random \\
        --batch-size 16 --strategies naive fda proxy_fda --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::item", "aten::is_nonzero")


def profile_strategy(name: str, encoder, *, batch_size: int, image_size: int, precision: str,
                     device: torch.device, warmup: int, top: int) -> dict:
    from proxyfda_cl.benchmarks.streams import tensor_benchmark
    from proxyfda_cl.tools.stepping import prepare_strategy, train_step

    torch.manual_seed(0)
    x = torch.randn(batch_size, 3, image_size, image_size)
    y = torch.arange(batch_size) % 10
    exps = list(tensor_benchmark([(x, y)] * 2).train_stream)
    strategy = prepare_strategy(name, encoder, exps, params={}, batch_size=batch_size,
                                device=device, precision=precision, optimizer="sgd", lr=1e-3)
    batch = [x.to(device), y.to(device), torch.ones_like(y).to(device)]
    for _ in range(warmup):
        train_step(strategy, [t.clone() for t in batch])
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fresh = [t.clone() for t in batch]
    with profile(activities=acts, record_shapes=False) as prof:
        with record_function("train_step"):
            train_step(strategy, fresh)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = prof.key_averages()
    step = next(e for e in events if e.key == "train_step")
    ops = [e for e in events if e.key.startswith("aten::")]
    syncs = {e.key: e.count for e in events if e.key in SYNC_OPS}
    to_cpu = sum(e.count for e in events if e.key == "aten::_to_copy")
    rows = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    total_self = sum(e.self_cpu_time_total for e in ops) or 1.0
    return {"strategy": name, "step_ms": step.cpu_time_total / 1000.0,
            "op_calls": sum(e.count for e in ops), "sync_ops": syncs, "to_copy_calls": to_cpu,
            "top": [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1000.0,
                     "share": e.self_cpu_time_total / total_self} for e in rows]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="tiny")
    p.add_argument("--weights", default="random")
    p.add_argument("--strategies", nargs="+", default=["naive", "fda", "proxy_fda", "ldifs",
                                                        "l2sp", "ewc", "lwf", "lp_ft"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--threads", type=int)
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    from proxyfda_cl.core.errors import quiet_third_party

    quiet_third_party()
    if a.threads:
        torch.set_num_threads(a.threads)
    from proxyfda_cl.config import BackboneConfig
    from proxyfda_cl.models import build_encoder

    encoder = build_encoder(BackboneConfig(name=a.backbone, weights=a.weights,
                                           input_size=a.image_size))
    size = a.image_size or encoder.input_size
    results = []
    for name in a.strategies:
        r = profile_strategy(name, encoder, batch_size=a.batch_size, image_size=size,
                             precision=a.precision, device=torch.device(a.device),
                             warmup=a.warmup, top=a.top)
        results.append(r)
        print(f"== {name}: step {r['step_ms']:.1f} ms, {r['op_calls']} aten calls, "
              f"host-sync ops {r['sync_ops'] or 'none'}, _to_copy calls {r['to_copy_calls']}")
        for t in r["top"]:
            print(f"   {t['op']:40s} {t['calls']:6d} {t['self_ms']:9.2f} ms {100 * t['share']:5.1f}%")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"settings": vars(a), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
