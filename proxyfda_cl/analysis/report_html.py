"""HTML pieces of the report (:mod:`proxyfda_cl.analysis.report`): page, sections, badges,
inline CSS and the script that sorts its tables (written by ``tables.html_table``). Nothing is
fetched when the page opens."""
from __future__ import annotations

from typing import Sequence

from .tables import esc

__all__ = ["badge", "section", "page"]


def badge(flag: str) -> str:
    """A small coloured label (``failed``, ``collapsed``, ``random-init``, ``complete``...)."""
    kind = flag.split(" ")[0]
    return f'<span class="badge b-{esc(kind)}">{esc(flag)}</span>'


def section(anchor: str, title: str, body: str) -> str:
    """A titled section with an anchor the contents list links to."""
    return f'<section id="{esc(anchor)}"><h2>{title}</h2>{body}</section>'


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
 background:#fafafa}
header{background:#243b53;color:#fff;padding:14px 28px}
header h1{margin:0 0 4px;font-size:22px} header p{margin:0;font-size:13px;opacity:.9}
header code{color:#fff}
nav{padding:8px 28px;background:#e9eef3;font-size:14px} nav a{margin-right:16px;color:#243b53}
main{padding:8px 28px 40px}
section{margin:22px 0}
h2{font-size:19px;border-bottom:2px solid #ccd;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;font-size:13px;background:#fff;margin:4px 0 8px}
th,td{padding:4px 9px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
td.t,th.t{text-align:left}
table.runs td:last-child{text-align:left;white-space:normal;max-width:420px}
th{background:#eef1f4;border-bottom:2px solid #99a;cursor:pointer;user-select:none}
th:hover{background:#dde4ec}
th[aria-sort=ascending]::after{content:" \\25B2"} th[aria-sort=descending]::after{content:" \\25BC"}
table.small{font-size:12px}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:11px;font-weight:600;
 background:#ddd;color:#333;white-space:nowrap}
.b-failed,.b-partial{background:#c62828;color:#fff} .b-collapsed{background:#ef6c00;color:#fff}
.b-warning{background:#f9a825;color:#000}
.b-random-init{background:#6a1b9a;color:#fff} .b-complete{background:#2e7d32;color:#fff}
ul.attention li{margin:3px 0}
.note{color:#666;font-size:12px}
.error{color:#c62828;font-family:monospace}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:6px}
figure img{max-width:100%;height:auto;display:block}
.wide figure{max-width:1100px;margin-bottom:10px}
figcaption{font-size:11px;color:#666}
details{background:#fff;border:1px solid #ddd;margin:4px 0;padding:4px 8px}
summary{cursor:pointer}
pre{font-size:11px;max-height:320px;overflow:auto;background:#f5f5f5;padding:6px}
"""

SCRIPT = """
(function () {
  function key(cell, num) {
    var v = cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent.trim();
    if (!num) { return v; }
    if (v === "") { return null; }
    var f = parseFloat(v);
    return isNaN(f) ? null : f;
  }
  function sortBy(tbl, th, col) {
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var heads = tbl.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var num = th.getAttribute("data-type") === "num";
    var body = tbl.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col], num), y = key(b.cells[col], num);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var c = num ? x - y : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (tbl) {
    Array.prototype.forEach.call(tbl.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () { sortBy(tbl, th, col); });
    });
  });
})();
"""


def page(title: str, summary: str, sections: Sequence[str]) -> str:
    """The complete document; ``summary`` is HTML, ``sections`` from :func:`section`."""
    links = [("attention", "Attention"), ("leaderboard", "Leaderboard"), ("paired", "Paired"),
             ("figures", "Figures"), ("correlation", "Correlation"), ("runs", "Runs")]
    if any('id="problems"' in s for s in sections):
        links.append(("problems", "Problems"))
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in links)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<header><h1>{esc(title)}</h1><p>{summary}</p></header>\n<nav>{nav}</nav>\n"
            "<main>\n" + "\n".join(s for s in sections if s) + "\n</main>\n"
            f"<script>{SCRIPT}</script>\n</body>\n</html>\n")
