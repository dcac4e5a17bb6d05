"""Fixtures of the dashboard tests: a store filled by real runs and a server on a free port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web_helpers import Filled, Server, fill_store, start_server


@pytest.fixture(scope="session")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    """A store with real placement runs (shared by every web test; they only read it)."""
    base = tmp_path_factory.mktemp("web-store")
    return fill_store(base / "store", base)


@pytest.fixture(scope="module")
def served(filled: Filled) -> Iterator[Server]:
    """The dashboard over the filled store, on a free port, stopped after the module."""
    srv = start_server(filled.store.path)
    yield srv
    srv.server.should_exit = True
    srv.thread.join(timeout=10)
