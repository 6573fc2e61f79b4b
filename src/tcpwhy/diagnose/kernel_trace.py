"""`tcpwhy analyze CAPTURE --kernel-trace x.trace.jsonl`: the kernel's own word on each finding.

A capture shows which packets went by; the kernel's tracepoints (`tcpwhy host trace`, or the
lab's `x.trace.jsonl`) say why an end sent a reset or dropped a segment. Events are matched
to a finding's connections by 4-tuple and time; what the kernel said is added to the
finding's timeline (next to the RST it explains) and facts, and where the kernel's reason
does not fit the capture's diagnosis the finding says so.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from tcpwhy.diagnose.model import Finding, Report
from tcpwhy.errors import TcpwhyError
from tcpwhy.host.trace import DROP_MEANING, RESET_MEANING, read_jsonl

WINDOW_NS = 1_000_000_000  # kernel events this close to a connection's span are its own

# What the kernel said in each lab scenario (docs/lab.md, pinned by the lab tests), by the
# finding kind the capture gives: (event, reason for resets and drops / state otherwise).
MEASURED: dict[str, tuple[tuple[str, str], ...]] = {
    "stale-keepalive-reuse": (("reset_sent", "TCP_TIMEWAIT_SOCKET"),),
    "request-retried": (("reset_sent", "TCP_TIMEWAIT_SOCKET"), ("reset_sent", "TCP_ABORT_ON_DATA")),
    "connection-refused": (("reset_sent", "NO_SOCKET"), ("drop", "NO_SOCKET")),
    "abortive-close": (("reset_sent", "TCP_ABORT_ON_CLOSE"), ("reset_sent", "TCP_STATE")),
    "keepalive-race": (("reset_sent", "TCP_ABORT_ON_DATA"),),
    "fin-wait-2-stall": (("reset_sent", "NO_SOCKET"),),
    "half-open-reset": (("reset_sent", "TCP_FLAGS"),),
    "keepalive-dead-peer": (("reset_sent", "TCP_KEEPALIVE_TIMEOUT"),),
    "accept-queue-overflow": (("drop", "TCP_LISTEN_OVERFLOW"),),
    "syn-timeout": (("retransmit", "SYN_SENT"),),
    "retransmission-timeout": (("retransmit", "ESTABLISHED"),),
    "lost-final-ack": (("retransmit", "LAST_ACK"),),
    "syn-flood": (("synack_retransmit", ""),),
    "middlebox-reset": (("reset_received", "ESTABLISHED"),),
}


def reason_fits() -> dict[str, set[str]]:
    """Reset reason → the finding kinds it is consistent with (measured, and as documented)."""
    fits: dict[str, set[str]] = {}
    for kind, pairs in MEASURED.items():
        for event, reason in pairs:
            if event == "reset_sent":
                fits.setdefault(reason, set()).add(kind)
    for reason, (_why, kinds) in RESET_MEANING.items():
        fits.setdefault(reason, set()).update(k.strip() for k in kinds.split("/"))
    return fits


FITS = reason_fits()
# findings whose diagnosis says who reset the connection: the kernel can confirm or refute it
RESET_KINDS = {k for kinds in FITS.values() for k in kinds} - {"resets"}
ENDPOINT_RESET_KINDS = RESET_KINDS - {"middlebox-reset", "request-retried"}


def _norm(addr: str) -> str:
    a = ipaddress.ip_address(addr.strip("[]"))
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return str(a.ipv4_mapped)
    return str(a)


def _end(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return _norm(host), int(port)


@dataclass
class Conn:
    client: tuple[str, int]
    server: tuple[str, int]
    first_ns: int
    last_ns: int


def _connections(files: list[str]) -> dict[tuple[str, int], Conn]:
    """(file, tcp.stream) → the connection's ends and span, each file read on its own."""
    from tcpwhy.capture import iter_tables
    from tcpwhy.decode.table import CaptureStats, PacketTable
    from tcpwhy.diagnose.context import Capture

    out: dict[tuple[str, int], Conn] = {}
    for f in files:
        table = PacketTable.concat(list(iter_tables(f, CaptureStats())))
        cap = Capture(table, np.zeros(len(table), np.int16), [f])
        for sid in range(cap.nstreams):
            c = cap.conn(sid)
            out[(f, c.no)] = Conn(
                _end(c.client),
                _end(c.server_addr),
                int(cap.first_ns[sid]),
                int(cap.last_ns[sid]),
            )
    return out


def _events_of(conn: Conn, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ends = {conn.client, conn.server}
    lo, hi = conn.first_ns - WINDOW_NS, conn.last_ns + WINDOW_NS
    out = []
    for e in events:
        if not lo <= e["_ns"] <= hi or e.get("src") is None:
            continue
        here, there = (e["src"], e["sport"]), (e["dst"], e["dport"])
        if {here, there} == ends or (
            # a reset sent by a listener carries the listener's addresses only
            e["event"] == "reset_sent" and e["dport"] == 0 and here == conn.server
        ):
            out.append(e)
    return out


def _meaning(event: str, reason: str) -> str:
    table = RESET_MEANING if event == "reset_sent" else DROP_MEANING
    got = table.get(reason)
    return got[0] if got else f"the kernel's reason {reason}"


def annotate(finding: Finding, conns: list[Conn], events: list[dict[str, Any]]) -> None:
    """Add what the kernel said about the finding's connections, and any disagreement."""
    traced = {e["src"] for e in events if e.get("src")}
    sent: list[tuple[str, dict[str, Any]]] = []
    drops: Counter[tuple[str, str]] = Counter()
    any_event = False
    for conn in conns:
        mine = _events_of(conn, events)
        any_event = any_event or bool(mine)
        for e in mine:
            side = "server" if (e["src"], e["sport"]) == conn.server else "client"
            fact = {k: e.get(k) for k in ("ts", "event", "state", "reason")} | {"side": side}
            if e["event"] == "reset_sent":
                reason = e.get("reason") or "NOT_SPECIFIED"
                sent.append((side, e))
                rst = [s.ts_ns for s in finding.timeline if s.sender == side and "RST" in s.packet]
                at = min(rst, key=lambda t: abs(t - e["_ns"])) if rst else None
                finding.add_evidence(
                    f"the {side}'s kernel sent this RST because {reason}: "
                    f"{_meaning('reset_sent', reason)}",
                    at_ns=at,
                    fact="kernel",
                    value=fact,
                )
            elif e["event"] == "drop" and e.get("reason") not in (None, "NOT_SPECIFIED"):
                drops[(side, e["reason"])] += 1
                finding.facts.setdefault("kernel", []).append(fact)
            elif e["event"] in ("reset_received", "retransmit", "synack_retransmit"):
                finding.facts.setdefault("kernel", []).append(fact)
    for (side, reason), n in sorted(drops.items()):
        finding.add_evidence(
            f"the {side}'s kernel dropped {n} segment{'s' if n > 1 else ''} of this connection "
            f"because {reason}: {_meaning('drop', reason)}"
        )
    _contradictions(finding, conns, sent, traced, any_event)


def _contradictions(
    finding: Finding,
    conns: list[Conn],
    sent: list[tuple[str, dict[str, Any]]],
    traced: set[str],
    any_event: bool,
) -> None:
    kind = finding.kind
    says: list[str] = []
    if kind == "middlebox-reset" and sent:
        side, e = sent[0]
        says.append(
            f"the capture points to a box on the path, but the {side}'s kernel sent the reset "
            f"itself ({e.get('reason')}): the RST came from an end, not from the path"
        )
    elif kind in ENDPOINT_RESET_KINDS and sent:
        reasons = {e.get("reason") or "NOT_SPECIFIED" for _side, e in sent}
        if not any(kind in FITS.get(r, set()) for r in reasons):
            side, e = sent[0]
            r = e.get("reason") or "NOT_SPECIFIED"
            points = " or ".join(sorted(FITS.get(r, {"another failure"})))
            says.append(
                f"the kernel's reason does not fit this diagnosis: the {side}'s kernel reset "
                f"because {r}, which points to {points}, not {kind}"
            )
    elif (
        kind in ENDPOINT_RESET_KINDS
        and any_event
        and not sent
        and any("RST" in s.packet for s in finding.timeline)
        and all(c.client[0] in traced and c.server[0] in traced for c in conns)
    ):
        says.append(
            "neither end's kernel sent a reset on this connection although both were traced: "
            "the RST in the capture came from the path (a firewall, load balancer or NAT)"
        )
    for text in says:
        finding.add_evidence(
            f"The kernel disagrees: {text}.", fact="kernel_contradicts", value=text
        )


def join(report: Report, trace_path: str) -> int:
    """Add the kernel's word to every finding of `report`; returns the events matched. An
    event whose fields are not what `host trace` writes (a time that is not a number, an
    address that is not one, a reason that is a list) is the file's one-line error."""
    try:
        return _join(report, trace_path)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        what = f"no field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise TcpwhyError(
            trace_path, f"not a tcpwhy kernel trace (an event's fields: {what})"
        ) from None


def _join(report: Report, trace_path: str) -> int:
    events = read_jsonl(trace_path)
    for e in events:
        # schema 2.0 has `ts_ns` (`ts` is RFC 3339); a 1.x file's `ts` is epoch seconds
        e["_ns"] = int(e["ts_ns"]) if "ts_ns" in e else round(float(e["ts"]) * 1e9)
        for k in ("src", "dst"):
            if e.get(k):
                e[k] = _norm(str(e[k]))
    conns = _connections(report.capture.files)
    files = report.capture.files
    matched = 0
    for f in report.findings:
        keys = {(s.file, s.stream) for s in f.timeline}
        if not keys and files:
            keys = {(files[0], s) for s in f.streams[:1000]}
        mine = [conns[k] for k in sorted(keys) if k in conns]
        if mine:
            before = len(f.facts.get("kernel", []))
            annotate(f, mine, events)
            matched += len(f.facts.get("kernel", [])) - before
    return matched


def kernel_reasons(kinds: list[str]) -> list[dict[str, str]]:
    """What `host trace` shows behind the given finding kinds, as the lab measured it: for
    `explain`, the kernel's side of an error message."""
    out: list[dict[str, str]] = []
    seen = set()
    for kind in kinds:
        for event, reason in MEASURED.get(kind, ()):
            if (event, reason) in seen:
                continue
            seen.add((event, reason))
            who = {
                "reset_sent": "the peer's kernel sent the reset (tcp_send_reset)",
                "drop": "a kernel dropped the segment (kfree_skb)",
                "reset_received": "this end's kernel received a reset no kernel sent",
            }.get(event, f"{event} in state")
            out.append({"kind": kind, "event": event, "reason": reason, "who": who})
    return out
