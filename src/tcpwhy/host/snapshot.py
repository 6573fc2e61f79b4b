"""One reading of a namespace: sockets, counters and sysctls, taken together.

The namespace-dependent part runs in one probe (a forked child for --netns);
owners are found afterwards from /proc/PID/fd, which is not per namespace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial

from tcpwhy.host import nstat, procs, sysctl
from tcpwhy.host.netns import run_in_netns
from tcpwhy.host.sockets import Socket, read_sockets


@dataclass
class Raw:
    sockets: list[Socket] = field(default_factory=list)
    source: str = ""
    source_note: str | None = None
    counter_texts: dict[str, str] = field(default_factory=dict)
    sysctls: sysctl.Values = field(default_factory=dict)


def probe(want_sockets: bool, want_counters: bool, want_sysctls: bool) -> Raw:
    """Everything that must be read from inside the namespace."""
    raw = Raw()
    if want_sockets:
        raw.sockets, raw.source, raw.source_note = read_sockets()
    if want_counters:
        raw.counter_texts = nstat.read_texts()
    if want_sysctls:
        raw.sysctls = sysctl.read_values()
    return raw


@dataclass
class Snapshot:
    netns: str | None
    time: float
    sockets: list[Socket]
    source: str
    counters: dict[str, int]
    sysctls: sysctl.Values
    notes: list[str]

    @property
    def limits_known(self) -> bool:
        return self.source == "sock_diag"


def collect(
    netns: str | None,
    sockets: bool = True,
    counters_: bool = True,
    sysctls: bool = True,
) -> Snapshot:
    raw = run_in_netns(netns, partial(probe, sockets, counters_, sysctls))
    notes: list[str] = []
    if raw.source_note:
        notes.append(raw.source_note)
    if sockets:
        scan = procs.attach_owners(raw.sockets)
        note = procs.visibility_note(raw.sockets, scan)
        if note:
            notes.append(note)
    values = nstat.parse_all(raw.counter_texts) if counters_ else {}
    return Snapshot(netns, time.monotonic(), raw.sockets, raw.source, values, raw.sysctls, notes)
