#!/usr/bin/env python
"""Training-step overhead of FDA, Proxy-FDA and LDIFS at their default depths and at the
other one (`strategy.layers`, METHOD.md "Depths"), each measured side by side with naive
fine-tuning in one run of `measure_step_overhead` (docs/benchmarks.md, "Depths").

Usage: python bench/depths_overhead.py [--backbone timm:tf_efficientnet_lite0]
           [--image-size 64] [--batch-size 64] [--steps 10] [--repeats 3]
"""
import argparse
import statistics

from proxyfda_cl.config import BackboneConfig
from proxyfda_cl.models import build_encoder
from proxyfda_cl.tools.overhead import measure_step_overhead

SETTINGS = {"default": {}, "other": {"fda": {"layers": "ldifs"}, "proxy_fda": {"layers": "ldifs"},
                                     "ldifs": {"layers": "final"}}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cfg = BackboneConfig(name=a.backbone, input_size=a.image_size)
    ratios: dict = {}
    for _ in range(a.repeats):
        for setting, params in SETTINGS.items():
            res = measure_step_overhead(lambda: build_encoder(cfg), ["fda", "proxy_fda", "ldifs"],
                                        batch_size=a.batch_size, steps=a.steps, warmup=2,
                                        image_size=a.image_size, params=params, device="cpu")
            for name, row in res["strategies"].items():
                if name != "naive":
                    layers = params.get(name, {}).get("layers", "default")
                    ratios.setdefault(f"{name} (layers: {layers})", []).append(row["ratio"])
    print(f"{'strategy':32s} {'x naive (median)':>17s}  per repeat")
    for name, values in ratios.items():
        print(f"{name:32s} {statistics.median(values):17.2f}  "
              + ", ".join(f"{v:.2f}" for v in values))


if __name__ == "__main__":
    main()
