"""Paired comparison against a baseline: pairing by (benchmark, backbone, seed), the mean, the
bootstrap interval, and the CLI's --vs."""
import math

import numpy as np
import pytest

from proxyfda_cl.analysis.bootstrap import bootstrap_interval
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
    assert 0.02 <= rows[0]["ci_low"] < rows[0]["mean"] < rows[0]["ci_high"] <= 0.03
    # a resample's mean is k/6 of the way from 0.02 to 0.03 (k = draws of 0.03), so the
    # percentile bounds are near the 2.5% and 97.5% points of 0.02 + 0.01 * Binomial(6, 1/3) / 6
    assert rows[0]["ci_low"] == pytest.approx(0.02, abs=0.0017)
    assert rows[0]["ci_high"] == pytest.approx(0.02 + 0.01 * 5 / 6, abs=0.0017)


def test_interval_width_is_the_standard_error_for_a_large_sample():
    d = np.random.default_rng(3).normal(0.5, 1.0, size=400)
    lo, hi = bootstrap_interval((d,), np.mean, n_boot=4000, seed=0)
    se = d.std(ddof=1) / math.sqrt(len(d))
    assert lo < d.mean() < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_a_strategys_interval_does_not_depend_on_the_others():
    def runs(strat, values):
        return [make_record(bench="b", strat=strat, seed=i, final={"delta_lp": v})
                for i, v in enumerate(values)]

    base = runs("naive", [0.0] * 8) + runs("fda", [0.013, -0.021, 0.034, 0.002, 0.041, -0.008,
                                                   0.027, 0.019])
    alone = paired_comparison(base, "naive", seed=5)
    more = runs("ewc", [0.1 * i for i in range(8)]) + runs("lwf", [-0.05 * i for i in range(8)])
    rows = {r["strategy"]: r for r in paired_comparison(more + base, "naive", seed=5)}
    assert (rows["fda"]["ci_low"], rows["fda"]["ci_high"]) == (alone[0]["ci_low"],
                                                               alone[0]["ci_high"])


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
