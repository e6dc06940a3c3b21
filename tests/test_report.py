"""``proxyfda-cl report``: one self-contained page; problems, failures and flags listed."""
import base64
import html
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from proxyfda_cl.analysis.correlation import correlation_table
from proxyfda_cl.analysis.leaderboard import leaderboard, metric_cell
from proxyfda_cl.analysis.paired import paired_comparison
from proxyfda_cl.cli import main
from proxyfda_cl.core.typed_record import read_results
from proxyfda_cl.core.record import record_name, write_json_atomic
from tests.test_plots import make_record


class Page(HTMLParser):
    """Tags with their attributes, and the text of every table cell per table."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list = []
        self.tables: list = []
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def write_folder(folder: Path, *, extras: bool = True) -> None:
    """Three strategies x three seeds of valid records; with ``extras`` also a failed run,
    a truncated file, a partial record, knn_overlap, a collapsed run and a random-init one."""
    rec_dir = folder / "records"
    for strat in ("naive", "fda", "proxy_fda"):
        for seed in range(3):
            r = make_record("demo", strat, seed)
            r["config"]["backbone"] = {"name": "tiny", "weights": None}
            r["versions"] = {"proxyfda_cl": "0.1.0", "torch": "2.14.1"}
            if extras:
                for d in r["distances"]:
                    d["knn_overlap"] = 0.5 + 0.1 * seed
                if strat == "fda" and seed == 1:
                    r["collapsed"] = [2, 3]
                if strat == "fda" and seed == 0:
                    r["timing"]["stages"] = {"teacher": {"s": 12.25, "calls": 40},
                                             "probe_fit": {"s": 3.5, "calls": 9}}
                if strat == "proxy_fda" and seed == 2:
                    r["warnings"] = ["experience 1: the regulariser's gradient was 37x the "
                                     "task loss's over the first 5 steps"]
            write_json_atomic(rec_dir / record_name(r["config"], r["id"]), r)
    if not extras:
        return
    r = make_record("demo", "naive", 7)
    r["config"]["backbone"] = {"name": "tiny", "weights": "random"}
    write_json_atomic(rec_dir / record_name(r["config"], r["id"]), r)
    failed = {"id": "failedrun", "status": "failed", "error": "RuntimeError: out of memory",
              "config": {"seed": 0, "strategy": {"name": "ldifs"}, "benchmark": {"name": "demo"}}}
    write_json_atomic(rec_dir / record_name(failed["config"], failed["id"]), failed)
    (rec_dir / "truncated.json").write_text('{"id": "x", "status": "comp')
    partial = make_record("demo", "lwf", 0)
    del partial["metrics"]["final"]
    write_json_atomic(rec_dir / "demo__lwf__seed0__partial.json", partial)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    write_folder(folder)
    assert main(["report", str(folder)]) == 0
    text = (folder / "report.html").read_text(encoding="utf-8")
    return folder, text, Page(text)


def png_size(uri: str) -> tuple:
    data = base64.b64decode(uri.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_self_contained(report):
    _, text, page = report
    imgs = [a for t, a in page.tags if t == "img"]
    # forward transfer, OTDD/L2, matrices of naive, fda, proxy_fda and of the random-init
    # naive run, which the leaderboard keeps apart ("naive [random init]")
    assert len(imgs) == 6
    for a in imgs:
        assert a["src"].startswith("data:image/png;base64,")
        w, h = png_size(a["src"])
        assert w > 100 and h > 100
    for tag, attrs in page.tags:
        for key in ("src", "href", "srcset", "action", "data", "poster"):
            v = attrs.get(key)
            if v is not None and key != "data":
                assert v.startswith(("data:", "#")), (tag, key, v[:60])
        assert tag not in ("link", "iframe", "object", "embed")
        if tag == "script":
            assert "src" not in attrs
    assert not re.search(r"url\(|@import|https?://", text)


@pytest.mark.slow
def test_problems_failures_and_flags_are_listed(report):
    folder, text, page = report
    assert "truncated.json: unreadable" in text
    assert "demo__lwf__seed0__partial.json: metrics.final missing" in text
    assert "RuntimeError: out of memory" in text  # the failed run's error line
    assert "task accuracy at chance after experience(s) 2, 3" in text
    assert "collapsed (exp 2, 3)" in text
    assert "gradient was 37x the task loss&#x27;s over the first 5 steps" in text or \
        "gradient was 37x the task loss's over the first 5 steps" in text
    assert "random-init" in text
    assert "time per stage (s, all experiences): teacher 12.25, probe_fit 3.50" in text
    runs = next(t for t in page.tables if t[0][:3] == ["Status", "Benchmark", "Strategy"])
    status = {(r[2].split()[0], r[3]): r[0] for r in runs[1:]}
    assert status[("ldifs", "0")] == "failed" and status[("lwf", "0")] == "partial"
    assert status[("naive", "7")] == "complete"
    assert len(runs) - 1 == 3 * 3 + 3  # every record file that could be read


def test_leaderboard_paired_and_correlation_numbers(report):
    folder, text, page = report
    records, _ = read_results(folder)
    good = [r for r in records if r.final is not None]
    rows = leaderboard(good)
    board = next(t for t in page.tables if t[0][:3] == ["Rank", "Strategy", "Seeds"])
    k = board[0].index("kNN overlap (%)")
    for row in rows:
        cells = next(r for r in board[1:] if r[1].startswith(row["strategy"])
                     and ("[random init]" in r[1]) == ("[random init]" in row["strategy"]))
        assert cells[2] == ", ".join(str(s) for s in row["seeds"])
        assert cells[4] == metric_cell(row, "delta_lp")
    fda = next(r for r in board[1:] if r[1].split()[0] == "fda")
    assert fda[k] == "60.00 ± 10.00"  # knn_overlap 0.5, 0.6, 0.7 over seeds

    pairs = next(t for t in page.tables if t[0][:3] == ["Benchmark", "Strategy", "Pairs"])
    want = paired_comparison(good, "naive", "delta_lp", by_benchmark=True)
    got = {r[1]: r for r in pairs[1:]}
    for w in want:
        assert got[w["strategy"]][2] == str(w["n"])
        assert got[w["strategy"]][3] == f"{100 * w['mean']:+.2f}"

    corr = next(t for t in page.tables if t[0][:3] == ["Distance", "Points", "n"])
    tab = correlation_table(good)
    assert corr[1][:3] == ["OTDD", "all datasets", str(tab["otdd"]["n"])]
    assert corr[1][3] == f"{tab['otdd']['pearson']:+.3f}"
    plain = html.unescape(text)
    assert '"weights": "random"' in plain and "torch 2.14.1" in plain  # config and versions


@pytest.mark.slow
def test_absent_optional_fields_and_missing_baseline(tmp_path, capsys):
    write_folder(tmp_path, extras=False)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "a.html")]) == 0
    text = (tmp_path / "a.html").read_text()
    assert "Nothing: every record is readable" in text
    board = next(t for t in Page(text).tables if t[0][:3] == ["Rank", "Strategy", "Seeds"])
    k = board[0].index("kNN overlap (%)")
    assert all(r[k] == "—" for r in board[1:])  # records without knn_overlap
    for path in (tmp_path / "records").glob("*naive*"):
        path.unlink()
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "b.html")]) == 0
    assert "No pairs: no run of the baseline <b>naive</b>" in (tmp_path / "b.html").read_text()
    capsys.readouterr()


@pytest.mark.parametrize("argv, needles", [
    (["/nonexistent/results"], ["/nonexistent/results", "does not exist"]),
    (["{dir}", "--baseline", "nope"], ["--baseline", "'nope'", "naive"]),
    (["{dir}", "--out", "{dir}/records/truncated.json/x.html"], ["--out", "cannot write"]),
])
@pytest.mark.slow
def test_bad_input_is_one_line(argv, needles, tmp_path, capsys):
    write_folder(tmp_path)
    code = main(["report"] + [a.format(dir=tmp_path) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert code == 2 and len(err) == 1, err
    assert all(n in err[0] for n in needles), err[0]


@pytest.mark.slow
def test_sweep_writes_the_report_and_prints_its_path_first(tmp_path, tiny_weights, capsys):
    from proxyfda_cl.run.runner import run
    from proxyfda_cl.run.sweep import expand, load_suite
    from tests.test_sweep import _suite

    path = _suite(tmp_path, tiny_weights, strategies=["naive", "fda"])
    for cfg in expand(load_suite(str(path)), out=str(tmp_path / "res")):
        run(cfg)  # complete already: the sweep below only skips them and reports
    capsys.readouterr()
    assert main(["sweep", str(path), "--results", str(tmp_path / "res"), "--workers", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    first = next(i for i, line in enumerate(out) if line.startswith(("report:", "complete:")))
    assert out[first].split()[-1] == str(tmp_path / "res" / "report.html")
    page = Page((tmp_path / "res" / "report.html").read_text())
    assert len([t for t, _ in page.tags if t == "img"]) == 4  # real records: 1 + 1 + 2
    pairs = next(t for t in page.tables if t[0][:3] == ["Benchmark", "Strategy", "Pairs"])
    assert [r[:3] for r in pairs[1:]] == [["tiny-test", "fda", "1"]]
