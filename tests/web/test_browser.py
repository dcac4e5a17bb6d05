"""The dashboard in a real browser: Playwright driving Debian's chromium, headless.

The server runs in a thread on a free loopback port over a store filled by real
placement runs. Skipped, with the reason, where chromium or Playwright is missing;
under CI (``CI`` set) that is a failure instead, since .ci/run installs both.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_helpers import Filled, Server, start_server

from fleetlab.store import RunStore

pytestmark = pytest.mark.browser

INSTALL_HINT = "install it with `apt-get install chromium` (Debian) or set FLEETLAB_CHROMIUM"


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(reason)


def chromium_path() -> str | None:
    """Debian's chromium: $FLEETLAB_CHROMIUM, else `chromium` on PATH, else /usr/bin/chromium."""
    for candidate in (
        os.environ.get("FLEETLAB_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        "/usr/bin/chromium",
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def pw() -> Any:
    """The playwright.sync_api module (skip, or fail under CI, when it is not installed)."""
    try:
        import playwright.sync_api as api
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    api.expect.set_options(timeout=30_000)  # only reached on failure; CI machines are shared
    return api


@pytest.fixture(scope="module")
def browser(pw: Any) -> Iterator[Any]:
    """Headless chromium from the system, never a browser downloaded by Playwright."""
    exe = chromium_path()
    if exe is None:
        _missing(f"chromium not found; {INSTALL_HINT}")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium refuses its sandbox as root
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=args)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser tab (own cookies and history)."""
    context = browser.new_context(accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(30_000)  # only reached on failure; CI machines are small and shared
    yield tab
    context.close()


def rows(page: Any) -> Any:
    return page.locator("#runs-table tbody tr")


def test_list_loads_and_filters_narrow_it_in_place(
    page: Any, pw: Any, served: Server, filled: Filled
) -> None:
    expect = pw.expect
    page.goto(served.url + "/")
    expect(rows(page)).to_have_count(3)
    assert page.evaluate("typeof htmx") == "object"  # the vendored htmx loaded, offline
    page.evaluate("window.notReloaded = true")
    page.fill("input[name=q]", "cluster-16")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_have_attribute("data-run", filled.large)
    expect(page).to_have_url(re.compile(r"q=cluster-16"))  # the filter is in the address
    assert page.evaluate("window.notReloaded") is True  # swapped by htmx, not a page load
    page.fill("input[name=q]", "")
    expect(rows(page)).to_have_count(3)  # each step waits for its swap: one history entry each
    page.select_option("select[name=status]", "failed")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_have_attribute("data-run", filled.failed)
    page.select_option("select[name=status]", "")
    expect(rows(page)).to_have_count(3)
    expect(rows(page).first).to_have_attribute("data-run", filled.failed)  # newest first
    page.select_option("select[name=sort]", "oldest")
    expect(rows(page).first).to_have_attribute("data-run", filled.small)
    expect(rows(page).last).to_have_attribute("data-run", filled.failed)
    page.go_back()  # the back button walks through the filtered lists
    expect(page).to_have_url(re.compile(r"sort=newest"))
    expect(rows(page).first).to_have_attribute("data-run", filled.failed)
    page.go_back()
    expect(page).to_have_url(re.compile(r"status=failed"))
    expect(rows(page)).to_have_count(1)


def test_click_through_to_a_run_and_its_report_renders(
    page: Any, pw: Any, served: Server, filled: Filled
) -> None:
    expect = pw.expect
    page.goto(served.url + "/")
    page.click(f"a[href='/runs/{filled.small}']")
    expect(page).to_have_url(served.url + f"/runs/{filled.small}")
    expect(page.locator("h2").first).to_have_text("placement simulate")
    bound = page.locator("#metrics tr", has_text="bound_servers").locator("td")
    expect(bound).to_have_text("8")
    page.locator("#report").scroll_into_view_if_needed()  # the frame loads lazily
    report = page.frame_locator("#report")
    expect(report.locator("h1")).to_have_text("Placement policy comparison")
    # plotly ran inside the sandboxed frame and drew every chart of the report
    expect(report.locator(".plotly-graph-div.js-plotly-plot")).to_have_count(6)


def test_compare_two_runs_from_the_list(page: Any, pw: Any, served: Server, filled: Filled) -> None:
    expect = pw.expect
    page.goto(served.url + "/")
    page.check(f"input[type=checkbox][value='{filled.small}']")
    page.check(f"input[type=checkbox][value='{filled.large}']")
    page.click("#compare-button")
    # the list is newest first, so the later (16-core) run is the baseline
    expect(page).to_have_url(re.compile(rf"/compare\?id={filled.large}&id={filled.small}$"))
    row = page.locator("#compare-metrics tr[data-name=bound_servers]")
    expect(row.locator("td")).to_have_text(["4", re.compile(r"^8\s+\+100\.0%$")])
    expect(row.locator("td.diff")).to_have_count(1)
    same = page.locator("#compare-metrics tr[data-name='best-fit.requests'] td.diff")
    expect(same).to_have_count(0)
    page.click("#only-diff")
    expect(page.locator("#compare-metrics tr[data-name='best-fit.requests']")).to_have_count(0)
    expect(page.locator("#compare-params tr[data-name=cores] td.diff")).to_have_count(1)


def test_download_an_artifact(page: Any, served: Server, filled: Filled) -> None:
    page.goto(served.url + f"/runs/{filled.small}", wait_until="domcontentloaded")
    link = page.locator("#artifacts tr", has_text="summary.parquet").locator("a.download")
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.suggested_filename == "summary.parquet"
    stored = filled.store.get(filled.small).artifacts["summary.parquet"]
    assert Path(download.path()).read_bytes() == stored.read_bytes()


def test_live_status_of_a_running_run(page: Any, pw: Any, tmp_path: Path) -> None:
    expect = pw.expect
    store = RunStore(tmp_path / "store")
    server = start_server(store.path, poll_s=0.3)
    try:
        with store.run("demo live", config={"steps": 2}) as run:
            run.log_metrics({"progress": 0.5})
            page.goto(server.url + "/")
            status = page.locator(f"#status-{run.id}")
            expect(status).to_have_attribute("data-status", "running")
            tab = page.context.new_page()
            tab.goto(server.url + f"/runs/{run.id}")
            expect(tab.locator("#metrics")).to_contain_text("0.5")
            run.log_metrics({"progress": 1.0, "answer": 42})
            expect(tab.locator("#metrics")).to_contain_text("answer")  # polled, no reload
        expect(status).to_have_attribute("data-status", "finished")  # the list cell updated
        expect(tab.locator(f"#status-{run.id}")).to_have_attribute("data-status", "finished")
        expect(tab.locator("#run-live")).not_to_have_attribute("hx-trigger", re.compile("."))
    finally:
        server.server.should_exit = True
        server.thread.join(timeout=10)
