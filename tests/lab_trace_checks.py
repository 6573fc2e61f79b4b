"""What the kernel says in each lab scenario, as this machine's kernel (6.18) reported it.

Measured by playing every scenario with its kernel trace, then pinned here. A pinned reset
must also be in the capture: an RST in the same direction on the same client port, so the
kernel's account and the wire agree on which packet it explains.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

# scenario → the decisive (event, reason-or-state) pairs the trace must contain
KERNEL: dict[str, list[tuple[str, str]]] = {
    "stale-keepalive": [("reset_sent", "TCP_TIMEWAIT_SOCKET")],
    "refused": [("reset_sent", "NO_SOCKET"), ("drop", "NO_SOCKET")],
    "abortive-close": [("reset_sent", "TCP_ABORT_ON_CLOSE"), ("reset_sent", "TCP_STATE")],
    "keepalive-race": [("reset_sent", "TCP_ABORT_ON_DATA")],
    "fin-wait-2": [("reset_sent", "NO_SOCKET")],
    "syn-timeout": [("retransmit", "SYN_SENT")],
    "accept-queue-overflow": [("drop", "TCP_LISTEN_OVERFLOW")],
    "half-open": [("reset_sent", "TCP_FLAGS")],
    "keepalive-dead-peer": [("reset_sent", "TCP_KEEPALIVE_TIMEOUT")],
    "retransmission-timeout": [("retransmit", "ESTABLISHED")],
    "lost-final-ack": [("retransmit", "LAST_ACK")],
    "syn-flood": [("synack_retransmit", "")],
    "middlebox-reset": [("reset_received", "ESTABLISHED")],
    "middlebox-idle-reset-path": [("reset_received", "ESTABLISHED")],
    "stale-keepalive-tls": [("reset_sent", "TCP_TIMEWAIT_SOCKET")],
    "keepalive-race-tls": [("reset_sent", "TCP_ABORT_ON_DATA")],
    # the client closes with the server's close_notify unread: an abort, though harmless
    # close() with the server's close_notify unread; or, when the two closes crossed, the
    # alert arriving after the client's own FIN (data on a socket closed for reading)
    "clean-tls": [("reset_sent", "TCP_ABORT_ON_CLOSE|TCP_ABORT_ON_DATA")],
}
# the kernel of neither end sent a reset: any RST in the capture came from elsewhere
NO_KERNEL_RESET = {
    "clean",
    "close-wait-leak",
    "time-wait",
    "simultaneous-close",
    "lost-final-ack",
    "time-wait-reuse",
    "middlebox-reset",
    "syn-timeout",
    "middlebox-idle-reset-path",
    "addr-in-use-restart",
    "ephemeral-overlap",
}


def _key(e: dict[str, Any]) -> tuple[str, str]:
    if e["event"] in ("reset_sent", "drop"):
        return e["event"], e["reason"] or ""
    if e["event"] == "synack_retransmit":
        return e["event"], ""
    return e["event"], e["state"] or ""


def check_kernel_trace(
    name: str,
    trace: str | None,
    lost: int,
    port: int,
    rsts: list[tuple[bool, int]],
    addresses: Callable[[], set[str]] | None = None,
) -> None:
    """`rsts`: the capture's RST packets as (client→server, client port)."""
    assert trace is not None and Path(trace).exists(), "no kernel trace beside the capture"
    assert lost == 0
    events = [json.loads(line) for line in Path(trace).read_text().splitlines()]
    assert events, "the kernel trace is empty"
    mine = [e for e in events if port in (e["sport"], e["dport"])]
    keys = {_key(e) for e in mine}
    for wanted in KERNEL.get(name, []):
        # "A|B": the kernel gives one of these reasons, depending on timing
        want = next(
            ((wanted[0], r) for r in wanted[1].split("|") if (wanted[0], r) in keys),
            wanted,
        )
        assert want in keys, f"{name}: the kernel did not say {want}; it said {sorted(keys)}"
        if want[0] == "reset_sent":
            found = [e for e in mine if _key(e) == want]
            # on the wire: server-sent RST (sport == port) is not client→server
            on_wire = {
                (e["sport"] != port, e["dport"] if e["sport"] == port else e["sport"])
                for e in found
            }
            # a reset sent by a listener carries the listener's addresses only (peer 0.0.0.0:0)
            if any(e["dport"] == 0 for e in found):
                on_wire |= {(False, cport) for c2s, cport in rsts if not c2s}
            assert on_wire & set(rsts), f"{name}: no RST in the capture matches {found}"
    if name in NO_KERNEL_RESET:
        assert not [e for e in mine if e["event"] == "reset_sent"], name
