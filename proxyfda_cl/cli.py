"""``proxyfda-cl``: the command line. Argument parsing only; the work lives in the library.

Each subcommand runs a function of ``commands``.

Errors a user can cause print one line (``error: ...``) and exit with code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from . import commands
from .core.errors import ProxyFDAError, quiet_third_party


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for every user error
        sys.stderr.write(f"error: {self.prog}: {message}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="proxyfda-cl", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def sweep_flags(sp, results_flag: str = "--results") -> None:
        sp.add_argument("--workers", type=int, default=2, help="parallel local processes")
        sp.add_argument("--cpus-per-run", type=float, default=1, help="threads/CPUs per run")
        sp.add_argument(results_flag, dest="results" if results_flag == "--results" else "out",
                        help="results folder")
        sp.add_argument("--retry-failed", action="store_true")
        sp.add_argument("--keep-checkpoints", action="store_true")
        sp.add_argument("--overwrite", action="store_true", help="redo complete runs")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    r = sub.add_parser("run", help="one run")
    r.add_argument("--config")
    r.add_argument("--strategy")
    r.add_argument("--benchmark")
    r.add_argument("--backbone")
    r.add_argument("--seed", type=int)
    r.add_argument("--out")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--overwrite", action="store_true")
    r.add_argument("--keep-checkpoints", action="store_true")
    r.set_defaults(fn=commands.cmd_run)

    s = sub.add_parser("sweep", help="a suite's grid, locally or on Ray")
    s.add_argument("suite", help="a suite YAML, or a packaged suite name")
    s.add_argument("--engine", choices=["local", "ray"], default="local")
    s.add_argument("--address", help="Ray address (default: start a local instance)")
    s.add_argument("--gpus-per-run", type=float, default=0)
    s.add_argument("--seeds", type=int, help="replace the suite's seeds with 0..N-1")
    sweep_flags(s)
    s.set_defaults(fn=commands.cmd_sweep)

    d = sub.add_parser("demo", help="the offline comparison of all strategies")
    d.add_argument("--quick", action="store_true", help="smaller data, under a minute")
    d.add_argument("--seeds", type=int, default=None)
    sweep_flags(d, "--out")
    d.set_defaults(fn=commands.cmd_demo)

    t = sub.add_parser("pretrain", help="pre-train and cache the tiny encoder")
    t.add_argument("--quick", action="store_true")
    t.set_defaults(fn=commands.cmd_pretrain)

    sub.add_parser("list", help="strategies, benchmarks, datasets, backbones").set_defaults(
        fn=commands.cmd_list)

    lb = sub.add_parser("leaderboard", help="table from a results folder")
    lb.add_argument("results_dir")
    lb.add_argument("--format", choices=["md", "csv", "html"])
    lb.add_argument("--out")
    lb.add_argument("--vs", metavar="STRATEGY",
                    help="also print the paired difference of every strategy to this one, "
                         "with a bootstrap CI over (benchmark, seed) pairs")
    lb.add_argument("--metric", default="delta_lp",
                    choices=["a_lp", "delta_lp", "fwt", "bwt", "forgetting"],
                    help="metric of the paired comparison (default delta_lp)")
    lb.add_argument("--by-benchmark", action="store_true",
                    help="one paired row per benchmark instead of pooling them")
    lb.set_defaults(fn=commands.cmd_leaderboard)

    pl = sub.add_parser("plot", help="figures from a results folder")
    pl.add_argument("results_dir")
    pl.add_argument("--kind", choices=["forward-transfer", "otdd", "matrices", "all"], default="all")
    pl.add_argument("--out")
    pl.set_defaults(fn=commands.cmd_plot)

    rp = sub.add_parser("report", help="one self-contained HTML page of a results folder")
    rp.add_argument("results_dir")
    rp.add_argument("--out", help="HTML file (default: RESULTS_DIR/report.html)")
    rp.add_argument("--baseline", help="strategy the paired comparison subtracts (default naive)")
    rp.set_defaults(fn=commands.cmd_report)

    c = sub.add_parser("correlation", help="forgetting vs OTDD and vs L2, with bootstrap CIs")
    c.add_argument("results_dir")
    c.add_argument("--n-boot", type=int, default=1000)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--held-out", action="store_true",
                   help="only datasets not yet trained on (the ones Δ_LP averages)")
    c.set_defaults(fn=commands.cmd_correlation)

    o = sub.add_parser("overhead", help="training-step time of each strategy relative to naive")
    o.add_argument("--backbone", default="tiny")
    o.add_argument("--weights", help="backbone.weights: a local file, or random (no weights)")
    o.add_argument("--strategies", nargs="+", help="names, or all (naive is always measured)")
    o.add_argument("--steps", type=int, default=30, help="timed steps per strategy")
    o.add_argument("--warmup", type=int, default=3, help="untimed steps per strategy first")
    o.add_argument("--epochs", type=int, default=0,
                   help="instead: time real epochs (teacher cache on and off)")
    o.add_argument("--repeats", type=int, default=3, help="with --epochs: runs per strategy")
    o.add_argument("--batch-size", type=int, default=64)
    o.add_argument("--image-size", type=int, help="input side (default: the backbone's)")
    o.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: autocast, as train.precision")
    o.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    o.add_argument("--teacher-cache", action="store_true",
                   help="also time FDA and Proxy-FDA with a warm teacher-feature cache")
    o.add_argument("--memory-sizes", type=int, nargs="+", default=[], metavar="M",
                   help="also time FDA and Proxy-FDA with a full cross-batch memory of M entries")
    o.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    o.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    o.add_argument("--json", action="store_true", help="print one JSON object")
    o.set_defaults(fn=commands.cmd_overhead)
    return p


def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit code."""
    quiet_third_party()
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ProxyFDAError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; finished runs are kept and an unfinished run resumes when rerun\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
