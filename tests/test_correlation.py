"""Correlation of forgetting with feature distances (METHOD.md, Metrics: Correlation)."""
import math

import numpy as np
import pytest

from proxyfda_cl.analysis.correlation import correlate, correlation_table, forgetting_points
from proxyfda_cl.core.errors import DataError


def test_exact_linear_relation():
    x = np.arange(10.0)
    out = correlate(x, 2 * x, n_boot=200)
    assert out["pearson"] == pytest.approx(1.0) and out["spearman"] == pytest.approx(1.0)
    assert out["pearson_ci"] == pytest.approx([1.0, 1.0]) and out["n"] == 10
    assert correlate(x, -3 * x + 1, n_boot=0)["pearson"] == pytest.approx(-1.0)


def test_hand_computed_value():
    # deviations (-2,-1,0,1,2) and (-1,-2,1,0,2): sum of products 8, sums of squares 10 -> 0.8;
    # the values are their own ranks, so Spearman is 0.8 too.
    out = correlate([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], n_boot=0)
    assert out["pearson"] == pytest.approx(0.8) and out["spearman"] == pytest.approx(0.8)
    assert all(math.isnan(v) for v in out["pearson_ci"])


def test_spearman_is_rank_based():
    x = np.arange(1.0, 9.0)
    out = correlate(x, np.exp(x), n_boot=0)
    assert out["spearman"] == pytest.approx(1.0) and out["pearson"] < 0.9


def test_bootstrap_interval_covers_truth_large_sample():
    rng = np.random.default_rng(0)
    n, rho = 2000, 0.6
    x = rng.standard_normal(n)
    e = rng.standard_normal(n)
    xc = (x - x.mean()) / np.linalg.norm(x - x.mean())
    ec = e - e.mean() - (e - e.mean()) @ xc * xc
    ec /= np.linalg.norm(ec)
    y = rho * xc + math.sqrt(1 - rho**2) * ec          # sample Pearson exactly 0.6
    out = correlate(xc, y, n_boot=500, seed=1)
    assert out["pearson"] == pytest.approx(rho, abs=1e-12)
    lo, hi = out["pearson_ci"]
    assert lo < rho < hi and hi - lo < 0.1
    truth_s = 6 / math.pi * math.asin(rho / 2)        # Spearman of a bivariate normal
    lo, hi = out["spearman_ci"]
    assert lo < truth_s < hi and lo < out["spearman"] < hi
    again = correlate(xc, y, n_boot=500, seed=1)
    assert again["pearson_ci"] == out["pearson_ci"]


def test_degenerate_inputs_are_nan():
    assert math.isnan(correlate([1, 2], [3, 4])["pearson"])
    assert math.isnan(correlate([1, 1, 1, 1], [1, 2, 3, 4])["spearman"])
    with pytest.raises(ValueError):
        correlate([1, 2, 3], [1, 2])


def record(run_id, strategy, seed, p, distances):
    return {"id": run_id, "status": "complete",
            "config": {"strategy": {"name": strategy}, "seed": seed},
            "matrices": {"P": p, "P_columns": ["a", "b", "probe"]},
            "distances": distances}


REC = record("r1", "fda", 3,
             [[0.9, 0.8, 0.7], [0.85, 0.6, 0.65], [0.8, 0.5, 0.4]],
             [{"experience": 1, "dataset": "probe", "l2": 0.1, "otdd": 0.3, "n": 50, "otdd_method": "exact"},
              {"experience": 2, "dataset": "b", "l2": 0.2, "otdd": 0.5, "n": 50, "otdd_method": "exact"},
              {"experience": 2, "dataset": "a", "l2": 0.2, "otdd": None, "n": 50, "otdd_method": "exact"}])


def test_forgetting_points_by_hand():
    pts = forgetting_points([REC])
    assert len(pts) == 2
    p1, p2 = pts
    assert (p1["run"], p1["strategy"], p1["seed"], p1["experience"], p1["dataset"]) == ("r1", "fda", 3, 1, "probe")
    assert p1["forgetting"] == pytest.approx(0.7 - 0.65) and p1["otdd"] == 0.3 and p1["l2"] == 0.1
    assert p2["forgetting"] == pytest.approx(0.8 - 0.5) and p2["dataset"] == "b"


def test_forgetting_points_inconsistent_record():
    bad = record("r2", "naive", 0, [[0.9, 0.8, 0.7]],
                 [{"experience": 1, "dataset": "a", "l2": 0.1, "otdd": 0.2}])
    with pytest.raises(DataError, match="r2"):
        forgetting_points([bad])


def test_correlation_table_over_records():
    rng = np.random.default_rng(0)
    recs = []
    for r in range(6):
        drop = rng.uniform(0, 0.3, size=3)
        p = [[0.9, 0.8, 0.7], [0.9, 0.8 - drop[0], 0.7 - drop[1]], [0.9, 0.8, 0.7 - drop[2]]]
        recs.append(record(f"r{r}", "naive", r, p, [
            {"experience": 1, "dataset": "b", "otdd": 2 * drop[0], "l2": 0.1},
            {"experience": 1, "dataset": "probe", "otdd": 2 * drop[1], "l2": 0.3 - drop[1]},
            {"experience": 2, "dataset": "probe", "otdd": 2 * drop[2], "l2": 0.3 - drop[2]}]))
    table = correlation_table(recs, n_boot=100)
    assert set(table) == {"otdd", "l2"}
    assert table["otdd"]["n"] == 18 and table["otdd"]["pearson"] == pytest.approx(1.0)
    assert table["l2"]["spearman"] < 0


def test_correlation_markdown_shows_both_distances():
    from proxyfda_cl.analysis.correlation import correlate, correlation_markdown

    x = [0.0, 1.0, 2.0, 3.0, 4.0]
    table = {"otdd": correlate(x, [0.0, 2.0, 4.0, 6.0, 8.0], n_boot=20),
             "l2": correlate(x, [1.0, 0.5, 0.0, -0.5, -1.0], n_boot=20)}
    text = correlation_markdown(table)
    rows = [line for line in text.splitlines() if line.startswith("| OTDD") or line.startswith("| L2")]
    assert rows[0].split("|")[3].strip() == "+1.000" and rows[1].split("|")[3].strip() == "-1.000"
    assert rows[0].split("|")[2].strip() == "5"
    assert "over 5 (run, experience, dataset) points" in text
    assert "kNN" not in text  # no knn_loss entry, no row


def test_knn_loss_is_a_third_distance_over_the_points_that_have_it():
    from proxyfda_cl.analysis.correlation import correlation_markdown, correlation_table

    def rec(i, knn):
        return {"id": f"r{i}", "config": {"strategy": {"name": "naive"}, "seed": i},
                "stream": ["a"], "probes": ["c"],
                "matrices": {"P": [[0.9, 0.8], [0.9, 0.8 - 0.1 * i]], "P_columns": ["a", "c"]},
                "distances": [{"experience": 1, "dataset": "c", "l2": 0.1 * i, "otdd": 0.2 * i,
                               **({} if knn is None else {"knn_overlap": knn})}]}

    recs = [rec(i, None if i == 0 else 1.0 - 0.05 * i) for i in range(5)]
    table = correlation_table(recs, n_boot=50)
    assert table["otdd"]["n"] == 5 and table["knn_loss"]["n"] == 4
    assert table["knn_loss"]["pearson"] == pytest.approx(1.0)
    assert "| 1 − kNN overlap | 4 | +1.000 |" in correlation_markdown(table)


def test_held_out_points_leave_out_datasets_already_trained():
    from proxyfda_cl.analysis.correlation import forgetting_points

    rec = {"id": "r", "config": {"strategy": {"name": "naive"}, "seed": 0},
           "stream": ["a", "b"], "probes": ["c"],
           "matrices": {"P": [[0.5, 0.5, 0.9], [0.9, 0.4, 0.8], [0.7, 0.95, 0.6]],
                        "P_columns": ["a", "b", "c"]},
           "distances": [{"experience": t, "dataset": d, "otdd": 1.0, "l2": 0.5}
                         for t in (1, 2) for d in ("a", "b", "c")]}
    every = forgetting_points([rec])
    held = forgetting_points([rec], held_out=True)
    assert len(every) == 6
    assert {(p["experience"], p["dataset"]) for p in held} == {(1, "b"), (1, "c"), (2, "c")}
    by_key = {(p["experience"], p["dataset"]): p["forgetting"] for p in held}
    assert by_key[(2, "c")] == pytest.approx(0.9 - 0.6)
