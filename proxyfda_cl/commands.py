"""The commands of ``proxyfda-cl``: one function per subcommand, given the parsed arguments.

Each returns the exit code; errors a user can cause are raised as ``ProxyFDAError`` and
printed as one line by ``cli.main``. Heavy modules are imported inside the commands, so that
a command loads only what it uses.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from .core.errors import ConfigError, ProxyFDAError


def cmd_run(a) -> int:
    from .config import load_yaml, make_config
    from .run.runner import run

    base = load_yaml(a.config) if a.config else None
    cfg = make_config(base, a.set, strategy=a.strategy, benchmark=a.benchmark,
                      backbone=a.backbone, seed=a.seed, out=a.out)
    rec = run(cfg, overwrite=a.overwrite, keep_checkpoints=a.keep_checkpoints, progress=True,
              on_event=print)
    if rec.get("skipped"):
        print("use --overwrite to redo it")
    final = rec["metrics"]["final"]
    print("final: " + ", ".join(f"{k}={_pct(v)}" for k, v in final.items()))
    return 0


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def cmd_sweep(a, *, suite: Optional[str] = None, seeds: Optional[int] = None,
              report: bool = True) -> int:
    from .run.sweep import expand, load_suite, run_sweep

    s = load_suite(suite or a.suite, seeds=seeds if seeds is not None else getattr(a, "seeds", None))
    results_dir = os.path.expanduser(a.results or os.path.join("results", s.name))
    runs = expand(s, out=results_dir, sets=a.set)
    print(f"suite {s.name}: {len(runs)} run(s) -> {results_dir}")
    out = run_sweep(runs, engine=getattr(a, "engine", "local"), workers=a.workers,
                    address=getattr(a, "address", None), cpus_per_run=a.cpus_per_run,
                    gpus_per_run=getattr(a, "gpus_per_run", 0), retry_failed=a.retry_failed,
                    keep_checkpoints=a.keep_checkpoints, overwrite=a.overwrite, on_event=print)
    c = out["counts"]
    if report:
        _report(results_dir)
    print(f"complete: {c['complete']}, failed: {c['failed']}")
    a._results_dir = results_dir
    return 0 if c["failed"] == 0 else 1


def _report(results_dir: str) -> None:
    from .analysis.report import write_report

    path, problems = write_report(results_dir)
    print(f"report:      {path}" + (f" ({len(problems)} problem(s) listed)" if problems else ""))


def cmd_report(a) -> int:
    from .analysis.report import write_report

    path, problems = write_report(a.results_dir, a.out, baseline=a.baseline or "naive",
                                  strict=a.baseline is not None)
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    print(f"report: {path}")
    return 0


def cmd_demo(a) -> int:
    from .analysis.correlation import correlation_markdown, correlation_table
    from .analysis.leaderboard import leaderboard, to_markdown, write_leaderboard
    from .analysis.plots import plot_all
    from .models import build_encoder
    from .config import BackboneConfig
    from .core.typed_record import read_results
    from .run.sweep import load_suite

    name = "demo-quick" if a.quick else "demo"
    suite = load_suite(name, seeds=a.seeds)
    backbone = suite.base.get("backbone", "tiny")
    build_encoder(BackboneConfig(name=backbone if isinstance(backbone, str) else backbone["name"]),
                  progress=True)  # pre-train once, with a progress bar, before workers start
    a.results = a.out or os.path.join("results", name)
    a.suite = name
    code = cmd_sweep(a, suite=name, seeds=a.seeds, report=False)
    records, problems = read_results(a._results_dir)
    for p in problems:
        print(f"skipped: {p}")
    folder = a._results_dir
    paths = [write_leaderboard(records, os.path.join(folder, f"leaderboard.{ext}"), ext)
             for ext in ("md", "csv", "html")]
    plots = plot_all(records, os.path.join(folder, "plots"))
    corr = os.path.join(folder, "correlation.md")
    _write_text(corr, correlation_markdown(correlation_table(records)) + "\n")
    paths.append(corr)
    print()
    _report(folder)
    print()
    print(to_markdown(leaderboard(records)))
    print()
    print(f"records:     {os.path.join(folder, 'records')}")
    for p in paths:
        print(f"table:       {p}")
    for f in plots["files"]:
        print(f"plot:        {f}")
    return code


def cmd_pretrain(a) -> int:
    from .config import BackboneConfig
    from .models import build_encoder, cache_dir

    enc = build_encoder(BackboneConfig(name="tiny:quick" if a.quick else "tiny"), progress=True)
    n = sum(p.numel() for p in enc.parameters())
    print(f"tiny encoder ready ({n:,} parameters), cached under {cache_dir()}")
    return 0


def cmd_list(a) -> int:
    from .benchmarks import BENCHMARKS, DATASETS
    from .models import BACKBONES
    from .strategies import STRATEGIES, strategy_defaults
    from .run.sweep import SUITES_DIR

    print("strategies:")
    for n in STRATEGIES.names():
        params = ", ".join(f"{k}={v}" for k, v in strategy_defaults(n).items())
        print(f"  {n:10s} {params}")
    print("benchmarks: " + ", ".join(BENCHMARKS.names()))
    print("datasets:   " + ", ".join(DATASETS.names()))
    print("backbones:  tiny, tiny:quick, openclip:<arch>/<tag-or-file>, timm:<name>, "
          "torch:<module>:<factory>  (prefixes: " + ", ".join(BACKBONES.names()) + ")")
    print("suites:     " + ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))))
    return 0


def cmd_leaderboard(a) -> int:
    from .analysis.leaderboard import leaderboard, to_csv, to_html, to_markdown
    from .core.typed_record import read_results

    records, problems = read_results(a.results_dir)
    rows = leaderboard(records, problems)
    for p in problems:
        print(f"skipped: {p}", file=sys.stderr)
    fmt = a.format or (os.path.splitext(a.out)[1].lstrip(".") if a.out else "md")
    render = {"md": to_markdown, "csv": to_csv, "html": to_html}
    if fmt not in render:
        raise ProxyFDAError(f"--format: {fmt!r} is not md, csv or html")
    text = render[fmt](rows)
    if a.out:
        _write_text(a.out, text)
        print(f"leaderboard: {a.out}")
    else:
        print(text)
    if a.vs:
        from .analysis.paired import paired_comparison, paired_markdown

        known = {r["strategy"] for r in rows}
        if a.vs not in known:
            raise ProxyFDAError(f"--vs: no complete run of {a.vs!r} in {a.results_dir}; "
                                f"choose one of: {', '.join(sorted(known)) or 'none'}")
        print(paired_markdown(paired_comparison(records, a.vs, a.metric,
                                                by_benchmark=a.by_benchmark)))
    return 0


def _write_text(path: str, text: str) -> None:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise ConfigError(f"--out {path}: cannot write ({e.strerror}); choose a writable path") from None


def cmd_plot(a) -> int:
    from .analysis import plots
    from .core.typed_record import read_results

    records, problems = read_results(a.results_dir)
    for p in problems:
        print(f"skipped: {p}", file=sys.stderr)
    out = a.out or os.path.join(a.results_dir, "plots")
    fn = {"forward-transfer": plots.plot_forward_transfer, "otdd": plots.plot_otdd_vs_forgetting,
          "matrices": plots.plot_matrices, "all": plots.plot_all}[a.kind]
    try:
        data = fn(records, out)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write ({e.strerror}); choose a writable folder") from None
    for f in data.get("files", []):
        print(f"plot: {f}")
    return 0


def cmd_correlation(a) -> int:
    from .analysis.correlation import correlation_markdown, correlation_table
    from .core.typed_record import read_results

    records, problems = read_results(a.results_dir)
    for p in problems:
        print(f"skipped: {p}", file=sys.stderr)
    print(correlation_markdown(correlation_table(records, n_boot=a.n_boot, seed=a.seed,
                                                 held_out=a.held_out)))
    return 0


def cmd_overhead(a) -> int:
    import json

    from .config import BackboneConfig
    from .models import build_encoder
    from .core.runtime import resolve_device
    from .strategies import STRATEGIES, strategy_defaults
    from .tools.overhead import measure_step_overhead

    names = a.strategies or ["naive", "fda", "proxy_fda", "ldifs", "l2sp"]
    if names == ["all"]:
        names = STRATEGIES.names()
    for n in names:
        STRATEGIES.get(n)
    if "naive" not in names:
        names = ["naive"] + names
    for flag, value in (("--steps", a.steps), ("--batch-size", a.batch_size),
                        ("--image-size", a.image_size or 1)):
        if value < 1:
            raise ConfigError(f"{flag}: must be a positive integer, got {value}")
    if a.warmup < 0:
        raise ConfigError(f"--warmup: must be >= 0, got {a.warmup}")
    if any(m < 1 for m in a.memory_sizes):
        raise ConfigError(f"--memory-sizes: give positive sizes, got {a.memory_sizes}")
    if a.threads is not None:
        if a.threads < 1:
            raise ConfigError(f"--threads: must be a positive integer, got {a.threads}")
        import torch

        torch.set_num_threads(a.threads)
    device = str(resolve_device(a.device))
    cfg = BackboneConfig(name=a.backbone, weights=a.weights, input_size=a.image_size)
    build_encoder(cfg, progress=not a.json)  # fail fast (and download, pre-train) once
    if a.epochs:
        from .tools.epoch_overhead import measure_epoch_overhead

        variants = {}
        for n in names:
            variants[n] = (n, {})
            if "teacher_cache_mb" in strategy_defaults(n):
                variants[f"{n} (no cache)"] = (n, {"teacher_cache_mb": 0.0})
        res = measure_epoch_overhead(lambda: build_encoder(cfg), variants, epochs=a.epochs,
                                     batch_size=a.batch_size, repeats=a.repeats, device=device)
        if a.json:
            print(json.dumps({"backbone": a.backbone, "weights": a.weights, "device": device,
                              "ratio": {n: r["ratio"] for n, r in res.items()},
                              "median_epoch_s": {n: r["median_epoch_s"] for n, r in res.items()},
                              "first_epoch_s": {n: r["first_epoch_s"] for n, r in res.items()},
                              "settings": {"epochs": a.epochs, "batch_size": a.batch_size,
                                           "repeats": a.repeats}}, indent=2))
            return 0
        print(f"{'strategy':22s} {'median epoch (s)':>17s} {'first epoch (s)':>16s} {'x naive':>8s}")
        for n, r in res.items():
            print(f"{n:22s} {r['median_epoch_s']:17.3f} {r['first_epoch_s']:16.3f} {r['ratio']:8.3f}")
        return 0
    res = measure_step_overhead(lambda: build_encoder(cfg), names, batch_size=a.batch_size,
                                steps=a.steps, warmup=a.warmup, device=device,
                                image_size=a.image_size, precision=a.precision,
                                optimizer=a.optimizer, teacher_cache=a.teacher_cache,
                                memory_sizes=tuple(a.memory_sizes))
    rows = res["strategies"]
    if a.json:
        print(json.dumps({"backbone": a.backbone, "weights": a.weights,
                          "ratio": {n: r["ratio"] for n, r in rows.items()},
                          "median_step_s": {n: r["median_step_s"] for n, r in rows.items()},
                          "images_per_s": {n: r["images_per_s"] for n, r in rows.items()},
                          "peak_mem_mb": {n: r["peak_mem_mb"] for n, r in rows.items()},
                          "step_range_s": {n: [r["min_step_s"], r["max_step_s"]]
                                           for n, r in rows.items()},
                          **{k: v for k, v in res.items() if k != "strategies"}}, indent=2))
        return 0
    mem = any(r["peak_mem_mb"] is not None for r in rows.values())
    print(f"{'strategy':20s} {'median step (ms)':>17s} {'x naive':>8s} {'images/s':>9s}"
          + (f" {'peak MiB':>9s}" if mem else ""))
    for n, r in rows.items():
        print(f"{n:20s} {1000 * r['median_step_s']:17.2f} {r['ratio']:8.3f} "
              f"{r['images_per_s']:9.1f}" + (f" {r['peak_mem_mb']:9.0f}" if mem else ""))
    print(f"teacher forward {1000 * res['teacher_forward_s']:.2f} ms; floor (naive + teacher "
          f"forward) {1000 * res['floor_s']:.2f} ms = {res['floor_ratio']:.3f} x naive")
    for n, v in res["vs_floor"].items():
        print(f"  {n}: {v:.3f} x floor")
    return 0
