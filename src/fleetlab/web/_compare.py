"""Side-by-side comparison of runs of one kind: params and metrics, differences marked."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fleetlab.errors import ConfigError
from fleetlab.store import RunRecord
from fleetlab.web._query import flatten

_MISSING: Any = object()


@dataclass(frozen=True)
class CompareRow:
    """One parameter or metric across the compared runs.

    Attributes
    ----------
    name
        Dotted name (nested dicts flattened).
    values
        One value per run, in the runs' order; ``None`` where a run lacks it.
    present
        Whether each run has the name at all.
    differs
        Per run: whether its value differs from the first run's (the baseline).
    delta
        Per run: relative change versus the baseline for numbers (``0.1`` = +10 %),
        ``None`` where not numeric or the baseline is 0.
    """

    name: str
    values: list[Any]
    present: list[bool]
    differs: list[bool]
    delta: list[float | None]

    @property
    def any_differs(self) -> bool:
        """True when at least one run differs from the baseline."""
        return any(self.differs)


@dataclass(frozen=True)
class Comparison:
    """Runs of one kind side by side.

    Attributes
    ----------
    kind
        The command all runs share.
    runs
        The runs, the first one being the baseline.
    params, metrics
        One row per config key and per metric (union over the runs, sorted by name).
    """

    kind: str
    runs: list[RunRecord]
    params: list[CompareRow]
    metrics: list[CompareRow]


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _same(a: Any, b: Any) -> bool:
    x, y = _number(a), _number(b)
    if x is not None and y is not None:
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def _differs(v: Any, base: Any) -> bool:
    if (v is _MISSING) != (base is _MISSING):
        return True
    return v is not _MISSING and not _same(v, base)


def _rows(dicts: list[dict[str, Any]]) -> list[CompareRow]:
    flat = [flatten(d) for d in dicts]
    names = sorted({k for f in flat for k in f})
    rows = []
    for name in names:
        raw = [f.get(name, _MISSING) for f in flat]
        base = raw[0]
        differs = [i > 0 and _differs(v, base) for i, v in enumerate(raw)]
        b = _number(base) if base is not _MISSING else None
        delta: list[float | None] = []
        for v in raw:
            x = _number(v) if v is not _MISSING else None
            delta.append((x - b) / abs(b) if x is not None and b not in (None, 0.0) else None)
        rows.append(
            CompareRow(
                name=name,
                values=[None if v is _MISSING else v for v in raw],
                present=[v is not _MISSING for v in raw],
                differs=differs,
                delta=delta,
            )
        )
    return rows


def compare_runs(records: list[RunRecord]) -> Comparison:
    """Line up the params and metrics of two or more runs of the same kind.

    Parameters
    ----------
    records
        The runs; the first is the baseline the others are compared to.

    Returns
    -------
    Comparison
        Rows of params and metrics; a cell differs when its value is not equal to the
        baseline's (numbers within a relative 1e-9) or only one of them has it.

    Raises
    ------
    ConfigError
        Fewer than two runs, the same run twice, or runs of different commands.
    """
    if len(records) < 2:
        raise ConfigError(f"compare: field 'id' expected 2 or more run ids, found {len(records)}")
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"compare: field 'id' expected distinct runs, found {', '.join(ids)}")
    commands = sorted({r.command for r in records})
    if len(commands) > 1:
        found = ", ".join(f"{r.id} ({r.command})" for r in records)
        raise ConfigError(
            f"compare: expected runs of one kind, found {len(commands)} kinds: {found}"
        )
    return Comparison(
        kind=commands[0],
        runs=list(records),
        params=_rows([r.config for r in records]),
        metrics=_rows([r.metrics for r in records]),
    )
