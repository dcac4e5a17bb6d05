"""Reports are one offline HTML file: plotly.js embedded once, text escaped, tables rendered."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import polars as pl

from fleetlab.report import Report


def test_report_is_self_contained_and_escapes_text(tmp_path: Path) -> None:
    report = Report("a <title>")
    sec = report.section("Numbers")
    sec.text("x < y & z").metrics({"rows": 1234, "ratio": 0.5})
    sec.table(pl.DataFrame({"name": ["a", "b"], "value": [1.5, float("nan")]}))
    sec.figure(go.Figure(go.Scatter(x=[1, 2], y=[3, 4])))
    report.section("More").figure(go.Figure(go.Bar(x=[1], y=[1])))
    path = report.write(tmp_path / "out" / "r.html")
    html = path.read_text()
    from plotly.offline import get_plotlyjs

    assert html.count(get_plotlyjs()[:2000]) == 1  # plotly.js embedded exactly once
    assert "<script src=" not in html and 'src="http' not in html  # nothing fetched at view time
    assert html.count("Plotly.newPlot") == 2
    assert "x &lt; y &amp; z" in html
    assert "1,234" in html and "n/a" in html
    assert "a &lt;title&gt;" in html
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_table_truncates_long_frames() -> None:
    report = Report("t")
    report.section("s").table(pl.DataFrame({"i": list(range(120))}), max_rows=10)
    html = report.to_html()
    assert "110 more rows" in html
