"""The dashboard lists runs from the store, shows one, serves its artifacts, and 404s cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

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
