"""The one time convention of tcpwhy's machine-readable output.

An event's time is two fields: ``ts``, an RFC 3339 string in UTC with nanoseconds
(``2026-01-31T12:00:00.123456789Z``), for people and log pipelines, and ``ts_ns``, the same
instant in integer nanoseconds since the Unix epoch, for arithmetic without float rounding.
Durations are seconds in a field whose name ends in ``_s``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def rfc3339(ns: int) -> str:
    """Epoch nanoseconds as an RFC 3339 UTC string with all nine fraction digits."""
    sec, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def stamp(ns: int | None = None) -> dict[str, str | int]:
    """``{"ts": …, "ts_ns": …}`` for `ns` (now when None)."""
    if ns is None:
        ns = time.time_ns()
    return {"ts": rfc3339(ns), "ts_ns": ns}
