"""Paired comparison against a baseline: pairing by (benchmark, backbone, seed), the mean, the
bootstrap interval, and the CLI's --vs."""
import math

import numpy as np
import pytest

from proxyfda_cl.analysis.paired import paired_comparison, paired_differences, paired_markdown
from proxyfda_cl.core.record import record_name, write_json_atomic

from .test_leaderboard import make_record


def recs():
    out = []
    for bench, base in (("b1", 0.00), ("b2", -0.02)):
        for seed in range(3):
            out.append(make_record(bench=bench, strat="naive", seed=seed,
                                   final={"delta_lp": base + 0.01 * seed}))
            out.append(make_record(bench=bench, strat="fda", seed=seed,
                                   final={"delta_lp": base + 0.01 * seed + 0.02 + 0.01 * (seed == 2)}))
    out.append(make_record(bench="b1", strat="fda", seed=7, final={"delta_lp": 0.5}))  # unpaired
    return out


def test_pairs_share_benchmark_and_seed_only():
    diffs = paired_differences(recs(), "naive")
    assert sorted((d["benchmark"], d["seed"]) for d in diffs["fda"]) == [
        ("b1", 0), ("b1", 1), ("b1", 2), ("b2", 0), ("b2", 1), ("b2", 2)]
    assert [round(d["diff"], 10) for d in diffs["fda"] if d["benchmark"] == "b1"] == [0.02, 0.02, 0.03]


def test_mean_and_bootstrap_interval():
    rows = paired_comparison(recs(), "naive", n_boot=4000, seed=1)
    assert len(rows) == 1 and rows[0]["n"] == 6
    assert rows[0]["mean"] == pytest.approx((0.02 * 4 + 0.03 * 2) / 6)
    d = np.array([0.02, 0.02, 0.03, 0.02, 0.02, 0.03])
    boot = d[np.random.default_rng(1).integers(0, 6, size=(4000, 6))].mean(1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    assert rows[0]["ci_low"] == pytest.approx(lo) and rows[0]["ci_high"] == pytest.approx(hi)
    assert 0.02 <= rows[0]["ci_low"] <= rows[0]["mean"] <= rows[0]["ci_high"] <= 0.03


def test_by_benchmark_and_a_single_pair_has_no_interval():
    rows = paired_comparison(recs(), "naive", by_benchmark=True)
    assert [(r["benchmark"], r["n"]) for r in rows] == [("b1", 3), ("b2", 3)]
    one = paired_comparison(recs()[:2], "naive")
    assert one[0]["n"] == 1 and math.isnan(one[0]["ci_low"])
    assert "| all | fda | 1 | +2.00 | — |" in paired_markdown(one)


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="metric must be one of"):
        paired_comparison(recs(), "naive", metric="speed")


def test_cli_vs(tmp_path, capsys):
    from proxyfda_cl.cli import main

    for r in recs():
        write_json_atomic(tmp_path / record_name(r["config"], r["id"]), r)
    assert main(["leaderboard", str(tmp_path), "--vs", "naive"]) == 0
    out = capsys.readouterr().out
    assert "Paired difference in delta_lp against naive" in out and "| all | fda | 6 | +2.33 |" in out
    assert main(["leaderboard", str(tmp_path), "--vs", "lwf"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--vs" in err and "fda, naive" in err and len(err.splitlines()) == 1
