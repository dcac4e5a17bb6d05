"""fleetlab: workload-aware cloud efficiency and reliability.

Areas live in sub-packages (``fleetlab.traces``, ``fleetlab.workload``, ...); import
the one you need. This top level holds only the version and the exception tree.
"""

from fleetlab._version import __version__
from fleetlab.errors import (
    ConfigError,
    DataNotFoundError,
    FleetlabError,
    InputFormatError,
    SafetyError,
    StoreError,
    UnknownFormatError,
)

__all__ = [
    "ConfigError",
    "DataNotFoundError",
    "FleetlabError",
    "InputFormatError",
    "SafetyError",
    "StoreError",
    "UnknownFormatError",
    "__version__",
]
