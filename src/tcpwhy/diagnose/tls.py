"""TLS connections as the diagnosis sees them: exchanges, closing alerts, server names.

Nothing is decrypted. The record layer (`tcpwhy.decode.tls`) gives each
record's direction, content type and size; from those:

* exchanges: after the handshake, a request is the client's application-data
  records until the server answers, the response the server's records until
  the client writes again -- the turns cleartext HTTP shows by its start
  lines. They are returned as `tcpwhy.diagnose.http.Message`s, so every rule
  that reads requests and responses reads TLS ones the same way;
* closing alerts: a side's last record right before its FIN, when it is an
  alert record (TLS 1.2: content type 21; its description when sent in clear)
  or, in TLS 1.3, a short application-data record -- almost certainly
  close_notify ("likely": its content is encrypted). A segment carrying only
  that alert is not application data: the idle time before a server's close is
  measured to its last response, not to its close_notify;
* server names: the ClientHello's SNI (and the Host header of cleartext HTTP),
  used to name a server in findings when every connection to that address
  that names it agrees.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import group_firsts, group_ids, unique_sorted
from tcpwhy.decode import tls as rec
from tcpwhy.decode.table import RST, PacketTable, format_addr
from tcpwhy.diagnose.http import Message, printable

if TYPE_CHECKING:
    from tcpwhy.diagnose.context import Capture, Conn

CLIENT, SERVER = 0, 1
_RECORDS: weakref.WeakKeyDictionary[Capture, rec.Records] = weakref.WeakKeyDictionary()
_NAMES: weakref.WeakKeyDictionary[Capture, dict[int, str]] = weakref.WeakKeyDictionary()


@dataclass
class Record:
    side: int
    row: int  # local row of the segment carrying its last byte
    start: int  # local row of the segment carrying its header
    ctype: int
    length: int
    hs: int
    alert: int  # level << 8 | description when sent in clear, else -1

    @property
    def size(self) -> int:
        return 5 + self.length


@dataclass
class Closing:
    """A side's closing alert: the record, and whether its description was readable."""

    record: Record
    certain: bool  # description seen in clear (TLS 1.2 and earlier)
    desc: int  # the description if certain, else 0 (close_notify, likely)
    fin: int  # local row of the FIN that followed it (or of the peer's RST that ended it)

    @property
    def name(self) -> str:
        return rec.ALERT_NAMES.get(self.desc, f"alert {self.desc}")

    def text(self) -> str:
        if self.certain:
            return self.name
        return "an encrypted alert (likely close_notify)"


@dataclass
class TLSConn:
    records: list[Record]
    sni: bytes | None = None
    alpn: list[bytes] = field(default_factory=list)
    version: int | None = None
    offered: list[int] = field(default_factory=list)  # the ClientHello's versions, highest first
    closing: dict[int, Closing] = field(default_factory=dict)
    fatal: list[Record] = field(default_factory=list)  # clear alerts of level fatal (2)
    closing_rows: frozenset[int] = frozenset()
    messages: list[Message] = field(default_factory=list)
    client_hello: rec.Hello | None = None
    server_hello: rec.Hello | None = None

    @property
    def resumed(self) -> bool | None:
        """Whether the handshake resumed an earlier session (None without a ServerHello).

        TLS 1.3: the ServerHello selects a pre_shared_key. TLS 1.2 and earlier: the
        ServerHello echoes the ClientHello's non-empty session id and no Certificate
        follows (an abbreviated handshake; with a ticket the client made the id up, RFC
        5077 §3.4). A TLS 1.3 server echoes the id always, so the id says nothing there.
        """
        ch, sh = self.client_hello, self.server_hello
        if sh is None:
            return None
        if self.version == 0x0304:
            return sh.psk
        if ch is None or not ch.session_id or ch.session_id != sh.session_id:
            return False
        if 11 in sh.following:
            return False
        # a Certificate in a record of its own; after the server's change_cipher_spec its
        # handshake records are encrypted (their first byte is no message type)
        for r in self.records:
            if r.side != SERVER:
                continue
            if r.ctype == rec.CHANGE_CIPHER_SPEC:
                break
            if r.hs == 11:
                return False
        return True

    @property
    def version_text(self) -> str:
        v = rec.version_name(self.version) if self.version else "TLS"
        return f"resumed {v}" if self.resumed else v


def capture_records(cap: Capture) -> rec.Records:
    """The capture's TLS records, grouped by stream * 2 + side (client 0, server 1)."""
    got = _RECORDS.get(cap)
    if got is None:
        got = _RECORDS[cap] = _find_records(cap)
    return got


def _find_records(cap: Capture) -> rec.Records:
    """`find_records` over the rows of the streams it would find TLS in, mapped back to the
    capture's rows: the same records, without its per-row sort keys and int64 copies of four
    columns for every row of the capture (hundreds of MB on millions of packets, most of them
    not TLS). Its `bounds` hold the TLS streams' groups only (the others are empty)."""
    t = cap.table
    n = len(t)
    tls_stream = np.zeros(cap.nstreams, np.bool_)
    if n and t.has_payload() and cap.n_data.any():  # (a flood has no payload at all)
        # the stream's first payload (either direction) starts a handshake record: the test
        # `find_records` makes, made here on one row per stream (its first 5 bytes read)
        # each stream's first payload row, in one compiled pass (`first_rows`): no index
        # of every payload row (10 MB on 4.3 M packets, where the analysis flags are
        # being worked out beside it)
        first_of = cap.first_rows(t.data_mask())
        sids = np.flatnonzero(first_of >= 0)
        first = first_of[sids].astype(np.int64)
        del first_of
        if len(first):
            data, off, cut = t.gather(first, 5)
            # the header checked only where the first byte says handshake: none of a
            # capture of plain HTTP (its 5-byte rows' temporaries were 20 MB on 215,000
            # streams, held while the analysis flags are worked out beside them)
            first_byte = data[np.minimum(off, max(data.size - 1, 0))] if data.size else 0
            at = np.flatnonzero((cut > 0) & (first_byte == rec.HANDSHAKE))
            if len(at):
                heads = PacketTable(
                    {
                        "payload_off": off.astype(np.uint64),
                        "payload_cap": np.where(
                            t["payload_cap"][first] >= 5, 5, t["payload_cap"][first]
                        ),
                        "payload_len": t["payload_len"][first],
                    },
                    data,
                )
                tls_stream[sids[at[rec._looks_like_record(heads, at)]]] = True
    rows = np.flatnonzero(tls_stream[cap.stream]) if tls_stream.any() else np.zeros(0, np.int64)
    # the TLS streams' rows with their payload bytes (only theirs: a capture's whole payload
    # is not held for this)
    sub = t.rows(rows, ("frame", "seq", "flags", "payload_len"))
    got = rec.find_records(sub, cap.stream[rows], cap.side[rows])
    order = rows[got.order]
    # each group's start in `order`: without TLS all zeros, which numpy leaves to the kernel
    # to give as pages are touched (a flood's 3 million streams: 48 MB never resident); with
    # it, counted and summed, not searched for every group (no group-sized temporaries)
    bounds = np.zeros(2 * cap.nstreams + 1, np.int64)
    if len(order):
        key = cap.stream[order] * 2 + cap.side[order]
        np.cumsum(np.bincount(key, minlength=2 * cap.nstreams), out=bounds[1:])
    return dataclasses.replace(
        got, row=rows[got.row], start_row=rows[got.start_row], order=order, bounds=bounds
    )


def conns_with(
    cap: Capture, which: Callable[[rec.Records], npt.NDArray[np.bool_]]
) -> Iterator[tuple[Conn, TLSConn]]:
    """The connections with a TLS record `which` picks (a mask over `capture_records`), in
    stream order, each with its TLS view: a TLS rule's candidates, found without a `Conn`
    for any other stream (and none, nothing asked of `which`, in a capture without TLS)."""
    recs = capture_records(cap)
    if not len(recs):
        return
    for sid in unique_sorted(recs.group[which(recs)] // 2).tolist():
        c = cap.conn(sid)
        tc = of(c)
        if tc is not None:
            yield c, tc


def of(conn: Conn) -> TLSConn | None:
    """The TLS view of a connection, None when it does not carry TLS."""
    if "tls" in conn.cache:
        got: TLSConn | None = conn.cache["tls"]
        return got
    conn.cache["tls"] = got = _build(conn)
    return got


def _build(conn: Conn) -> TLSConn | None:
    recs = capture_records(conn.cap)
    if not len(recs):
        return None
    lo = int(np.searchsorted(recs.group, conn.sid * 2))
    hi = int(np.searchsorted(recs.group, conn.sid * 2 + 2))
    if lo == hi:
        return None
    rows = conn.rows
    out: list[Record] = []
    for i in range(lo, hi):
        out.append(
            Record(
                int(recs.group[i]) % 2,
                int(np.searchsorted(rows, recs.row[i])),
                int(np.searchsorted(rows, recs.start_row[i])),
                int(recs.ctype[i]),
                int(recs.length[i]),
                int(recs.hs[i]),
                int(recs.alert[i]),
            )
        )
    out.sort(key=lambda r: (r.row, r.side))
    tc = TLSConn(out)
    for i in range(lo, hi):
        if recs.hs[i] in (1, 2):
            raw = rec.record_bytes(conn.cap.table, recs, i)
            hello = rec.parse_hello(raw) if raw is not None else None
            if hello is None:
                continue
            if recs.hs[i] == 1:
                tc.client_hello = hello
                tc.sni, tc.alpn = hello.sni, hello.alpn
                tc.version = tc.version or hello.legacy_version
                # GREASE values (RFC 8701: 0x?a?a) are no versions
                real = [v for v in hello.versions if v & 0x0F0F != 0x0A0A]
                tc.offered = sorted(real or [hello.legacy_version], reverse=True)
            else:
                tc.server_hello = hello
                tc.version = hello.versions[0] if hello.versions else hello.legacy_version
                if hello.alpn:
                    tc.alpn = hello.alpn
    tc.fatal = [r for r in out if r.ctype == rec.ALERT and r.alert >= 0 and r.alert >> 8 == 2]
    _closing(conn, tc)
    tc.messages = _exchanges(conn, tc)
    return tc


def _closing(conn: Conn, tc: TLSConn) -> None:
    rows: set[int] = set()
    for side in (CLIENT, SERVER):
        # the end the alert announced: the side's FIN, or the peer's RST when the peer
        # closed before that FIN could leave (close() with the alert unread)
        f = conn.first_fin(side)
        if f is None:
            f = conn.first_rst(1 - side)
        if f is None:
            continue
        mine = [r for r in tc.records if r.side == side and r.row <= f]
        if not mine:
            continue
        last = mine[-1]
        # nothing but that record (and bare ACKs) between it and the FIN
        if any(
            conn.side[j] == side and conn.plen[j] > 0 and not conn.flags[j] & RST
            for j in range(last.row + 1, f)
        ):
            continue
        if last.ctype == rec.ALERT:
            certain = last.alert >= 0
            desc = last.alert & 0xFF if certain else 0
        elif last.ctype == rec.APPLICATION_DATA and last.length <= rec.ENCRYPTED_ALERT_MAX:
            if tc.version not in (None, 0x0304):
                continue  # before TLS 1.3 an alert has its own content type
            certain, desc = False, 0
        else:
            continue
        tc.closing[side] = Closing(last, certain, desc, f)
        if last.start == last.row and conn.plen[last.row] == last.size:
            rows.add(last.row)
    tc.closing_rows = frozenset(rows)


def _exchanges(conn: Conn, tc: TLSConn) -> list[Message]:
    """Requests and responses from the turns of application-data records."""
    tls13 = tc.version == 0x0304
    closing = {id(c.record) for c in tc.closing.values()}
    closing |= _h2_goaway(tc)
    client_finished_seen = not tls13
    msgs: list[Message] = []
    for r in tc.records:
        if r.ctype != rec.APPLICATION_DATA or id(r) in closing:
            continue
        if r.side == CLIENT and not client_finished_seen:
            client_finished_seen = True  # TLS 1.3: the client's Finished, encrypted
            continue
        if r.side == SERVER and (not client_finished_seen or not msgs):
            continue  # the server's encrypted handshake and session tickets
        if msgs and msgs[-1].side == r.side:
            m = msgs[-1]
            m.end = max(m.end, r.row)
            m.tls_sizes += (r.size,)
            continue
        msgs.append(
            Message(
                r.start,
                r.side,
                r.side == CLIENT,
                end=r.row,
                tls_sizes=(r.size,),
            )
        )
    return msgs


H2_GOAWAY_MAX = 9 + 8 + 64 + rec.ENCRYPTED_ALERT_MAX
"""Longest record taken for an HTTP/2 GOAWAY: its 9-byte frame header, last stream id and
error code, a short debug text, and the record's encryption overhead."""


def _h2_goaway(tc: TLSConn) -> set[int]:
    """On an HTTP/2 connection (ALPN h2), the server's short record right before its
    closing alert, after its answer to the client's last data and with no client data
    after it: almost certainly the GOAWAY of an orderly close, no response."""
    c = tc.closing.get(SERVER)
    if tc.alpn != [b"h2"] or c is None:
        return set()
    i = next(k for k, r in enumerate(tc.records) if r is c.record)
    prev = [r for r in tc.records[:i] if r.side == SERVER]
    if not prev:
        return set()
    g = prev[-1]
    if g.ctype != rec.APPLICATION_DATA or g.length > H2_GOAWAY_MAX:
        return set()
    client = [r.row for r in tc.records if r.side == CLIENT and r.ctype == rec.APPLICATION_DATA]
    if not client or client[-1] > g.row:
        return set()
    # the response to the last request came first: a lone record after it is the response
    answered = any(
        r.side == SERVER and r.ctype == rec.APPLICATION_DATA and client[-1] < r.row < g.row
        for r in tc.records
    )
    return {id(g)} if answered else set()


def closing_rows(conn: Conn) -> frozenset[int]:
    """Local rows that carry only a closing alert (not application data)."""
    tc = of(conn)
    return tc.closing_rows if tc is not None else frozenset()


def server_label(cap: Capture, sid: int, addr: str) -> str:
    """`api.example (10.0.0.2:443)` when the connections to that server name it (SNI, or the
    Host header of cleartext HTTP) and agree on the name; the address alone otherwise."""
    names = _NAMES.get(cap)
    if names is None:
        names = _NAMES[cap] = _server_names(cap)
    name = names.get(sid)
    return f"{name} ({addr})" if name else addr


def _server_names(cap: Capture) -> dict[int, str]:
    """Per stream, the name of its server when every named connection to that address
    agrees (so that the label stands for the address, one to one). The names are found
    for all streams at once (`tcpwhy.tcp.server_names`, as `conns` finds them): a capture
    has hundreds of thousands of connections."""
    from tcpwhy.tcp.server_names import server_names

    if not cap.nstreams:
        return {}
    t = cap.table
    words, code = server_names(t, cap.stream, cap.side == CLIENT, cap.nstreams).words()
    # a ClientHello longer than its first segment: the record walk has it whole
    recs = capture_records(cap)
    late: dict[int, bytes] = {}
    for i in np.flatnonzero((recs.hs == 1) & (recs.group % 2 == CLIENT)).tolist():
        sid = int(recs.group[i]) // 2
        if code[sid] or sid in late:
            continue
        raw = rec.record_bytes(t, recs, i)
        hello = rec.parse_hello(raw) if raw is not None else None
        late[sid] = hello.sni if hello is not None and hello.sni else b""
    # names compared without case, each distinct one once
    index: dict[bytes, int] = {b"": 0}
    lowered = np.array([index.setdefault(w.lower(), len(index)) for w in words], np.int64)
    named = lowered[code]
    for sid, name in late.items():
        if name:
            named[sid] = index.setdefault(name.lower(), len(index))
    names = list(index)
    ep = cap.endpoints
    addr, naddr = group_ids(ep.server_hi, ep.server_lo, ep.server_port)
    first = group_firsts(addr, naddr)
    ukeys = np.stack([ep.server_hi[first], ep.server_lo[first]], axis=1).astype(np.uint64)
    has = named > 0
    lo = np.full(naddr, len(names), np.int64)
    hi = np.full(naddr, -1, np.int64)
    np.minimum.at(lo, addr[has], named[has])
    np.maximum.at(hi, addr[has], named[has])
    label: dict[int, str] = {}
    for k in np.flatnonzero((hi > 0) & (lo == hi)).tolist():
        name = names[int(hi[k])]
        ip = format_addr(int(ukeys[k, 0]), int(ukeys[k, 1])).encode()
        if name not in (ip, b"[" + ip + b"]"):
            label[k] = printable(name, 80)
    if not label:
        return {}
    agreed = np.zeros(naddr, np.bool_)
    agreed[list(label)] = True
    sids = np.flatnonzero(agreed[addr])
    return dict(zip(sids.tolist(), (label[k] for k in addr[sids].tolist()), strict=True))


def first_request(conn: Conn) -> Message | None:
    """The first encrypted request of a TLS connection."""
    tc = of(conn)
    if tc is None:
        return None
    return next((m for m in tc.messages if m.is_request), None)


def is_unread_close_notify_reset(conn: Conn, r: int) -> bool:
    """Row r is a RST from one side after the peer's closing alert and FIN reached it with
    nothing else unanswered: the kernel's answer to close() with the peer's close_notify still
    unread in the socket -- harmless, the exchange had ended."""
    tc = of(conn)
    if tc is None:
        return False
    x = conn.side[r]
    peer = tc.closing.get(1 - x)
    if peer is None or peer.fin > r or peer.desc != 0:
        return False
    # the peer's last application data before its close_notify was answered or was a reply
    last_peer = conn.last_data_before(peer.record.row + 1, 1 - x)
    last_own = conn.last_data_before(r, x)
    return last_own is None or last_peer is None or last_own < last_peer
