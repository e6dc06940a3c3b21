"""Plots: files written as PNG and PDF, and the numbers drawn equal those of the records."""
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from proxyfda_cl.analysis.correlation import correlation_table
from proxyfda_cl.analysis.plots import (plot_all, plot_forward_transfer, plot_matrices,
                                        plot_otdd_vs_forgetting)
from proxyfda_cl.core.typed_record import read_results
from proxyfda_cl.core.record import record_name, write_json_atomic

STREAM, PROBES = ["t0", "t1", "t2"], ["p0", "p1"]


def make_record(bench="demo", strat="naive", seed=0):
    """A valid complete record with random matrices and metrics derived from them (METHOD.md)."""
    rng = np.random.default_rng(zlib.crc32(f"{bench}/{strat}/{seed}".encode()))
    T, cols = len(STREAM), STREAM + PROBES
    R = rng.uniform(0.3, 1.0, (T, T)).round(4)
    P = rng.uniform(0.3, 1.0, (T + 1, len(cols))).round(4)
    per = []
    for t in range(1, T + 1):
        unseen = list(range(t, len(cols)))  # datasets not yet trained after experience t
        per.append({"a_lp": float(P[t][t - 1]),
                    "delta_lp": float(np.mean(P[t][unseen] - P[0][unseen])),
                    "fwt": None, "bwt": None, "forgetting": None})
    dist = [{"experience": t, "dataset": d, "l2": float(rng.uniform(0, 1)),
             "otdd": float(rng.uniform(0, 5)), "n": 50, "otdd_method": "exact"}
            for t in range(1, T + 1) for d in cols]
    return {"id": f"{bench}-{strat}-{seed}".replace("/", "_"), "status": "complete",
            "config": {"seed": seed, "strategy": {"name": strat}, "benchmark": {"name": bench}},
            "stream": STREAM, "probes": PROBES,
            "matrices": {"R": R.tolist(), "R_columns": STREAM, "P": P.tolist(), "P_columns": cols},
            "metrics": {"final": dict(per[-1]), "per_experience": per}, "distances": dist,
            "timing": {"per_experience": [{"train_s": 1.0, "eval_s": 0.5, "step_median_s": 0.01}
                                          for _ in STREAM], "total_s": 5.0}}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    for strat in ("naive", "fda"):
        for seed in range(3):
            r = make_record("demo", strat, seed)
            write_json_atomic(folder / record_name(r["config"], r["id"]), r)
    r = make_record("cifar/split", "naive", 0)
    write_json_atomic(folder / record_name(r["config"], r["id"]), r)
    (folder / "broken.json").write_text("{not json")
    recs, problems = read_results(folder)
    assert len(recs) == 7 and len(problems) == 1
    return recs


def check_files(files, n_figures):
    assert len(files) == 2 * n_figures
    for f in files:
        data = Path(f).read_bytes()
        assert len(data) > 1000
        if f.endswith(".png"):
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert f.endswith(".pdf") and data[:5] == b"%PDF-"


def group(records, bench, strat):
    """The record dicts, as written, of one benchmark and strategy, by seed."""
    return [r.raw for r in sorted((r for r in records if r.benchmark == bench
                                   and r.strategy == strat), key=lambda r: r.seed)]


@pytest.mark.slow
def test_forward_transfer_data_and_files(records, tmp_path):
    out = plot_forward_transfer(records, tmp_path / "new" / "dir")
    check_files(out["files"], 2)
    assert any("cifar_split" in f for f in out["files"])
    assert set(out) == {"demo", "cifar/split", "files"}
    for strat in ("naive", "fda"):
        recs = group(records, "demo", strat)
        curves = np.array([[e["delta_lp"] for e in r["metrics"]["per_experience"]] for r in recs])
        got = out["demo"][strat]
        np.testing.assert_allclose(got["per_experience_mean"], curves.mean(0), rtol=1e-12)
        np.testing.assert_allclose(got["per_experience_std"], curves.std(0, ddof=1), rtol=1e-12)
        finals = [r["metrics"]["final"]["delta_lp"] for r in recs]
        assert got["final_mean"] == pytest.approx(np.mean(finals), rel=1e-12)
        assert got["final_std"] == pytest.approx(np.std(finals, ddof=1), rel=1e-12)
        assert got["seeds"] == [0, 1, 2]
    single = out["cifar/split"]["naive"]
    assert single["final_std"] is None and single["per_experience_std"] == [None] * 3


@pytest.mark.slow
def test_forward_transfer_null_values_skipped(tmp_path):
    recs = [make_record(seed=s) for s in range(2)]
    recs[1]["metrics"]["per_experience"][0]["delta_lp"] = None
    recs[1]["metrics"]["per_experience"].pop()  # a shorter curve
    out = plot_forward_transfer(recs, tmp_path)["demo"]["naive"]
    pe = [[e["delta_lp"] for e in r["metrics"]["per_experience"]] for r in recs]
    assert out["per_experience_mean"][0] == pe[0][0]
    assert out["per_experience_mean"][1] == pytest.approx((pe[0][1] + pe[1][1]) / 2)
    assert out["per_experience_mean"][2] == pe[0][2]
    assert out["per_experience_std"] == [None, pytest.approx(np.std([pe[0][1], pe[1][1]],
                                                                   ddof=1)), None]


@pytest.mark.slow
def test_otdd_points_equal_record_numbers(records, tmp_path):
    out = plot_otdd_vs_forgetting(records, tmp_path)
    check_files(out["files"], 1)
    expected = {}
    for r in (rec.raw for rec in records):
        P, cols = r["matrices"]["P"], r["matrices"]["P_columns"]
        for d in r["distances"]:
            j = cols.index(d["dataset"])
            expected[(r["id"], d["experience"], d["dataset"])] = (
                d["otdd"], d["l2"], P[0][j] - P[d["experience"]][j])
    got = {(p["run_id"], p["experience"], p["dataset"]): (p["otdd"], p["l2"], p["forgetting"])
           for p in out["points"]}
    assert len(out["points"]) == len(expected) == 7 * 3 * 5
    assert got == expected
    by_id = {r.id: r.strategy for r in records}
    assert all(p["strategy"] == by_id[p["run_id"]] for p in out["points"])
    x = [v[0] for v in expected.values()]
    y = [v[2] for v in expected.values()]
    assert out["otdd"]["pearson"] == pytest.approx(stats.pearsonr(x, y)[0])
    assert out["otdd"]["spearman"] == pytest.approx(stats.spearmanr(x, y)[0])
    assert out["otdd"]["n"] == out["l2"]["n"] == len(x)
    table = correlation_table(records, n_boot=0)
    assert out["otdd"]["n"] == table["otdd"]["n"]
    assert out["otdd"]["pearson"] == pytest.approx(table["otdd"]["pearson"])


@pytest.mark.slow
def test_otdd_plot_draws_the_correlation_tables_points(tmp_path):
    rec = make_record()
    P, cols = rec["matrices"]["P"], rec["matrices"]["P_columns"]
    for d in rec["distances"]:  # forgetting = 0.5 * otdd - 0.1 exactly
        j = cols.index(d["dataset"])
        d["otdd"] = ((P[0][j] - P[d["experience"]][j]) + 0.1) / 0.5
    rec["distances"][0]["otdd"] = None  # a point missing either distance is in neither panel
    rec["distances"][1]["l2"] = None
    rec["distances"][2]["otdd"] = rec["distances"][2]["l2"] = None
    out = plot_otdd_vs_forgetting([rec], tmp_path)
    table = correlation_table([rec], n_boot=0)
    assert len(out["points"]) == 12
    for key in ("otdd", "l2"):
        assert out[key]["n"] == table[key]["n"] == 12
        assert out[key]["pearson"] == pytest.approx(table[key]["pearson"])
        assert out[key]["spearman"] == pytest.approx(table[key]["spearman"])
    assert out["otdd"]["pearson"] == pytest.approx(1.0)
    assert out["otdd"]["spearman"] == pytest.approx(1.0)
    assert out["otdd"]["slope"] == pytest.approx(0.5)
    assert out["otdd"]["intercept"] == pytest.approx(-0.1)


@pytest.mark.slow
def test_a_record_whose_distances_miss_its_matrices_is_reported(tmp_path):
    good, bad = make_record(seed=0), make_record(seed=1)
    bad["distances"][0]["dataset"] = "nowhere"
    problems = []
    out = plot_otdd_vs_forgetting([good, bad], tmp_path, problems=problems)
    assert {p["run_id"] for p in out["points"]} == {good["id"]} and len(out["points"]) == 15
    assert len(problems) == 1 and bad["id"] in problems[0]


@pytest.mark.slow
def test_otdd_too_few_points_still_writes(tmp_path):
    rec = make_record()
    rec["distances"] = rec["distances"][:2]
    out = plot_otdd_vs_forgetting([rec], tmp_path)
    check_files(out["files"], 1)
    assert out["otdd"]["pearson"] is None and out["l2"]["spearman"] is None
    empty = plot_otdd_vs_forgetting([], tmp_path / "empty")
    assert empty["points"] == [] and empty["otdd"]["pearson"] is None
    check_files(empty["files"], 1)


@pytest.mark.slow
def test_matrices_mean_over_seeds(records, tmp_path):
    out = plot_matrices(records, tmp_path)
    check_files(out["files"], 3)
    for strat in ("naive", "fda"):
        recs = group(records, "demo", strat)
        got = out["demo"][strat]
        np.testing.assert_allclose(got["R"], np.mean([r["matrices"]["R"] for r in recs], 0))
        np.testing.assert_allclose(got["P"], np.mean([r["matrices"]["P"] for r in recs], 0))
        assert got["R_columns"] == got["R_rows"] == STREAM
        assert got["P_columns"] == STREAM + PROBES
        assert got["P_rows"] == ["pre-trained"] + STREAM
    assert out["cifar/split"]["naive"]["R"] == group(records, "cifar/split", "naive")[0][
        "matrices"]["R"]


def test_matrices_nulls_and_mismatched_seed(tmp_path):
    recs = [make_record(seed=s) for s in range(3)]
    recs[0]["matrices"]["R"][0][2] = None
    recs[1]["matrices"]["R"][0][2] = None
    recs[0]["matrices"]["P"][1][3] = None  # one of the two kept seeds has no value here
    recs[2]["matrices"]["P"] = [row[:-1] for row in recs[2]["matrices"]["P"]]
    recs[2]["_path"] = "odd-seed"
    problems = []
    got = plot_matrices(recs, tmp_path, problems=problems)["demo"]["naive"]
    assert got["seeds"] == [0, 1] and len(problems) == 1 and "odd-seed" in problems[0]
    assert got["R"][0][2] is None
    assert got["P"][1][3] == recs[1]["matrices"]["P"][1][3]
    assert got["R"][1][1] == pytest.approx((recs[0]["matrices"]["R"][1][1]
                                            + recs[1]["matrices"]["R"][1][1]) / 2)


@pytest.mark.slow
def test_plot_all_with_bad_records(records, tmp_path):
    bad = make_record(strat="bad")
    bad["status"] = "failed"
    junk = {"id": "junk", "status": "complete", "config": {"seed": 0}}
    problems = []
    demo = [r for r in records if r.benchmark == "demo"]
    out = plot_all(demo + [bad, junk], tmp_path / "figs", problems=problems)
    assert set(out) == {"forward-transfer", "otdd", "matrices", "files"}
    assert out["files"] == (out["forward-transfer"]["files"] + out["otdd"]["files"]
                            + out["matrices"]["files"])
    check_files(out["files"], 1 + 1 + 2)
    assert len(out["otdd"]["points"]) == len(demo) * 15
    assert len(problems) == 2  # each skipped record reported once
    assert "bad" not in out["matrices"]["demo"]
