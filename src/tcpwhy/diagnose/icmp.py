"""ICMP errors about TCP in a diagnosis: joined to their connections, and what each one means.

`IcmpRows` is the `Capture`'s view of the table's ICMP rows (see
`tcpwhy.decode.table`): each error's stream (the connection its quoted segment
belongs to), which side sent the quoted segment, and per-stream counts, so
rules pre-select with numpy as they do for TCP packets. `MEANINGS` maps an ICMP
or ICMPv6 type and code to what Linux makes of it (`icmp_err_convert`,
`icmpv6_err_convert`): the errno connect() fails with, and its text.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import unique_sorted
from tcpwhy.decode.table import (
    ACK,
    RST,
    SYN,
    PacketTable,
    format_addr,
    is_too_big,
    too_big_rows,
)

if TYPE_CHECKING:
    from tcpwhy.diagnose.context import Capture, Conn
    from tcpwhy.diagnose.model import Step


@dataclass(frozen=True)
class Meaning:
    name: str  # the code as people say it
    errno: int  # what a TCP socket reports for it on Linux


def _m(name: str, e: int) -> Meaning:
    return Meaning(name, e)


# (IP version, type, code) -> meaning; Linux net/ipv4/icmp.c icmp_err_convert and
# net/ipv6/icmp.c icmpv6_err_convert
MEANINGS: dict[tuple[int, int, int], Meaning] = {
    (4, 3, 0): _m("network unreachable", errno.ENETUNREACH),
    (4, 3, 1): _m("host unreachable", errno.EHOSTUNREACH),
    (4, 3, 2): _m("protocol unreachable", errno.ENOPROTOOPT),
    (4, 3, 3): _m("port unreachable", errno.ECONNREFUSED),
    (4, 3, 4): _m("fragmentation needed", errno.EMSGSIZE),
    (4, 3, 5): _m("source route failed", errno.EOPNOTSUPP),
    (4, 3, 6): _m("destination network unknown", errno.ENETUNREACH),
    (4, 3, 7): _m("destination host unknown", errno.EHOSTDOWN),
    (4, 3, 8): _m("source host isolated", errno.ENONET),
    (4, 3, 9): _m("network administratively prohibited", errno.ENETUNREACH),
    (4, 3, 10): _m("host administratively prohibited", errno.EHOSTUNREACH),
    (4, 3, 11): _m("network unreachable for TOS", errno.ENETUNREACH),
    (4, 3, 12): _m("host unreachable for TOS", errno.EHOSTUNREACH),
    (4, 3, 13): _m("communication administratively prohibited", errno.EHOSTUNREACH),
    (4, 3, 14): _m("host precedence violation", errno.EHOSTUNREACH),
    (4, 3, 15): _m("precedence cutoff in effect", errno.EHOSTUNREACH),
    (4, 11, 0): _m("time to live exceeded in transit", errno.EHOSTUNREACH),
    (4, 11, 1): _m("fragment reassembly time exceeded", errno.EHOSTUNREACH),
    (6, 1, 0): _m("no route to destination", errno.ENETUNREACH),
    (6, 1, 1): _m("administratively prohibited", errno.EACCES),
    (6, 1, 2): _m("beyond scope of source address", errno.EHOSTUNREACH),
    (6, 1, 3): _m("address unreachable", errno.EHOSTUNREACH),
    (6, 1, 4): _m("port unreachable", errno.ECONNREFUSED),
    (6, 1, 5): _m("source address failed ingress/egress policy", errno.EACCES),
    (6, 1, 6): _m("reject route to destination", errno.EACCES),
    (6, 2, 0): _m("packet too big", errno.EMSGSIZE),
    (6, 3, 0): _m("hop limit exceeded in transit", errno.EHOSTUNREACH),
    (6, 3, 1): _m("fragment reassembly time exceeded", errno.EHOSTUNREACH),
}


def meaning(version: int, icmp_type: int, code: int) -> Meaning:
    got = MEANINGS.get((version, icmp_type, code))
    if got is not None:
        return got
    if (version, icmp_type) in ((4, 12), (6, 4)):
        return _m("parameter problem", errno.EPROTO)
    if version == 6 and icmp_type == 1:
        return _m(f"destination unreachable (code {code})", errno.EPROTO)
    if version == 6 and icmp_type == 3:
        return _m("time exceeded", errno.EHOSTUNREACH)
    return _m(f"type {icmp_type} code {code}", errno.EPROTO)


def errno_name(e: int) -> str:
    """`EHOSTUNREACH`; EOPNOTSUPP as Linux names it (Python's table says ENOTSUP)."""
    return "EOPNOTSUPP" if e == errno.EOPNOTSUPP else errno.errorcode.get(e, str(e))


def errno_text(e: int) -> str:
    """`EHOSTUNREACH "No route to host"`."""
    return f'{errno_name(e)} "{os.strerror(e)}"'


def icmp_label(version: int, icmp_type: int, code: int) -> str:
    """`ICMP 3/1` or `ICMPv6 1/3`."""
    return f"ICMP{'v6' if version == 6 else ''} {icmp_type}/{code}"


def dense_streams(
    stream: npt.NDArray[np.int64],
    numbers: npt.NDArray[np.int64] | None,
    icmp_stream: npt.NDArray[np.int64],
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int64] | None,
    npt.NDArray[np.int64],
    npt.NDArray[np.int64] | None,
]:
    """Stream ids without gaps: an ICMP error about a connection the capture has no packet
    of opens a stream (as in Wireshark) that has no TCP row here. Returns the TCP rows'
    stream ids, the tcp.stream number of each id (None: the ids are the numbers), the ICMP
    rows' stream ids (-1: no stream with a TCP packet), and the given id of each new id
    (None: the ids are unchanged), by which any per-stream column follows them."""
    if not len(icmp_stream):
        return stream, numbers, icmp_stream, None
    top = int(max(stream.max() if len(stream) else -1, icmp_stream.max()))
    used = np.zeros(top + 2, np.bool_)
    used[stream] = True
    ids = np.cumsum(used) - 1
    ok = icmp_stream >= 0
    ok[ok] = used[icmp_stream[ok]]
    icmp_sid = np.where(ok, ids[np.maximum(icmp_stream, 0)], -1)
    if used[: top + 1].all():
        return stream, numbers, icmp_sid, None
    kept = np.flatnonzero(used)
    base = numbers if numbers is not None else np.arange(top + 1)
    return ids[stream], np.asarray(base)[kept], icmp_sid, kept


class IcmpRows:
    """A capture's ICMP errors about TCP, joined to its streams."""

    def __init__(
        self,
        cap: Capture,
        table: PacketTable | None,
        sid: npt.NDArray[np.int64],
        pdir: npt.NDArray[np.int8],
    ) -> None:
        self.cap = cap
        self.table = table if table is not None else None
        self.n = len(table) if table is not None else 0
        self.sid = sid if self.n else np.zeros(0, np.int64)
        ok = self.sid >= 0
        side = np.zeros(self.n, np.int8)
        if self.n and cap.nstreams:
            side[ok] = (pdir[ok] != cap.orig_dir[self.sid[ok]]).astype(np.int8)
        self.side = side  # which side sent the quoted segment (CLIENT/SERVER)
        t = table
        if self.n and t is not None:
            self.too_big = too_big_rows(t["ip_version"], t["icmp_type"], t["icmp_code"])
            syn = (t["flags"] & (SYN | ACK | RST)) == SYN
            # a quote cut after the sequence number: the SYN if it carries the SYN's number
            for i in np.flatnonzero((t["doff"] == 0) & ok):
                c = cap.conn(int(self.sid[i]))
                syn[i] = any(
                    c.side[k] == 0 and (c.flags[k] & (SYN | ACK)) == SYN and c.seq[k] == t["seq"][i]
                    for k in range(c.n)
                )
        else:
            self.too_big = np.zeros(0, np.bool_)
            syn = np.zeros(0, np.bool_)
        err = ok & ~self.too_big
        self.err_rows = np.flatnonzero(err)
        """The rows of the errors other than "too big" about a stream (the state machine's)."""
        size = cap.nstreams
        # the streams with an error (ascending), not a count for every stream: two int64
        # arrays of a flood's 3 million streams, 48 MB held through every rule, nearly
        # always zero
        err_sid, big_sid = self.sid[err], self.sid[ok & self.too_big]
        self.err_streams = unique_sorted(err_sid[err_sid < size])
        """Streams with an ICMP error other than "too big" about them, ascending."""
        self.too_big_streams = unique_sorted(big_sid[big_sid < size])
        """Streams with an ICMP "too big" (fragmentation needed) about them, ascending."""
        # per stream: an error that quotes the client's SYN (the connect() it ended)
        self.quotes_syn = syn & (self.side == 0)  # per row: it quotes the client's SYN
        self.syn_err = np.zeros(size, np.bool_)
        self.syn_err[self.sid[err & self.quotes_syn]] = True

    def rows_of(self, sid: int) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.sid == sid)]

    @cached_property
    def _lists(self) -> dict[str, list[Any]]:
        t = self.table
        if t is None:
            return {}
        names = (
            "frame", "ts_ns", "ip_version", "icmp_type", "icmp_code", "icmp_mtu", "icmp_ttl",
            "flags", "seq", "ip_len", "payload_len", "icmp_src_hi", "icmp_src_lo",
        )  # fmt: skip
        return {k: t[k].tolist() for k in names}

    def get(self, name: str, i: int) -> Any:
        return self._lists[name][i]

    def meaning(self, i: int) -> Meaning:
        g = self.get
        return meaning(g("ip_version", i), g("icmp_type", i), g("icmp_code", i))

    def label(self, i: int) -> str:
        g = self.get
        return icmp_label(g("ip_version", i), g("icmp_type", i), g("icmp_code", i))

    def sender(self, i: int) -> str:
        """Who sent the error (its IP source)."""
        return format_addr(self.get("icmp_src_hi", i), self.get("icmp_src_lo", i))

    def role(self, c: Conn, i: int) -> str:
        """Who sent the error, as a role: "server" or "client" (the quoted segment's
        destination answered itself) or "router" (anyone else on the path)."""
        target = c.server_ip if self.side[i] == 0 else c.client_ip
        if self.sender(i) == target:
            return "server" if self.side[i] == 0 else "client"
        return "router"

    def hops(self, i: int) -> int | None:
        """Routers between the error's sender and the capture point, from its TTL (senders
        start at 64, 128 or 255)."""
        ttl = self.get("icmp_ttl", i)
        for start in (64, 128, 255):
            if ttl <= start:
                return start - ttl
        return None

    def step(self, c: Conn, i: int, note: str) -> Step:
        """The error as a step of connection `c`'s timeline (states as after it: an error
        ends a connect())."""
        from tcpwhy.diagnose.model import Step

        ts = self.get("ts_ns", i)
        before = [k for k in range(c.n) if c.ts[k] <= ts]
        k = before[-1] if before else 0
        g = self.get
        text = f"{self.label(i)} {self.meaning(i).name}"
        if is_too_big(g("ip_version", i), g("icmp_type", i), g("icmp_code", i)):
            text = f"{self.label(i)} mtu={g('icmp_mtu', i)}"
        return Step(
            ts_ns=ts,
            rel_s=round((ts - c.ts[0]) / 1e9, 6),
            frame=g("frame", i),
            file=c.cap.file_name(int(c.rows[k])),
            stream=c.no,
            sender=self.role(c, i),
            packet=text,
            note=note,
            client_state=c.state_label(0, c.state_after(0, k, ts)),
            server_state=c.state_label(1, c.state_after(1, k, ts)),
        )


def empty(cap: Capture) -> IcmpRows:
    return IcmpRows(cap, None, np.zeros(0, np.int64), np.zeros(0, np.int8))
