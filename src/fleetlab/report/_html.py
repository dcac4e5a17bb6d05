"""Self-contained HTML reports: text, tables and plotly figures, plotly.js embedded once."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2933;background:#f7f8fa}
header{background:#1f3a5f;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.8;font-size:13px}
main{max-width:1180px;margin:0 auto;padding:16px 32px}
section{background:#fff;border:1px solid #e3e7ec;border-radius:8px;padding:16px 20px;margin:16px 0}
h2{font-size:18px;margin:0 0 8px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border-bottom:1px solid #e3e7ec;padding:4px 10px;text-align:right}
th{background:#f0f3f7}td:first-child,th:first-child{text-align:left}
.metrics{display:flex;flex-wrap:wrap;gap:12px}.metric{background:#f0f3f7;border-radius:6px;padding:8px 12px}
.metric b{display:block;font-size:18px}.metric span{font-size:12px;color:#52606d}
nav a{margin-right:12px;color:#1f3a5f;font-size:13px}
"""


@dataclass
class Section:
    """One titled part of a report: an ordered list of HTML blocks."""

    title: str
    blocks: list[str] = field(default_factory=list)

    def text(self, paragraph: str) -> Section:
        """Add a paragraph of plain text (escaped)."""
        self.blocks.append(f"<p>{html.escape(paragraph)}</p>")
        return self

    def heading(self, title: str) -> Section:
        """Add a sub-heading."""
        self.blocks.append(f"<h3>{html.escape(title)}</h3>")
        return self

    def metrics(self, values: dict[str, Any]) -> Section:
        """Add a row of headline numbers."""
        cells = "".join(
            f'<div class="metric"><b>{html.escape(_fmt(v))}</b><span>{html.escape(k)}</span></div>'
            for k, v in values.items()
        )
        self.blocks.append(f'<div class="metrics">{cells}</div>')
        return self

    def table(self, frame: pl.DataFrame | list[dict[str, Any]], *, max_rows: int = 50) -> Section:
        """Add a table (at most ``max_rows`` rows; the count of the rest is noted)."""
        df = frame if isinstance(frame, pl.DataFrame) else pl.DataFrame(frame)
        head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
            for row in df.head(max_rows).iter_rows()
        )
        more = f"<p>… {df.height - max_rows} more rows</p>" if df.height > max_rows else ""
        self.blocks.append(
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{more}"
        )
        return self

    def figure(self, fig: Any) -> Section:
        """Add a plotly figure (rendered with the report's single copy of plotly.js)."""
        self.blocks.append(fig.to_html(full_html=False, include_plotlyjs=False))
        return self

    def raw_html(self, fragment: str) -> Section:
        """Add an HTML fragment you built and escaped yourself."""
        self.blocks.append(fragment)
        return self


@dataclass
class Report:
    """A report under construction; ``to_html`` renders it as one offline file."""

    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        """Start a new section and return it for adding blocks."""
        sec = Section(title)
        self.sections.append(sec)
        return sec

    def extend(self, other: Report) -> Report:
        """Append the sections of another report (used by the tour)."""
        self.sections.extend(other.sections)
        return self

    def to_html(self) -> str:
        """The whole report as a self-contained HTML page (works with no network)."""
        from plotly.offline import get_plotlyjs

        nav = "".join(
            f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(self.sections)
        )
        body = "".join(
            f'<section id="s{i}"><h2>{html.escape(s.title)}</h2>{"".join(s.blocks)}</section>'
            for i, s in enumerate(self.sections)
        )
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style>"
            f"<script>{get_plotlyjs()}</script></head><body>"
            f"<header><h1>{html.escape(self.title)}</h1><p>{html.escape(self.subtitle)}</p></header>"
            f"<main><nav>{nav}</nav>{body}</main></body></html>"
        )

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the report atomically to ``path`` and return it."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp.write_text(self.to_html(), encoding="utf-8")
        os.replace(tmp, target)
        return target


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "n/a"
        if abs(value) >= 1e5 or (abs(value) < 1e-3 and value != 0):
            return f"{value:.3g}"
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
