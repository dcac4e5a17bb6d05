"""The one exception tree of fleetlab.

Every error a user can cause derives from :class:`FleetlabError`. The CLI turns each
subclass into a one-line message and its own exit code, so scripts can tell a bad file
from a missing dataset without parsing text.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataNotFoundError",
    "FleetlabError",
    "InputFormatError",
    "SafetyError",
    "StoreError",
    "UnknownFormatError",
]


class FleetlabError(Exception):
    """Root of every error fleetlab raises on purpose; ``exit_code`` is the CLI's code."""

    exit_code: int = 1


class InputFormatError(FleetlabError):
    """A file does not follow its format: names the file, the row/field, expected and found."""

    exit_code = 3

    def __init__(
        self,
        path: object,
        problem: str,
        *,
        row: int | None = None,
        field: str | None = None,
        expected: str | None = None,
        found: object = None,
    ) -> None:
        self.path = str(path)
        self.row = row
        self.field = field
        self.expected = expected
        self.found = found
        where = self.path
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field {field!r}"
        message = f"{where}: {problem}"
        if expected is not None:
            message += f" (expected {expected}"
            message += f", found {_short(found)})" if found is not None else ")"
        super().__init__(message)


class UnknownFormatError(FleetlabError):
    """No reader recognises a file; the message lists the supported formats."""

    exit_code = 4


class DataNotFoundError(FleetlabError):
    """A dataset, file, run or artifact the user named does not exist."""

    exit_code = 5


class ConfigError(FleetlabError):
    """A spec, config or option is invalid: names the field, expected and found."""

    exit_code = 2


class StoreError(FleetlabError):
    """The run store cannot be opened or written."""

    exit_code = 6


class SafetyError(FleetlabError):
    """An action was refused because it could harm something outside the allowlist."""

    exit_code = 7


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
