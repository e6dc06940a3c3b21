"""Leaderboard: aggregation over seeds, ranking, skipping malformed records, renderers."""
import csv
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest

from proxyfda_cl.analysis.leaderboard import (leaderboard, to_csv, to_html, to_markdown,
                                              write_leaderboard)
from proxyfda_cl.core.errors import ConfigError
from proxyfda_cl.core.typed_record import read_results
from proxyfda_cl.core.record import record_name, write_json_atomic

METRICS = ("a_lp", "delta_lp", "fwt", "bwt", "forgetting")


def current_hyperparameters(strat: str, params: dict):
    """What a record written today carries for a registered strategy (None otherwise)."""
    from proxyfda_cl.strategies import hyperparameters

    try:
        return hyperparameters(strat, params)
    except ConfigError:
        return None


def make_record(bench="demo", strat="naive", seed=0, final=None, train_s=(1.0, 2.0), T=2):
    """A valid complete run record with the given final metrics (defaults derived from seed)."""
    final = dict(final or {})
    for i, m in enumerate(METRICS):
        final.setdefault(m, 0.1 * (i + 1) + 0.01 * seed)
    stream = [f"t{i}" for i in range(T)]
    cfg = {"seed": seed, "strategy": {"name": strat}, "benchmark": {"name": bench}}
    return {
        "id": f"{bench}-{strat}-{seed}", "status": "complete", "config": cfg,
        **({"hyperparameters": hp} if (hp := current_hyperparameters(strat, {})) else {}),
        "stream": stream, "probes": ["p"],
        "matrices": {"R": [[0.5] * T for _ in range(T)], "R_columns": stream,
                     "P": [[0.5] * (T + 1) for _ in range(T + 1)], "P_columns": stream + ["p"]},
        "metrics": {"final": final, "per_experience": [dict(final) for _ in range(T)]},
        "distances": [],
        "timing": {"per_experience": [{"train_s": s, "eval_s": 0.1, "step_median_s": 0.01}
                                      for s in train_s], "total_s": sum(train_s) + 1},
    }


def write_all(folder, records):
    for r in records:
        write_json_atomic(folder / record_name(r["config"], r["id"]), r)


DELTAS = {"naive": [0.01, 0.02, 0.03], "fda": [0.05, 0.04, 0.09]}


@pytest.fixture
def folder(tmp_path):
    recs = [make_record("demo", s, seed, {"delta_lp": d, "fwt": None if (s, seed) == ("fda", 2)
                                          else 0.1 * seed},
                        train_s=(1.0 + seed, 2.0))
            for s, ds in DELTAS.items() for seed, d in enumerate(ds)]
    recs.append(make_record("other", "naive", 0, {"delta_lp": -0.02}))
    write_all(tmp_path, recs)
    (tmp_path / "demo__lwf__seed0__broken.json").write_text('{"id": "x", "status": "compl')
    partial = make_record("demo", "ewc", 0)
    del partial["metrics"]
    write_json_atomic(tmp_path / "demo__ewc__seed0__partial.json", partial)
    return tmp_path


def test_mean_std_rank_from_folder(folder):
    records, problems = read_results(folder)
    assert len(problems) == 2 and any("broken" in p for p in problems)
    assert any("partial" in p and "metrics" in p for p in problems)
    lb_problems = []
    rows = leaderboard(records, lb_problems)
    assert lb_problems == []
    assert [(r["benchmark"], r["strategy"], r["rank"]) for r in rows] == [
        ("demo", "fda", 1), ("demo", "naive", 2), ("other", "naive", 1)]
    for r in rows[:2]:
        d = DELTAS[r["strategy"]]
        assert r["n_seeds"] == 3 and sorted(r["seeds"]) == [0, 1, 2]
        assert r["delta_lp_mean"] == pytest.approx(np.mean(d), abs=1e-15)
        assert r["delta_lp_std"] == pytest.approx(np.std(d, ddof=1), abs=1e-15)
        assert r["train_s_mean"] == pytest.approx(np.mean([3.0, 4.0, 5.0]))
        assert r["train_s_std"] == pytest.approx(1.0)
    fda = rows[0]
    assert fda["fwt_n"] == 2 and fda["fwt_mean"] == pytest.approx(0.05)  # null seed skipped
    assert fda["fwt_std"] == pytest.approx(np.std([0.0, 0.1], ddof=1))
    assert rows[1]["a_lp_mean"] == pytest.approx(0.11)  # 0.1 + 0.01 * mean seed
    single = rows[2]
    assert single["n_seeds"] == 1 and single["delta_lp_std"] is None
    assert single["delta_lp_mean"] == -0.02


def test_malformed_records_reported_and_skipped():
    good = make_record("demo", "naive", 0)
    bad = {"no-final": make_record(seed=1), "final-list": make_record(seed=2),
           "string": make_record(seed=3, final={"bwt": "high"}),
           "nan": make_record(seed=4, final={"fwt": float("nan")}),
           "bool": make_record(seed=5, final={"a_lp": True}),
           "missing-key": make_record(seed=6), "no-strategy": make_record(seed=7),
           "failed": make_record(seed=8)}
    del bad["no-final"]["metrics"]["final"]
    bad["final-list"]["metrics"]["final"] = [0.1, 0.2]
    del bad["missing-key"]["metrics"]["final"]["forgetting"]
    del bad["no-strategy"]["config"]["strategy"]
    bad["failed"]["status"] = "failed"
    for k, r in bad.items():
        r["_path"] = k
    problems = []
    rows = leaderboard([good, *bad.values(), "not a record", None], problems)
    assert len(rows) == 1 and rows[0]["n_seeds"] == 1 and rows[0]["seeds"] == [0]
    assert len(problems) == len(bad) + 2
    for k in bad:
        assert sum(p.startswith(f"record {k}:") for p in problems) == 1
    assert all("\n" not in p and p.endswith("skipped") for p in problems)
    assert any("metrics.final.bwt" in p for p in problems)
    assert leaderboard([None, {}]) == []  # no problems list: still no crash


def test_ties_share_rank_and_missing_delta_unranked():
    recs = [make_record(strat="a", final={"delta_lp": 0.02}),
            make_record(strat="b", final={"delta_lp": 0.02}),
            make_record(strat="c", final={"delta_lp": 0.01}),
            make_record(strat="d", final={"delta_lp": None})]
    rows = leaderboard(recs)
    assert [(r["strategy"], r["rank"]) for r in rows] == [("a", 1), ("b", 1), ("c", 3),
                                                          ("d", None)]
    assert rows[-1]["delta_lp_mean"] is None and rows[-1]["delta_lp_n"] == 0


def test_markdown_percentages():
    recs = [make_record(strat="fda", seed=s, final={"delta_lp": d, "fwt": None})
            for s, d in enumerate([0.01, 0.02, 0.03])]
    recs.append(make_record(strat="one", seed=0, final={"delta_lp": 0.001234}, train_s=(0.5,)))
    md = to_markdown(leaderboard(recs))
    lines = md.strip().split("\n")
    assert len(lines) == 4 and "Δ_LP (%)" in lines[0]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:4] == ["1", "demo", "fda", "3"]
    assert cells[5] == "2.00 ± 1.00"   # mean 0.02, sample std 0.01
    assert cells[6] == "—"             # fwt null in every seed
    assert cells[9] == "—"             # no distances in these records
    assert cells[12] == "3.0 ± 0.0"    # train time in seconds
    one = [c.strip() for c in lines[3].strip("|").split("|")]
    assert one[5] == "0.12" and "±" not in one[5]


def test_markdown_escapes_pipes():
    md = to_markdown(leaderboard([make_record(strat="a|b")]))
    assert "a\\|b" in md
    assert all(len(re.split(r"(?<!\\)\|", ln)) == 15 for ln in md.strip().split("\n"))


def test_csv_round_trip(folder):
    records, _ = read_results(folder)
    rows = leaderboard(records)
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert len(parsed) == len(rows)
    for p, r in zip(parsed, rows):
        assert (p["benchmark"], p["strategy"], int(p["rank"]), int(p["n_seeds"])) == (
            r["benchmark"], r["strategy"], r["rank"], r["n_seeds"])
        assert [int(s) for s in p["seeds"].split(";")] == r["seeds"]
        for m in METRICS + ("train_s",):
            for stat in ("mean", "std"):
                v = r[f"{m}_{stat}"]
                assert (p[f"{m}_{stat}"] == "") if v is None else float(p[f"{m}_{stat}"]) == v
    assert float(parsed[0]["delta_lp_mean"]) == pytest.approx(np.mean(DELTAS["fda"]))
    assert parsed[2]["delta_lp_std"] == ""  # single seed


def test_html_self_contained_and_escaped():
    name = 'x<b onload="evil()">&y'
    recs = [make_record(bench="b&<i>", strat=name), make_record(bench="b&<i>", strat="ok")]
    page = to_html(leaderboard(recs), title="T <script>")
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "<b onload" not in page and "<script>" not in page and "<i>" not in page
    assert "x&lt;b onload=&quot;evil()&quot;&gt;&amp;y" in page
    assert "b&amp;&lt;i&gt;" in page and "T &lt;script&gt;" in page
    low = page.lower()
    for bad in ("http:", "https:", "//", "<link", "<script", "src=", "@import", "url("):
        assert bad not in low
    assert low.count("<tr") == 3


def test_write_leaderboard_formats(tmp_path):
    recs = [make_record(strat=s, seed=k) for s in ("a", "b") for k in range(2)]
    rows = leaderboard(recs)
    for suffix, render in ((".md", to_markdown), (".csv", to_csv),
                           (".html", lambda r: to_html(r, title="proxyfda-cl leaderboard"))):
        out = write_leaderboard(recs, tmp_path / "sub" / f"lb{suffix}")
        assert out.endswith(suffix)
        assert Path(out).read_text(encoding="utf-8") == render(rows)
    out = write_leaderboard(recs, tmp_path / "table.txt", fmt="csv")
    assert Path(out).read_text() == to_csv(rows)
    with pytest.raises(ConfigError, match="suffix"):
        write_leaderboard(recs, tmp_path / "table.txt")
    with pytest.raises(ConfigError, match="md, csv, html"):
        write_leaderboard(recs, tmp_path / "t.md", fmt="xlsx")
    problems = []
    write_leaderboard(recs + [{"id": "z", "status": "complete"}], tmp_path / "t.md",
                      problems=problems)
    assert len(problems) == 1 and "z" in problems[0]


def test_empty_and_missing_timing():
    rec = make_record()
    rec["timing"] = None
    rows = leaderboard([rec])
    assert rows[0]["train_s_mean"] is None and "—" in to_markdown(rows)
    assert to_markdown([]).count("\n") == 2
    assert list(csv.reader(io.StringIO(to_csv([]))))[0][0] == "benchmark"
    assert math.isclose(rows[0]["a_lp_mean"], 0.1)


def test_runs_with_other_hyper_parameters_get_their_own_row():
    from proxyfda_cl.analysis.records import record_key

    rec = make_record(strat="fda")
    rec["hyperparameters"] = {"strategy": "fda", "values": {"k": 16, "tau": 0.3, "lam": 3.0},
                              "non_default": ["k", "tau"]}
    assert record_key(rec) == ("demo", "fda(k=16, tau=0.3)")
    rec["hyperparameters"]["non_default"] = []
    assert record_key(rec) == ("demo", "fda(tau=0.3)")  # τ's default changed: judged today
    rec["hyperparameters"]["values"]["tau"] = 0.05
    assert record_key(rec) == ("demo", "fda")


def test_the_label_comes_from_the_record_not_from_todays_defaults():
    rec = make_record(strat="fda")  # k was not at its default when the run was recorded
    rec["hyperparameters"] = {"strategy": "fda", "values": {"k": 8}, "non_default": ["k"]}
    assert leaderboard([rec])[0]["strategy"] == "fda(k=8)"


OLD = Path(__file__).parent / "data" / "records-0.1.0"  # written before ``hyperparameters``


def test_records_written_before_hyperparameters_still_load(capsys):
    from proxyfda_cl import cli
    from proxyfda_cl.analysis.records import record_key
    from proxyfda_cl.strategies import hyperparameters

    records, problems = read_results(OLD)
    assert problems == [] and len(records) == 2
    assert not any("hyperparameters" in r.raw for r in records)
    assert [r.hyperparameters.revision for r in records] == [1, 1]
    old = [r.raw for r in records]
    rows = leaderboard(old)
    # Proxy-FDA's loss changed in 0.2.0 (revision 2): its older runs are labelled apart; and
    # both ran at τ = 0.02, no longer the default (0.4.0)
    assert sorted(r["strategy"] for r in rows) == ["fda(tau=0.02)", "proxy_fda(tau=0.02) [rev 1]"]
    assert all(r["delta_lp_mean"] is not None for r in rows)
    changed = {**old[0], "config": {**old[0]["config"],
                                    "strategy": {**old[0]["config"]["strategy"], "k": 16}}}
    assert record_key(changed) == ("demo", "fda(k=16, tau=0.02)")
    # an old record and a new one of the same settings share a row
    new = {**old[0], "config": {**old[0]["config"], "seed": 1}, "id": "new"}
    strategy = dict(new["config"]["strategy"])
    new["hyperparameters"] = hyperparameters(strategy.pop("name"), strategy)
    row = next(r for r in leaderboard(old + [new]) if r["strategy"] == "fda(tau=0.02)")
    assert row["n_seeds"] == 2 and row["seeds"] == [0, 1]
    # a run at today's τ is not merged with them
    today = {**new, "id": "today", "config": {**new["config"], "seed": 2,
                                               "strategy": {**old[0]["config"]["strategy"], "tau": 0.05}}}
    strategy = dict(today["config"]["strategy"])
    today["hyperparameters"] = hyperparameters(strategy.pop("name"), strategy)
    labels = {r["strategy"]: r["seeds"] for r in leaderboard(old + [new, today])}
    assert labels["fda"] == [2] and labels["fda(tau=0.02)"] == [0, 1]
    assert cli.main(["leaderboard", str(OLD)]) == 0
    assert "| proxy_fda(tau=0.02) [rev 1] (collapsed: 1 of 1 seeds) |" in capsys.readouterr().out


def test_a_changed_strategy_gets_new_run_ids_and_the_others_keep_theirs():
    """A sweep must not take a Proxy-FDA run of 0.1.0 for one of today's (its loss changed),
    and must keep finding every other strategy's earlier runs at the settings they ran with
    (FDA's gradient bound is off by default, so its runs keep their ids). These runs updated
    their BatchNorm statistics, which are now recomputed at the end of each experience unless
    ``train.batchnorm_recompute`` is off: a run of today's settings is a new run."""
    from proxyfda_cl.config import from_dict

    old, _ = read_results(OLD)
    by_name = {r.strategy: r.raw for r in old}
    assert from_dict(by_name["fda"]["config"]).id != by_name["fda"]["id"]
    as_then = {name: {**by_name[name]["config"],
                      "train": {**by_name[name]["config"]["train"], "batchnorm_recompute": False}}
               for name in ("fda", "proxy_fda")}
    assert from_dict(as_then["fda"]).id == by_name["fda"]["id"]
    assert from_dict(as_then["proxy_fda"]).id != by_name["proxy_fda"]["id"]


def test_distances_of_the_last_experience_collapsed_runs_and_random_init_are_shown():
    recs = []
    for seed, knn in enumerate([0.8, 0.6]):
        r = make_record(strat="fda", seed=seed)
        r["distances"] = [  # experience 1 is ignored; experience 2 is averaged over datasets
            {"experience": 1, "dataset": "t0", "l2": 9.0, "otdd": 9.0, "knn_overlap": 0.0},
            {"experience": 2, "dataset": "t0", "l2": 0.2, "otdd": 0.4, "knn_overlap": knn},
            {"experience": 2, "dataset": "p", "l2": 0.4, "otdd": 0.6, "knn_overlap": knn}]
        r["collapsed"] = [2] if seed == 1 else []
        r["warnings"] = ["experience 1: the regulariser's gradient was 37x the task loss's"] \
            if seed == 0 else []
        recs.append(r)
    rnd = make_record(strat="naive")
    rnd["config"]["backbone"] = {"name": "timm:vit_small_patch16_224", "weights": "random"}
    rows = {r["strategy"]: r for r in leaderboard(recs + [rnd])}
    row = rows["fda"]
    assert row["l2_mean"] == pytest.approx(0.3) and row["otdd_mean"] == pytest.approx(0.5)
    assert row["knn_overlap_mean"] == pytest.approx(0.7) and row["n_collapsed"] == 1
    assert row["n_warned"] == 1
    assert "naive [random init]" in rows
    md = to_markdown(list(rows.values()))
    assert "fda (collapsed: 1 of 2 seeds) (warnings: 1 of 2 seeds)" in md and "70.00 ± 14.14" in md and "0.300" in md


def test_changed_defaults_are_todays_defaults():
    from proxyfda_cl.core.revisions import CHANGED_DEFAULTS
    from proxyfda_cl.strategies import strategy_defaults

    for name, changed in CHANGED_DEFAULTS.items():
        defaults = strategy_defaults(name)
        assert {k: defaults[k] for k in changed} == changed, name
