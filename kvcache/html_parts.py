"""The HTML report's building blocks: its plot sizes and colours, a figure inlined as PNG, a table of figures."""

import base64
import html
import io
from typing import List, Optional

from kvcache import export

DPI = 96
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def png_image(figure, alt: str) -> str:
    """The figure as an <img> holding its PNG (the page needs nothing beside it)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table(header: List[str], rows: List[List[object]], differs: Optional[List[bool]] = None) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = []
    for index, row in enumerate(rows):
        marked = ' class="differs"' if differs and differs[index] else ""
        cells = "".join(_cell(cell) for cell in row)
        body.append(f"<tr{marked}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _cell(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{html.escape(export.cell_text(value))}</td>"
    shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
    return f'<td class="number">{shown}</td>'
