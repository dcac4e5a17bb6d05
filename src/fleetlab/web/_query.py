"""What the runs list shows: filter by kind, status and text, sort by time, cut into pages.

These are plain functions over :class:`~fleetlab.store.RunRecord` lists so that the
dashboard's pages stay thin and the rules are testable without a browser.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fleetlab.errors import ConfigError
from fleetlab.store import RunRecord, RunStore

SortOrder = Literal["newest", "oldest"]
SORT_ORDERS: tuple[SortOrder, ...] = ("newest", "oldest")
STATUSES = ("running", "finished", "failed")
MAX_PER_PAGE = 200


@dataclass(frozen=True)
class RunQuery:
    """One request of the runs list: filters, sort order and page.

    Attributes
    ----------
    kind
        A command (``"placement simulate"``) or its area (``"placement"``); empty: all.
    status
        ``"running"``, ``"finished"``, ``"failed"`` or empty for all.
    text
        Words that must all appear (case-insensitive) in the run's id, command,
        config, metric names or error.
    sort
        ``"newest"`` or ``"oldest"`` first, by start time.
    page, per_page
        1-based page number and runs per page (1 to :data:`MAX_PER_PAGE`).
    """

    kind: str = ""
    status: str = ""
    text: str = ""
    sort: SortOrder = "newest"
    page: int = 1
    per_page: int = 25

    def __post_init__(self) -> None:
        if self.status and self.status not in STATUSES:
            raise ConfigError(
                f"runs list: field 'status' expected one of {', '.join(STATUSES)} or empty, "
                f"found {self.status!r}"
            )
        if self.sort not in SORT_ORDERS:
            raise ConfigError(
                f"runs list: field 'sort' expected one of {', '.join(SORT_ORDERS)}, "
                f"found {self.sort!r}"
            )
        if self.page < 1:
            raise ConfigError(f"runs list: field 'page' expected >= 1, found {self.page}")
        if not 1 <= self.per_page <= MAX_PER_PAGE:
            raise ConfigError(
                f"runs list: field 'per_page' expected 1 to {MAX_PER_PAGE}, found {self.per_page}"
            )

    def params(self, **changes: Any) -> dict[str, str]:
        """The query as URL parameters (defaults left out), with ``changes`` applied."""
        values = {
            "kind": self.kind,
            "status": self.status,
            "q": self.text,
            "sort": self.sort,
            "page": self.page,
            "per_page": self.per_page,
            **changes,
        }
        defaults = {"sort": "newest", "page": 1, "per_page": 25}
        return {
            k: str(v) for k, v in values.items() if v not in ("", None) and defaults.get(k) != v
        }


@dataclass(frozen=True)
class RunPage:
    """One page of the runs list.

    Attributes
    ----------
    runs
        The runs on this page, in the query's order.
    page
        This page's number.
    has_next
        Whether more runs follow on later pages.
    total, pages
        How many runs match and how many pages they fill; ``None`` when the page was
        read without counting every match (newest first, no text search, more pages
        after this one).
    """

    runs: list[RunRecord]
    page: int
    has_next: bool
    total: int | None
    pages: int | None


def _haystack(record: RunRecord) -> str:
    parts = [
        record.id,
        record.command,
        record.status,
        json.dumps(record.config, default=str),
        " ".join(record.metrics),
        record.error or "",
    ]
    return "\n".join(parts).lower()


def matches_text(record: RunRecord, text: str) -> bool:
    """True when every whitespace-separated word of ``text`` occurs in the run (any case)."""
    words = text.lower().split()
    if not words:
        return True
    hay = _haystack(record)
    return all(w in hay for w in words)


def matches_kind(command: str, kind: str) -> bool:
    """True when ``command`` is ``kind`` or starts with it as whole words (``placement``)."""
    kind = kind.strip()
    return not kind or command == kind or command.startswith(kind + " ")


def filter_runs(records: list[RunRecord], query: RunQuery) -> list[RunRecord]:
    """The runs of ``records`` that match ``query``'s kind, status and text, in its order.

    Parameters
    ----------
    records
        Runs in any order.
    query
        Filters and sort order (its page is ignored).

    Returns
    -------
    list of RunRecord
        Every matching run, sorted by start time (then id) as ``query.sort`` says.
    """
    kept = [
        r
        for r in records
        if matches_kind(r.command, query.kind)
        and (not query.status or r.status == query.status)
        and matches_text(r, query.text)
    ]
    kept.sort(key=lambda r: (r.started_at, r.id), reverse=query.sort == "newest")
    return kept


def select_runs(records: list[RunRecord], query: RunQuery) -> RunPage:
    """Filter ``records`` by ``query``, sort them by start time and return the asked page.

    Parameters
    ----------
    records
        Runs in any order (as :meth:`RunStore.list` returns them, newest first).
    query
        Filters, order and page; a page past the end gives the last page.

    Returns
    -------
    RunPage
        The page's runs and the totals for the pager.
    """
    kept = filter_runs(records, query)
    pages = max(1, math.ceil(len(kept) / query.per_page))
    page = min(query.page, pages)
    start = (page - 1) * query.per_page
    return RunPage(
        runs=kept[start : start + query.per_page],
        page=page,
        has_next=page < pages,
        total=len(kept),
        pages=pages,
    )


def fetch_page(store: RunStore, query: RunQuery) -> RunPage:
    """Read the page ``query`` asks for from ``store``, reading as few runs as it can.

    Kind and status are filtered by the store's SQL. Newest first without a text
    search, only the runs up to the end of the page (plus one, to know whether a next
    page exists) are read, so the cost does not grow with the store; a text search or
    the oldest-first order reads every run of that kind and status.

    Parameters
    ----------
    store
        The run store.
    query
        Filters, order and page; a page past the end gives the last page.

    Returns
    -------
    RunPage
        The page's runs; ``total`` and ``pages`` when every match was read.
    """
    kind = query.kind or None
    status: Any = query.status or None
    if not query.text and query.sort == "newest":
        start = (query.page - 1) * query.per_page
        got = store.list(limit=start + query.per_page + 1, command=kind, status=status)
        if start < len(got) or query.page == 1:
            has_next = len(got) > start + query.per_page
            return RunPage(
                runs=got[start : start + query.per_page],
                page=query.page,
                has_next=has_next,
                total=None if has_next else len(got),
                pages=None if has_next else query.page,
            )
    return select_runs(store.list(limit=None, command=kind, status=status), query)


def kinds(records: list[RunRecord]) -> list[str]:
    """The distinct commands and their areas (first word) among ``records``, sorted."""
    found: set[str] = set()
    for r in records:
        found.add(r.command)
        found.add(r.command.split(" ", 1)[0])
    return sorted(found)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level with dotted keys; lists and other values kept as they are."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, prefix=name + "."))
        else:
            flat[name] = value
    return flat


def artifact_file(record: RunRecord, name: str) -> Path | None:
    """The file of artifact ``name`` of ``record``, or ``None`` if it may not be served.

    Only a registered artifact whose real path (symlinks resolved) is a regular file
    inside the run's own artifact folder is served: a name with ``..``, an absolute
    name, a link pointing out of the folder or a row naming a file elsewhere all give
    ``None``.
    """
    path = record.artifacts.get(name)
    if path is None:
        return None
    root = record.dir.resolve()
    real = Path(path).resolve()
    if real == root or not real.is_relative_to(root) or not real.is_file():
        return None
    return real


def report_artifact(record: RunRecord) -> str | None:
    """The artifact to embed as the run's report: an HTML file, ``report.html`` first."""
    html = [n for n in record.artifacts if n.lower().endswith((".html", ".htm"))]
    if not html:
        return None
    html.sort(key=lambda n: (Path(n).name.lower() != "report.html", "report" not in n.lower(), n))
    return html[0]


def fmt_value(value: Any) -> str:
    """A metric or parameter as table text: floats to 4 significant digits, rest as JSON."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)
