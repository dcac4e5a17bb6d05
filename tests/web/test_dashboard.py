"""The dashboard lists runs from the store, shows one, serves its artifacts, and 404s cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from web_helpers import Filled

from fleetlab.store import RunStore
from fleetlab.web import create_app


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    store = RunStore(tmp_path / "store")
    with store.run("traces inspect", config={"path": "x.csv"}, inputs=[]) as run:
        run.log_metrics({"rows": 42})
        run.write_text("report.html", "<html><body>hello report</body></html>")
    with pytest.raises(RuntimeError), store.run("tour", config={}, inputs=[]):
        raise RuntimeError("boom")
    return store


def test_runs_page_lists_every_run_with_status(store: RunStore) -> None:
    client = TestClient(create_app(store.path))
    page = client.get("/")
    assert page.status_code == 200
    assert "traces inspect" in page.text and "tour" in page.text
    assert page.text.count('class="finished"') == 1 and page.text.count('class="failed"') == 1
    failed = client.get("/", params={"status": "failed"}).text
    assert "traces inspect" not in failed.split("<tbody>")[1]


def test_run_page_and_artifact(store: RunStore) -> None:
    client = TestClient(create_app(store.path))
    runs = client.get("/api/runs").json()
    inspect_run = next(r for r in runs if r["command"] == "traces inspect")
    assert inspect_run["metrics"] == {"rows": 42}
    page = client.get(f"/runs/{inspect_run['id']}")
    assert page.status_code == 200 and "rows" in page.text and "report.html" in page.text
    art = client.get(f"/runs/{inspect_run['id']}/artifacts/report.html")
    assert art.status_code == 200 and "hello report" in art.text
    failed = next(r for r in runs if r["command"] == "tour")
    assert "boom" in client.get(f"/runs/{failed['id']}").text


def test_unknown_run_and_artifact_are_404(store: RunStore) -> None:
    client = TestClient(create_app(store.path))
    assert client.get("/runs/nope").status_code == 404
    run_id = client.get("/api/runs").json()[0]["id"]
    assert client.get(f"/runs/{run_id}/artifacts/../../etc/passwd").status_code == 404
    assert client.get(f"/runs/{run_id}/artifacts/missing.html").status_code == 404


# -- over a store filled by real placement runs (tests/web/conftest.py) ----------------------
def _client(path: Path) -> TestClient:
    return TestClient(create_app(path))


def _ids(client: TestClient, **params: str) -> list[str]:
    res = client.get("/api/runs", params=params)
    assert res.status_code == 200, res.text
    return [r["id"] for r in res.json()]


def test_filters_by_kind_status_and_text(filled: Filled) -> None:
    client = _client(filled.store.path)
    everything = [filled.failed, filled.large, filled.small]  # newest first
    assert _ids(client) == everything
    assert _ids(client, kind="placement") == everything
    assert _ids(client, kind="placement simulate") == everything
    assert _ids(client, kind="placem") == []  # a kind matches whole words only
    assert _ids(client, status="failed") == [filled.failed]
    assert _ids(client, status="finished", sort="oldest") == [filled.small, filled.large]
    assert _ids(client, q="cluster-16") == [filled.large]  # searches the config
    assert _ids(client, q="DATANOTFOUNDERROR missing.yaml") == [filled.failed]  # error + config
    assert _ids(client, q="bound_servers") == [filled.large, filled.small]  # metric names
    assert _ids(client, q="cluster-16 cluster-8") == []  # every word must match
    assert client.get("/api/runs", params={"limit": 1}).headers["X-Total-Count"] == "3"


def test_runs_page_fragment_for_htmx_and_full_page_otherwise(filled: Filled) -> None:
    client = _client(filled.store.path)
    full = client.get("/", params={"q": "cluster-8"})
    assert full.text.startswith("<!DOCTYPE html>") and 'id="filters"' in full.text
    assert filled.small in full.text and filled.large not in full.text
    hx = {"HX-Request": "true", "HX-Target": "runs"}
    part = client.get("/", params={"q": "cluster-8"}, headers=hx)
    assert part.text.lstrip().startswith('<div id="runs">') and "<html" not in part.text
    assert filled.small in part.text and filled.large not in part.text
    assert "HX-Request" in part.headers["Vary"]
    restore = client.get("/", headers={**hx, "HX-History-Restore-Request": "true"})
    assert restore.text.startswith("<!DOCTYPE html>")
    # every kind, and its area, is offered in the filter
    assert '<option value="placement simulate"' in full.text
    assert '<option value="placement"' in full.text


def test_paging_and_sorting_by_time(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    made = []
    for i in range(7):
        with store.run("demo step", config={"i": i}) as run:
            run.log_metrics({"i": i})
        made.append(run.id)
    client = _client(store.path)
    newest = list(reversed(made))
    pages = [_page_ids(client, page=p) for p in (1, 2, 3)]
    assert pages == [newest[0:3], newest[3:6], newest[6:7]]
    assert _page_ids(client, page=9) == newest[6:7]  # past the end: the last page
    assert _page_ids(client, page=1, sort="oldest") == made[0:3]
    first = client.get("/", params={"per_page": 3}).text
    assert 'rel="next"' in first and 'rel="prev"' not in first
    assert "page 1 · more on the next pages" in first  # newest first: read without counting
    assert "page=2" in first and "per_page=3" in first  # the next link keeps the page size
    last = client.get("/", params={"per_page": 3, "page": 3}).text
    assert 'rel="prev"' in last and 'rel="next"' not in last
    assert '<span id="total">7</span> runs · page 3 of 3' in last
    oldest = client.get("/", params={"per_page": 3, "sort": "oldest"}).text
    assert '<span id="total">7</span> runs · page 1 of 3' in oldest and 'rel="next"' in oldest
    searched = client.get("/", params={"per_page": 3, "q": "demo"}).text
    assert "page 1 of 3" in searched
    assert _page_ids(client, page=2, q="demo") == newest[3:6]  # same pages either way
    assert _page_ids(client, page=3, kind="demo", status="finished") == newest[6:7]


def _page_ids(client: TestClient, **params: object) -> list[str]:
    text = client.get("/", params={"per_page": 3, **params}).text
    body = text.split("<tbody>")[1].split("</tbody>")[0]
    return [chunk.split('"')[0] for chunk in body.split('<tr data-run="')[1:]]


def test_bad_list_parameters_are_400_and_named(filled: Filled) -> None:
    client = _client(filled.store.path)
    for params, field in [
        ({"status": "done"}, "'status'"),
        ({"sort": "fastest"}, "'sort'"),
        ({"page": "0"}, "'page'"),
        ({"per_page": "500"}, "'per_page'"),
        ({"page": "two"}, "'page'"),
    ]:
        res = client.get("/", params=params)
        assert res.status_code == 400 and field in res.text.replace("&#39;", "'"), params


def test_run_page_params_metrics_artifacts_and_report(filled: Filled) -> None:
    client = _client(filled.store.path)
    text = client.get(f"/runs/{filled.large}").text
    metrics = text.split('id="metrics"')[1].split("</table>")[0]
    # 40 VMs of 1..5 cores living 20 s, one arriving per second: 60 cores at the peak
    assert '<th>bound_servers</th><td class="num" title="4.0">4</td>' in metrics
    assert '<th>best-fit.requests</th><td class="num" title="40">40</td>' in metrics
    params = text.split('id="params"')[1].split("</table>")[0]
    assert "<th>cores</th><td>16</td>" in params
    assert f'src="/runs/{filled.large}/artifacts/report.html"' in text and "<iframe" in text
    for name in ("report.html", "result.json", "summary.parquet"):
        assert f"/runs/{filled.large}/artifacts/{name}?download=true" in text
    # the previous run of the same kind is offered for comparison
    assert f"/compare?id={filled.small}&amp;id={filled.large}" in text
    small = client.get(f"/runs/{filled.small}").text
    assert 'bound_servers</th><td class="num" title="8.0">8<' in small
    failed = client.get(f"/runs/{filled.failed}").text
    assert "DataNotFoundError" in failed and "<iframe" not in failed


def test_artifact_download_and_inline_view(filled: Filled) -> None:
    client = _client(filled.store.path)
    res = client.get(f"/runs/{filled.small}/artifacts/summary.parquet", params={"download": True})
    assert res.status_code == 200 and res.content[:4] == b"PAR1"
    assert res.headers["content-disposition"].startswith("attachment")
    assert 'filename="summary.parquet"' in res.headers["content-disposition"]
    view = client.get(f"/runs/{filled.small}/artifacts/report.html")
    assert view.headers["content-disposition"].startswith("inline")
    assert view.headers["content-type"].startswith("text/html")
    assert "sandbox" in view.headers["content-security-policy"]  # never the dashboard's origin
    assert view.content == (filled.store.get(filled.small).dir / "report.html").read_bytes()


def test_artifacts_never_leave_the_run_folder(tmp_path: Path) -> None:
    import sqlite3

    store = RunStore(tmp_path / "store")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    with store.run("demo a", config={}) as other:
        other.write_text("other.txt", "another run's file")
    with store.run("demo b", config={}) as run:
        run.write_text("ok.txt", "fine")
    (run.dir / "link.txt").symlink_to(secret)
    with sqlite3.connect(store.db_path) as db:  # rows as a tampered or buggy writer might leave
        db.executemany(
            "INSERT INTO artifacts (run_id, name, relpath, size) VALUES (?, ?, ?, 0)",
            [
                (run.id, "link.txt", "link.txt"),
                (run.id, "up.txt", "../../../secret.txt"),
                (run.id, "sibling.txt", f"../{other.id}/other.txt"),
                (run.id, "abs.txt", str(secret)),
            ],
        )
    client = _client(store.path)
    base = f"/runs/{run.id}/artifacts"
    assert client.get(f"{base}/ok.txt").text == "fine"
    for name in (
        "link.txt",
        "up.txt",
        "sibling.txt",
        "abs.txt",
        "../../secret.txt",
        "..%2F..%2F..%2Fsecret.txt",
        "%2e%2e/%2e%2e/%2e%2e/secret.txt",
        f"../{other.id}/other.txt",
        "/etc/passwd",
    ):
        res = client.get(f"{base}/{name}")
        assert res.status_code == 404, name
        assert "top secret" not in res.text and "another run" not in res.text, name


def test_compare_marks_differences_against_the_baseline(filled: Filled) -> None:
    client = _client(filled.store.path)
    ids = [("id", filled.small), ("id", filled.large)]
    data = client.get("/api/compare", params=ids).json()
    assert data["kind"] == "placement simulate" and data["runs"] == [filled.small, filled.large]
    rows = {r["name"]: r for r in data["metrics"]}
    assert rows["bound_servers"]["values"] == [8.0, 4.0]
    assert rows["bound_servers"]["differs"] == [False, True]
    assert rows["bound_servers"]["delta"][1] == pytest.approx(-0.5)
    assert rows["best-fit.requests"]["differs"] == [False, False]
    params = {r["name"]: r for r in data["params"]}
    assert params["cores"]["values"] == [8, 16] and params["cores"]["delta"][1] == 1.0
    assert params["policies"]["differs"] == [False, False]
    page = client.get("/compare", params=ids).text
    row = page.split('data-name="bound_servers"')[1].split("</tr>")[0]
    assert row.count('class="num diff"') == 1 and "-50.0%" in row
    assert '<tr data-name="bound_servers" class="differs">' in page
    assert '<tr data-name="best-fit.requests">' in page  # equal in both: not marked
    only = client.get("/compare", params=[*ids, ("only", "diff")]).text
    assert 'data-name="bound_servers"' in only and 'data-name="best-fit.requests"' not in only


def test_compare_refuses_bad_selections(filled: Filled, tmp_path: Path) -> None:
    client = _client(filled.store.path)
    one = client.get("/compare", params={"id": filled.small})
    assert one.status_code == 400 and "2 or more" in one.text
    same = client.get("/api/compare", params=[("id", filled.small), ("id", filled.small)])
    assert same.status_code == 400 and "distinct" in same.json()["detail"]
    assert client.get("/compare", params=[("id", filled.small), ("id", "nope")]).status_code == 404
    store = RunStore(tmp_path / "mixed")
    with store.run("demo a", config={}) as a:
        a.log_metrics({"x": 1})
    with store.run("demo b", config={}) as b:
        b.log_metrics({"x": 2})
    mixed = _client(store.path).get("/api/compare", params=[("id", a.id), ("id", b.id)])
    assert mixed.status_code == 400
    assert "one kind" in mixed.json()["detail"] and "demo a" in mixed.json()["detail"]


def test_running_runs_poll_until_they_end(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    client = TestClient(create_app(store.path, poll_s=0.5))
    with store.run("demo live", config={}) as run:
        run.log_metrics({"progress": 0.5})
        status = client.get(f"/runs/{run.id}/status").text
        assert 'hx-trigger="every 0.5s"' in status and 'data-status="running"' in status
        page = client.get(f"/runs/{run.id}").text
        assert f'hx-get="/runs/{run.id}/live"' in page
        assert f'hx-get="/runs/{run.id}/status"' not in page  # one poll per page, not two
        live = client.get(f"/runs/{run.id}/live")
        assert "HX-Refresh" not in live.headers and "0.5" in live.text
        assert f'hx-get="/runs/{run.id}/status"' in client.get("/").text
    status = client.get(f"/runs/{run.id}/status").text
    assert "hx-trigger" not in status and 'data-status="finished"' in status
    live = client.get(f"/runs/{run.id}/live")
    assert live.headers["HX-Refresh"] == "true"  # the page reloads once, to show the results
    assert "hx-trigger" not in client.get(f"/runs/{run.id}").text


def test_htmx_is_vendored_with_its_licence(filled: Filled) -> None:
    client = _client(filled.store.path)
    page = client.get("/").text
    assert '<script src="/static/htmx.min.js"' in page
    assert "://" not in page.split("<script")[1].split(">")[0]  # no CDN
    js = client.get("/static/htmx.min.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    header = js.text.split("*/", 1)[0]
    assert "htmx 2.0.8" in header and "0BSD" in header
    assert "var htmx=function()" in js.text
    licence = client.get("/static/htmx.LICENSE.txt").text
    assert "Zero-Clause BSD" in licence and "Permission to use, copy, modify" in licence


def test_non_loopback_bind_needs_an_explicit_flag() -> None:
    import warnings

    from typer.testing import CliRunner

    from fleetlab.cli import app
    from fleetlab.errors import SafetyError
    from fleetlab.web import check_bind, serve

    for host in ("127.0.0.1", "127.0.0.9", "::1", "[::1]", "localhost"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_bind(host)
    for host in ("0.0.0.0", "::", "192.0.2.10", "no-such-host.invalid"):
        with pytest.raises(SafetyError, match="allow_remote"):
            check_bind(host)
    with pytest.warns(UserWarning, match="no authentication"):
        check_bind("0.0.0.0", allow_remote=True)
    with pytest.raises(SafetyError):
        serve(host="0.0.0.0", port=1)  # refused before anything listens
    res = CliRunner().invoke(app, ["web", "serve", "--host", "0.0.0.0", "--port", "1"])
    assert isinstance(res.exception, SafetyError) and "--allow-remote" in str(res.exception)


def test_artifact_names_with_url_characters_link_and_download(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    with store.run("demo names", config={}) as run:
        run.write_text("plots/a b#1?.html", "<p>odd name</p>")
    client = _client(store.path)
    page = client.get(f"/runs/{run.id}").text
    href = f"/runs/{run.id}/artifacts/plots/a%20b%231%3F.html"
    assert f'href="{href}"' in page and f'src="{href}"' in page  # link and report iframe
    res = client.get(href, params={"download": True})
    assert res.status_code == 200 and res.text == "<p>odd name</p>"
    assert "a%20b%231%3F.html" in res.headers["content-disposition"]  # RFC 5987 filename*
