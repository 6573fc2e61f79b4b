"""The live host's views as JSON-ready documents: what ``tcpwhy host states|listen|counters
--format json`` print, and what `tcpwhy.host.states`, `listen` and `counters` return."""

from __future__ import annotations

from typing import Any

from tcpwhy.host import alerts
from tcpwhy.host import nstat as ctr
from tcpwhy.host.explain import analyze, group_key, listeners, state_counts
from tcpwhy.host.netns import run_in_netns
from tcpwhy.host.snapshot import collect
from tcpwhy.schemas import SCHEMA_VERSION
from tcpwhy.timestamps import stamp


def states(netns: str | None = None, by: str | None = None) -> dict[str, Any]:
    """TCP sockets per state, every socket, and what looks wrong (``host states``); `by`
    ("port", "remote" or "process") adds the sockets grouped, each group explained."""
    if by not in (None, "port", "remote", "process"):
        raise ValueError("by must be 'port', 'remote' or 'process'")
    snap = collect(netns, counters_=False)
    socks = snap.sockets
    findings = analyze(socks, snap.sysctls, limits_known=snap.limits_known)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        **stamp(),
        "netns": netns,
        "source": snap.source,
        "states": state_counts(socks),
        "total": len(socks),
        "sockets": [s.as_json() for s in socks],
        "findings": [f.as_json() for f in findings],
        "notes": snap.notes,
        "alerts": alerts.from_findings(f.as_json() for f in findings),
    }
    if by:
        key = group_key(by, socks, snap.sysctls)
        buckets: dict[str, list[Any]] = {}
        for sock in socks:
            buckets.setdefault(key(sock), []).append(sock)
        doc["by"] = by
        doc["groups"] = [
            {
                "group": name,
                "total": len(members),
                "states": {k: v for k, v in state_counts(members).items() if v},
                "findings": [
                    f.as_json()
                    for f in analyze(
                        members, snap.sysctls, all_sockets=socks, limits_known=snap.limits_known
                    )
                ],
            }
            for name, members in sorted(buckets.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ]
    return doc


def listen_notes(notes: list[str], overflows: int | None) -> list[str]:
    """The snapshot's notes, and what a non-zero TcpExtListenOverflows means."""
    out = list(notes)
    if overflows:
        out.append(
            f"TcpExtListenOverflows = {overflows} in this namespace: some listener's queue was full at some "
            "point (the counter does not say which); `tcpwhy host counters --interval 1` shows whether it moves now"
        )
    return out


def listen(netns: str | None = None) -> dict[str, Any]:
    """Listening sockets with their accept queue's fill and limit (``host listen``)."""
    snap = collect(netns)
    lsts = listeners(snap.sockets, snap.sysctls, snap.limits_known)
    overflows = snap.counters.get("TcpExtListenOverflows")
    listeners_json = [lst.as_json() for lst in lsts]
    return {
        "schema_version": SCHEMA_VERSION,
        **stamp(),
        "netns": netns,
        "source": snap.source,
        "somaxconn": lsts[0].somaxconn if lsts else None,
        "listen_overflows": overflows,
        "listen_drops": snap.counters.get("TcpExtListenDrops"),
        "listeners": listeners_json,
        "notes": listen_notes(snap.notes, overflows),
        "alerts": alerts.from_listeners(listeners_json),
    }


def read_counters(netns: str | None = None) -> dict[str, int]:
    """Every kernel counter of /proc/net (netstat, snmp, snmp6) by name."""
    return ctr.parse_all(run_in_netns(netns, ctr.read_texts))


def counters(netns: str | None = None) -> dict[str, Any]:
    """The kernel's counters since the namespace was created (``host counters``' first
    sample)."""
    return counters_record(netns, read_counters(netns))


def counters_record(netns: str | None, totals: dict[str, int]) -> dict[str, Any]:
    """Sample 0 of ``host counters``: totals since the namespace was created, timestamped."""
    return {
        "schema_version": SCHEMA_VERSION,
        "netns": netns,
        "sample": 0,
        **stamp(),
        "totals": totals,
    }
