"""The runs-list rules without a browser: pages read from the store equal the filtered list."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetlab.errors import ConfigError, StoreError
from fleetlab.store import RunStore
from fleetlab.web import create_app
from fleetlab.web._query import (
    RunQuery,
    fetch_page,
    filter_runs,
    flatten,
    fmt_value,
    report_artifact,
)

COMMANDS = ["placement simulate", "placement size", "workload fit", "placementx"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    """13 runs over 4 commands, some failed, with words to search for."""
    store = RunStore(tmp_path_factory.mktemp("query") / "store")
    for i in range(13):
        command = COMMANDS[i % len(COMMANDS)]
        try:
            with store.run(command, config={"i": i, "tag": "odd" if i % 2 else "even"}) as run:
                run.log_metrics({f"metric_{i % 3}": i})
                if i % 5 == 4:
                    raise ValueError(f"broken input {i}")
        except ValueError:
            pass
    return store


@settings(max_examples=60)
@given(
    kind=st.sampled_from(["", "placement", "placement simulate", "workload", "placementx", "x"]),
    status=st.sampled_from(["", "finished", "failed", "running"]),
    text=st.sampled_from(["", "odd", "even metric_1", "broken", "nothing-matches"]),
    sort=st.sampled_from(["newest", "oldest"]),
    per_page=st.integers(1, 6),
)
def test_pages_read_from_the_store_are_the_filtered_list_cut_up(
    store: RunStore, kind: str, status: str, text: str, sort: str, per_page: int
) -> None:
    base = RunQuery(kind=kind, status=status, text=text, sort=sort, per_page=per_page)  # type: ignore[arg-type]
    expected = [r.id for r in filter_runs(store.list(limit=None), base)]
    got: list[str] = []
    page_no = 1
    while True:
        page = fetch_page(store, RunQuery(**{**base.__dict__, "page": page_no}))
        assert page.page == page_no and len(page.runs) <= per_page
        got += [r.id for r in page.runs]
        if not page.has_next:
            assert page.total == len(expected) and page.pages == page_no  # known at the end
            break
        page_no += 1
        assert page_no <= 14
    assert got == expected
    for r in filter_runs(store.list(limit=None), base):
        assert r.command == kind or r.command.startswith(kind + " ") or not kind
        assert r.status == status or not status


def test_kind_means_whole_words_and_text_means_every_word(store: RunStore) -> None:
    def commands(**kw: str) -> set[str]:
        return {r.command for r in filter_runs(store.list(limit=None), RunQuery(**kw))}  # type: ignore[arg-type]

    assert commands(kind="placement") == {"placement simulate", "placement size"}
    assert commands(kind="placementx") == {"placementx"}
    failed = filter_runs(store.list(limit=None), RunQuery(text="BROKEN valueerror"))
    assert sorted(r.config["i"] for r in failed) == [4, 9]
    assert all(r.status == "failed" for r in failed)


def test_a_page_past_the_end_is_the_last_page(store: RunStore) -> None:
    page = fetch_page(store, RunQuery(per_page=5, page=99))
    assert page.page == 3 and page.pages == 3 and page.total == 13 and len(page.runs) == 3


def test_query_fields_are_checked_by_name() -> None:
    for kw, field in [
        ({"status": "done"}, "'status'"),
        ({"sort": "random"}, "'sort'"),
        ({"page": 0}, "'page'"),
        ({"per_page": 201}, "'per_page'"),
    ]:
        with pytest.raises(ConfigError, match=field):
            RunQuery(**kw)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="poll_s"):
        create_app(None, poll_s=0)


def test_flatten_format_and_report_choice(tmp_path: Path) -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {
        "a.b": 1,
        "a.c.d": [1, 2],
        "e": {},
    }
    assert [fmt_value(v) for v in (0.123456, 1234567.8, 3, None, True, "x", [1, 2])] == [
        "0.1235",
        "1,234,568",
        "3",
        "null",
        "true",
        "x",
        "[1, 2]",
    ]
    store = RunStore(tmp_path / "s")
    with store.run("demo", config={}) as run:
        run.write_text("plots/extra.html", "<p>extra</p>")
        run.write_text("zz-report.html", "<p>r</p>")
    assert report_artifact(store.get(run.id)) == "zz-report.html"
    with store.run("demo", config={}) as run2:
        run2.write_text("a.html", "<p>a</p>")
        run2.write_text("sub/report.html", "<p>r</p>")
        run2.write_text("data.json", "{}")
    assert report_artifact(store.get(run2.id)) == "sub/report.html"
    with store.run("demo", config={}) as run3:
        run3.write_text("data.json", "{}")
    assert report_artifact(store.get(run3.id)) is None
    with pytest.raises(StoreError):
        create_app(tmp_path / "s" / "runs.sqlite")  # a file, not a store folder
