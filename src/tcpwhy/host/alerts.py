"""Alerts of the host views: what `tcpwhy host … --fail-on LEVEL` counts.

Each view names what is wrong at a level (info < warning < error) so that scripts and
alerting can act on the exit status without parsing the report:

* ``states``: every finding at its severity (info or warning); a full accept queue is an error.
* ``listen``: a full accept queue is an error, one at 80 % of its limit a warning.
* ``counters``: a failure counter that moved between two samples, at its level in
  `nstat.ALERTS` (handshakes dropped at a listener are errors); totals are history, not alerts.
* ``sysctl``: a note that is a risk, at its level (plain notes only explain a value).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tcpwhy.host import nstat as ctr
from tcpwhy.host.sysctl import SysctlRow

LEVELS = ("info", "warning", "error")
RANK = {name: i for i, name in enumerate(LEVELS)}


def alert(level: str, kind: str, subject: str, text: str) -> dict[str, Any]:
    return {"level": level, "kind": kind, "subject": subject, "text": text}


def from_findings(findings: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """`host states`: findings as alerts (a full accept queue is an error)."""
    return [
        alert(
            "error" if f["kind"] == "accept_queue_full" else f["severity"],
            f["kind"],
            f["subject"],
            f["why"],
        )
        for f in findings
    ]


def from_listeners(listeners: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """`host listen`: full queues (error) and queues close to full (warning)."""
    out = []
    for lst in listeners:
        if lst["status"] == "full":
            level, kind = "error", "accept_queue_full"
        elif lst["status"] == "filling":
            level, kind = "warning", "accept_queue_filling"
        else:
            continue
        text = lst["warnings"][0] if lst["warnings"] else kind.replace("_", " ")
        out.append(alert(level, kind, f"listener {lst['local']}", text))
    return out


def from_deltas(moved: dict[str, int]) -> list[dict[str, Any]]:
    """`host counters --interval`: failure counters that moved in one interval."""
    return [
        alert(ctr.ALERTS[name], name, name, f"+{n}: {ctr.explain(name)}")
        for name, n in sorted(moved.items())
        if name in ctr.ALERTS
    ]


def from_sysctls(rows: Iterable[SysctlRow]) -> list[dict[str, Any]]:
    """`host sysctl`: the notes that are risks."""
    return [alert(r["level"], "sysctl_risk", row.key, r["text"]) for row in rows for r in row.risks]


def reaches(alerts: Iterable[dict[str, Any]], fail_on: str | None) -> bool:
    """True when `fail_on` is set and an alert is at that level or above."""
    if fail_on is None:
        return False
    return any(RANK[a["level"]] >= RANK[fail_on] for a in alerts)
