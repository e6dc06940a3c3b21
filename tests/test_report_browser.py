"""The report in a real headless browser: no console errors, every image loads, a click on
a column header re-sorts the table.

Skips when no Chromium is installed, unless ``PROXYFDA_CL_REQUIRE_BROWSER=1`` (``.ci/run``
sets it after installing Debian's ``chromium``), where a missing browser is a failure.
"""
import json
import os

import pytest

from proxyfda_cl.cli import main
from tests.headless import Browser, find_chromium
from tests.test_report import write_folder

REQUIRED = os.environ.get("PROXYFDA_CL_REQUIRE_BROWSER") == "1"


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    try:
        import websocket  # noqa: F401  (websocket-client, in the test extra)
    except ImportError:
        binary = None
    if binary is None:
        if REQUIRED:
            pytest.fail("PROXYFDA_CL_REQUIRE_BROWSER=1 but no chromium or websocket-client")
        pytest.skip("no chromium (apt-get install chromium) or websocket-client installed")
    with Browser(binary, width=1400, height=1000) as b:
        yield b


def _column(b, table: str, col: int) -> list:
    return b.js(f"""Array.from(document.querySelectorAll({json.dumps(table)} + " tbody tr"))
        .map(r => r.cells[{col}].getAttribute("data-v") ?? r.cells[{col}].textContent.trim())""")


@pytest.mark.slow
def test_report_renders_loads_images_and_sorts(browser, tmp_path):
    write_folder(tmp_path)
    assert main(["report", str(tmp_path)]) == 0
    b = browser
    b.open(tmp_path / "report.html")
    assert b.errors() == []

    images = b.js("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
    assert len(images) == 6  # as in test_report: the random-init run has its own matrices
    assert all(done and width > 0 for done, width, _ in images), images

    board = "table.leaderboard"
    heads = b.js(f"Array.from(document.querySelectorAll('{board} th')).map(h => h.textContent)")
    col = heads.index("Δ_LP (%)")
    before = [float(v) for v in _column(b, board, col)]
    assert before == sorted(before, reverse=True)  # ranked by Δ_LP
    b.click(f"{board} th:nth-child({col + 1})")
    after = [float(v) for v in _column(b, board, col)]
    assert after == sorted(before) and after != before
    assert b.js(f"document.querySelector('{board} th:nth-child({col + 1})')"
                ".getAttribute('aria-sort')") == "ascending"
    b.click(f"{board} th:nth-child({col + 1})")
    assert [float(v) for v in _column(b, board, col)] == before

    runs = "table.runs"
    b.click(f"{runs} th:nth-child(4)")  # Seed, numeric
    seeds = [float(v) for v in _column(b, runs, 3)]
    assert seeds == sorted(seeds) and seeds[-1] == 7
    b.click(f"{runs} th:nth-child(3)")  # Strategy, text
    names = _column(b, runs, 2)
    assert names == sorted(names) and names[0] == "fda"
    b.screenshot(tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert b.errors() == []
