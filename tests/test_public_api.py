"""Every area's public names are documented, and the version is exposed."""

from __future__ import annotations

import importlib
import inspect

import pytest

import fleetlab

AREAS = [
    "traces",
    "workload",
    "sim",
    "placement",
    "inference",
    "depgraph",
    "chaos",
    "report",
    "store",
    "tour",
]


def test_version() -> None:
    assert fleetlab.__version__.count(".") == 2


@pytest.mark.parametrize("area", AREAS)
def test_public_names_have_docstrings(area: str) -> None:
    module = importlib.import_module(f"fleetlab.{area}")
    assert module.__doc__, f"fleetlab.{area} has no module docstring"
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__doc__, f"fleetlab.{area}.{name} has no docstring"


def test_errors_share_one_root_and_distinct_exit_codes() -> None:
    errors = [getattr(fleetlab, n) for n in fleetlab.__all__ if n.endswith("Error")]
    assert all(issubclass(e, fleetlab.FleetlabError) for e in errors)
    codes = [e.exit_code for e in errors if e is not fleetlab.FleetlabError]
    assert len(codes) == len(set(codes))


def test_input_format_error_names_file_row_field_expected_found() -> None:
    exc = fleetlab.InputFormatError(
        "t.csv", "bad number", row=17, field="ContextTokens", expected="an integer", found="abc"
    )
    assert (
        str(exc)
        == "t.csv, row 17, field 'ContextTokens': bad number (expected an integer, found 'abc')"
    )
