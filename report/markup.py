"""The HTML pieces of the report page: tables, notes and embedded figures, all self-contained (no external file)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

PAGE_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } tr.best td { background: #d9efd9; } tr.top td { background: #f0f8f0; }
td.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.error { font-family: monospace; white-space: pre-wrap; max-width: 60em; font-size: 0.95em; }
tr.varying td { font-weight: bold; } div.wide { overflow-x: auto; max-width: 100%; }
p.note { color: #555; font-style: italic; } img { max-width: 100%; display: block; margin: 0.5em 0; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def html_table(
    header: list[str],
    rows: list[list[str]],
    *,
    table_id: str | None = None,
    numeric: Sequence[int] = (),
    error_column: int | None = None,
    highlight_first: bool = False,
    highlight_rows: Sequence[int] = (),
    top_rows: Sequence[int] = (),
    folded_errors: dict[int, str] | None = None,
) -> str:
    """A table; the first row marked best with `highlight_first`, `highlight_rows` in bold, `top_rows` shaded."""
    attributes = f' id="{table_id}"' if table_id else ""
    parts = [
        f"<table{attributes}>",
        "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead>",
    ]
    parts.append("<tbody>")
    for index, row in enumerate(rows):
        if highlight_first and index == 0:
            row_class = ' class="best"'
        elif index in highlight_rows:
            row_class = ' class="varying"'
        else:
            row_class = ' class="top"' if index in top_rows else ""
        cells = []
        for column, value in enumerate(row):
            cell_class = ' class="number"' if column in numeric else ' class="error"' if column == error_column else ""
            folded = (folded_errors or {}).get(index) if column == error_column else None
            details = f"<details><summary>full error</summary>{escape(folded)}</details>" if folded else ""
            cells.append(f"<td{cell_class}>{escape(value)}{details}</td>")
        parts.append(f"<tr{row_class}>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    # Wide tables scroll inside the page instead of widening it.
    return '<div class="wide">\n' + "\n".join(parts) + "\n</div>"


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def section(heading: str, *parts: str) -> str:
    return "\n".join([f"<h2>{escape(heading)}</h2>", *parts])


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def embedded_png(png: bytes, description: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(description)}" src="data:image/png;base64,{encoded}">'


def figure_image(figure: Figure, description: str) -> str:
    """The figure as an embedded PNG."""
    return embedded_png(png_bytes(figure), description)
