"""The one table writer and number formatter of analysis: a header and rows as a Markdown or
an HTML table, and numbers as the tables print them (``—`` where there is none)."""
from __future__ import annotations

import html
from typing import Any, Optional, Sequence

__all__ = ["DASH", "esc", "finite", "number", "interval", "markdown_table", "html_table"]

DASH = "—"

_ALIGN = {"l": ":---", "r": "---:", "-": "---"}


def esc(text: Any) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def finite(v: Optional[float]) -> Optional[float]:
    """``v``, or None when it is None or NaN (a sort value, a number to draw)."""
    return None if v is None or v != v else float(v)


def number(v: Optional[float], digits: int = 2, *, scale: float = 1.0, sign: bool = False
           ) -> str:
    """``v * scale`` with ``digits`` decimals (and a sign with ``sign``); ``—`` for None or NaN.

    ``number(0.0123, scale=100)`` is a percentage (``1.23``), with ``sign=True`` a difference in
    points (``+1.23``).
    """
    if v is None or v != v:
        return DASH
    return f"{v * scale:{'+' if sign else ''}.{digits}f}"


def interval(bounds: Optional[Sequence[Optional[float]]], digits: int = 2, *,
             scale: float = 1.0) -> str:
    """``[low, high]``, each end signed as ``number(sign=True)``; ``—`` when an end is
    missing or NaN."""
    if bounds is None or any(v is None or v != v for v in bounds):
        return DASH
    low, high = (number(v, digits, scale=scale, sign=True) for v in bounds)
    return f"[{low}, {high}]"


def _md(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str) -> str:
    """A Markdown table, cells escaped (``|``, ``\\``, line breaks); no trailing newline.

    Args:
        header: the column labels.
        rows: the cells of each row, as text.
        align: one letter per column: ``l`` left, ``r`` right, ``-`` unspecified.
    """
    lines = ["| " + " | ".join(_md(h) for h in header) + " |",
             "|" + "|".join(_ALIGN[a] for a in align) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cls(name: str) -> str:
    return f' class="{esc(name)}"' if name else ""


def _td(cell: Any, kind: str, text_cls: str) -> str:
    """``str`` (escaped text) | ``(text, sort value)`` | ``(html, sort value, True)``."""
    cls = _cls(text_cls if kind == "text" else "")
    if not isinstance(cell, tuple):
        return f"<td{cls}>{esc(cell)}</td>"
    content = cell[0] if len(cell) > 2 and cell[2] else esc(cell[0])
    value = cell[1]
    attr = "" if value is None else esc(repr(float(value)) if isinstance(value, (int, float))
                                         and not isinstance(value, bool) else value)
    return f'<td{cls} data-v="{attr}">{content}</td>'


def html_table(head: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]], *,
               cls: str = "", sort_attrs: bool = True, text_cls: str = "t",
               row_classes: Optional[Sequence[str]] = None, newlines: bool = False) -> str:
    """An HTML table, text escaped.

    Args:
        head: ``(label, "num" | "text")`` per column: text cells get the class ``text_cls``.
        rows: cells as ``str`` | ``(text, sort value)`` | ``(html, sort value, True)``; the
            sort value becomes the cell's ``data-v``.
        cls: the table's class.
        sort_attrs: header cells carry ``data-type`` (and ``text_cls``) and a title, for the
            report's sorting script.
        row_classes: a class per row (``""`` for none).
        newlines: a line break between the table's parts and between rows.
    """
    ths = "".join(f'<th data-type="{t}"{_cls(text_cls if t == "text" else "")} '
                  f'title="click to sort">{esc(h)}</th>' if sort_attrs else f"<th>{esc(h)}</th>"
                  for h, t in head)
    classes = row_classes or [""] * len(rows)
    trs = [f"<tr{_cls(c)}>" + "".join(_td(cell, kind, text_cls)
                                      for cell, (_, kind) in zip(row, head)) + "</tr>"
           for row, c in zip(rows, classes)]
    nl = "\n" if newlines else ""
    return (f"<table{_cls(cls)}>{nl}<thead><tr>{ths}</tr></thead>{nl}<tbody>{nl}"
            + nl.join(trs) + f"{nl}</tbody>{nl}</table>")
