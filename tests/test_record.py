"""The typed run record: parsed once by ``read_results``, tolerant of malformed fields; and the
one table writer and number formatter of analysis."""
import json
from pathlib import Path

import pytest

from proxyfda_cl.analysis.records import as_record, describe, group_records, record_key
from proxyfda_cl.analysis.tables import html_table, interval, markdown_table, number
from proxyfda_cl.core.record import record_name, write_json_atomic
from proxyfda_cl.core.typed_record import (Distance, ExperienceTiming, Metrics, Record,
                                           parse_record, read_results)

from .test_leaderboard import make_record

OLD = Path(__file__).parent / "data" / "records-0.1.0"


def test_read_results_gives_typed_records_with_their_path(tmp_path):
    final = {"a_lp": 0.1, "delta_lp": 0.2, "fwt": None, "bwt": -0.03, "forgetting": 0}
    rec = make_record("demo", "fda", 3, final=final)
    rec["distances"] = [{"experience": 1, "dataset": "t0", "l2": 0.5, "otdd": 1, "n": 50,
                         "otdd_method": "exact", "knn_overlap": 0.25, "bn_l2": 0.1}]
    rec["collapsed"], rec["warnings"] = [2], ["experience 2: something"]
    rec["config"]["backbone"] = {"name": "tiny", "weights": "random"}
    rec["timing"]["stages"] = {"teacher": {"s": 1.5, "calls": 3}, "probe_fit": {"s": 2},
                               "broken": {"s": "x", "calls": 1}, "odd": 7}
    path = tmp_path / record_name(rec["config"], rec["id"])
    write_json_atomic(path, rec)
    (r,), problems = read_results(tmp_path)
    assert problems == [] and isinstance(r, Record) and r.path == str(path)
    assert r.timing.stages == (("teacher", 1.5), ("probe_fit", 2.0))
    assert (r.id, r.status, r.benchmark, r.strategy, r.backbone, r.seed) == (
        "demo-fda-3", "complete", "demo", "fda", "tiny", 3)
    assert r.random_init and r.label == "fda [random init]"
    assert r.hyperparameters.strategy == "fda" and r.hyperparameters.non_default == ()
    assert r.final == Metrics(a_lp=0.1, delta_lp=0.2, fwt=None, bwt=-0.03, forgetting=0.0)
    assert len(r.per_experience) == 2 and r.per_experience[0] == r.final
    assert r.distances == [Distance(1, "t0", 0.5, 1.0, 0.25, 50, "exact")]
    assert isinstance(r.distances[0].otdd, float) and r.raw["distances"][0]["bn_l2"] == 0.1
    assert r.R == [[0.5, 0.5], [0.5, 0.5]] and r.P_columns == ["t0", "t1", "p"]
    assert r.stream == ["t0", "t1"] and r.collapsed == [2] and r.warnings == rec["warnings"]
    assert r.timing.per_experience[0] == ExperienceTiming(1.0, 0.1, 0.01, None)
    assert r.timing.train_s == 3.0 and r.timing.total_s == 4.0 and r.issues == {}


def test_records_of_0_1_0_get_the_legacy_defaults_and_revision():
    records, problems = read_results(OLD)
    assert problems == []
    by_name = {r.strategy: r for r in records}
    assert by_name["fda"].label == "fda(tau=0.02)"
    assert by_name["proxy_fda"].label == "proxy_fda(tau=0.02) [rev 1]"
    assert by_name["proxy_fda"].hyperparameters.revision == 1
    assert by_name["proxy_fda"].collapsed and by_name["fda"].versions is not None
    raw = json.loads(next(OLD.glob("*__fda__*.json")).read_text())
    assert by_name["fda"].raw == raw


@pytest.mark.parametrize("damage, part, message", [
    (lambda r: r.pop("config"), "label", "config missing or not a mapping"),
    (lambda r: r["config"].pop("benchmark"), "label", "config.benchmark.name missing"),
    (lambda r: r["config"].update(strategy={"k": 3}), "label", "config.strategy.name missing"),
    (lambda r: r["metrics"].pop("final"), "final", "metrics.final missing or not a mapping"),
    (lambda r: r["metrics"]["final"].pop("bwt"), "final", "metrics.final.bwt missing"),
    (lambda r: r["metrics"]["final"].update(fwt="high"), "final",
     "metrics.final.fwt is not a finite number ('high')"),
    (lambda r: r["matrices"].update(P={"a": 1}), "matrices", "matrices.R or matrices.P missing"),
    (lambda r: r.update(distances={"a": 1}), "distances", "distances is not a list"),
    (lambda r: r.update(distances=[1]), "distances", "a distance entry is not a mapping"),
])
def test_a_malformed_field_is_none_and_an_issue(damage, part, message):
    raw = make_record()
    damage(raw)
    rec = parse_record(raw)
    assert list(rec.issues) == [part] and rec.issues[part].startswith(message)
    if part == "label":
        assert rec.label is None
        with pytest.raises(ValueError, match=message.split()[0]):
            record_key(rec)
    if part == "final":
        assert rec.final is None or rec.final.bwt is None or rec.final.fwt is None


def test_malformed_values_inside_fields_become_none():
    raw = make_record()
    raw.update(collapsed="yes", warnings=None, versions=[1], timing={"per_experience": [3]})
    raw["matrices"]["R"] = [[0.5, "x"], [True, None]]
    raw["metrics"]["per_experience"] = [None, {"a_lp": float("inf")}]
    raw["distances"] = [{"experience": "one", "dataset": 7, "l2": "far", "n": 1.5}]
    rec = parse_record(raw)
    assert rec.collapsed == [] and rec.warnings == [] and rec.versions is None
    assert rec.timing.per_experience == (ExperienceTiming(),) and rec.timing.train_s is None
    assert rec.R == [[0.5, None], [None, None]]
    assert rec.per_experience == [Metrics(), Metrics()]
    assert rec.distances == [Distance()] and rec.issues == {}


def test_analysis_takes_record_dicts_and_names_what_it_skips():
    good = make_record()
    bad = dict(make_record(seed=1), status="failed", _path="bad.json")
    assert as_record(good).label == "naive" and as_record(as_record(good)).id == good["id"]
    with pytest.raises(ValueError, match="not a mapping"):
        as_record(["a"])
    problems = []
    groups = group_records([good, bad, None], problems)
    assert [r.seed for r in groups["demo"]["naive"]] == [0]
    assert problems == ["record bad.json: status is 'failed', not 'complete'; skipped",
                        "record <NoneType>: not a mapping; skipped"]
    assert describe(parse_record(good)) == good["id"]


def test_number_and_interval():
    assert number(0.012345, scale=100) == "1.23" and number(0.012345, scale=100, sign=True) == "+1.23"
    assert number(-0.5, 3, sign=True) == "-0.500" and number(12.34, 1) == "12.3"
    assert number(None) == number(float("nan")) == "—"
    assert interval((-0.01, 0.02), scale=100) == "[-1.00, +2.00]"
    assert interval((0.1, 0.2), 3) == "[+0.100, +0.200]"
    assert interval((float("nan"), 0.1)) == interval(None) == "—"


def test_markdown_table_aligns_and_escapes():
    text = markdown_table(["a", "b|c"], [["x|y", "1"], ["p\\q\nr", "2"]], "lr")
    assert text.splitlines() == ["| a | b\\|c |", "|:---|---:|", "| x\\|y | 1 |",
                                 "| p\\\\q r | 2 |"]
    assert markdown_table(["a"], [], "-") == "| a |\n|---|"


def test_html_table_both_styles():
    head = [("Name", "text"), ("Value", "num")]
    report = html_table(head, [["<b>", (("1.0", 1.0))], [("<i>x</i>", "x", True), ("—", None)]],
                        cls="sortable")
    assert report == (
        '<table class="sortable"><thead><tr><th data-type="text" class="t" title="click to sort">'
        'Name</th><th data-type="num" title="click to sort">Value</th></tr></thead><tbody>'
        '<tr><td class="t">&lt;b&gt;</td><td data-v="1.0">1.0</td></tr>'
        '<tr><td class="t" data-v="x"><i>x</i></td><td data-v="">—</td></tr></tbody></table>')
    page = html_table(head, [["a", "1"], ["b", "2"]], sort_attrs=False, text_cls="name",
                      row_classes=["best", ""], newlines=True)
    assert page == ('<table>\n<thead><tr><th>Name</th><th>Value</th></tr></thead>\n<tbody>\n'
                    '<tr class="best"><td class="name">a</td><td>1</td></tr>\n'
                    '<tr><td class="name">b</td><td>2</td></tr>\n</tbody>\n</table>')
