"""Just enough HTTP/1.x to name requests: request and status lines, Connection and Keep-Alive.

Payloads are attacker-controlled: everything taken from them is passed
through `printable` before it reaches text, JSON or a terminal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tcpwhy.decode import http2
from tcpwhy.decode.http1 import METHOD_WORDS, parse_head
from tcpwhy.decode.table import RST

if TYPE_CHECKING:
    from tcpwhy.diagnose.context import Conn

IDEMPOTENT = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"}
_VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")
_TARGET_LIMIT = 2048
_KA_TIMEOUT = re.compile(rb"timeout\s*=\s*(\d{1,7})", re.I)


def printable(data: bytes | str, limit: int = 80) -> str:
    """ASCII with \\xNN escapes for anything else; cut at `limit` characters with an ellipsis."""
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    out = []
    for b in data:
        if 0x20 <= b < 0x7F and b != 0x5C:
            out.append(chr(b))
        elif b == 0x5C:
            out.append("\\\\")
        else:
            out.append(f"\\x{b:02x}")
    s = "".join(out)
    return s if len(s) <= limit else s[: limit - 1] + "…"


@dataclass
class Message:
    i: int  # local row in the connection where the message starts
    side: int
    is_request: bool
    method: str = ""
    target: str = ""
    status: int = 0
    reason: str = ""
    connection: str = ""  # Connection header value, lowercased
    keep_alive_timeout: int | None = None
    end: int = 0  # local row of the message's last segment before the next message
    tls_sizes: tuple[int, ...] = ()  # an encrypted TLS exchange: its records' sizes

    @property
    def encrypted(self) -> bool:
        return bool(self.tls_sizes)

    @property
    def tls_records(self) -> int:
        return len(self.tls_sizes)

    @property
    def tls_bytes(self) -> int:
        return sum(self.tls_sizes)

    @property
    def line(self) -> str:
        if self.encrypted:
            n = self.tls_records
            return f"of {self.tls_bytes} bytes ({n} TLS record{'s' if n > 1 else ''})"
        if self.is_request:
            return f"{self.method} {self.target}"
        return f"{self.status} {self.reason}".strip()


def parse_start(data: bytes) -> Message | None:
    """A message whose first line starts the payload, or None (not HTTP/1.x, or mid-message).

    The head is read by the one HTTP/1 parser (`tcpwhy.decode.http1`); a diagnosis speaks
    only of HTTP/1.0 and 1.1 messages whose target is one word of at most 2,048 bytes."""
    if not data[:12].startswith((b"HTTP/1.", *METHOD_WORDS)):
        return None
    head = parse_head(data)
    if head is None or head.version not in _VERSIONS:
        return None
    if head.request:
        uri = head.uri or b""
        if not 0 < len(uri) <= _TARGET_LIMIT or uri.split() != [uri]:
            return None
        msg = Message(
            0, 0, True, method=printable(head.method or b"", 10), target=printable(uri, 120)
        )
    else:
        assert head.code is not None
        msg = Message(0, 0, False, status=head.code, reason=printable(head.phrase or b"", 40))
    if head.connection is not None:
        msg.connection = printable(head.connection.lower(), 40)
    if head.keep_alive is not None:
        k = _KA_TIMEOUT.search(head.keep_alive)
        if k:
            msg.keep_alive_timeout = int(k.group(1))
    return msg


def messages(conn: Conn) -> list[Message]:
    """HTTP/1.x messages of a connection in capture order (empty for other protocols); for
    TLS, its encrypted exchanges (`tcpwhy.diagnose.tls`: the turns of application data)."""
    cached: list[Message] | None = conn.cache.get("http")
    if cached is not None:
        return cached
    from tcpwhy.diagnose import tls

    tc = tls.of(conn)
    if tc is not None:
        conn.cache["http"] = tc.messages
        return tc.messages
    out: list[Message] = []
    seen_seq: set[tuple[int, int]] = set()
    hc = h2(conn)
    # upgraded to h2c: HTTP/1.1 until each side's head, HTTP/2 frames after it (read as
    # frames by `h2`, as on a prior-knowledge connection, never as HTTP/1 messages)
    last = hc.upgrade if hc is not None and hc.upgrade is not None else None
    for i in range(conn.n):
        if conn.plen[i] == 0 or conn.flags[i] & RST:
            continue
        if last is not None and i > last[conn.side[i]]:
            continue
        key = (conn.side[i], conn.seq[i])
        if key in seen_seq:  # a retransmission starts no new message
            continue
        seen_seq.add(key)
        msg = parse_start(conn.payload(i))
        if msg is not None:
            msg.i = i
            msg.side = conn.side[i]
            msg.end = i
            out.append(msg)
        elif out and out[-1].side == conn.side[i]:
            out[-1].end = i
    conn.cache["http"] = out
    return out


def request_at(conn: Conn, i: int) -> Message | None:
    """The request whose first segment is row i (or that row i continues).

    Same answer as looking it up in `messages`, without parsing every segment of the
    connection (a keep-alive connection carries thousands of requests): the message that
    started last at or before row i, and whether a segment of the same side continued it
    up to row i or beyond (the `end` of the message returned is then not filled in).
    """
    cached: list[Message] | None = conn.cache.get("http")
    if cached is None and conn.cache.get("tls", True) is not None:
        from tcpwhy.diagnose import tls

        if tls.of(conn) is not None:
            cached = messages(conn)
    if cached is None:
        hc = h2(conn)
        if hc is not None and hc.upgrade is not None:
            cached = messages(conn)
    if cached is not None:
        return _request_at(cached, conn.at("side", i), i)
    starts = _first_sends(conn)
    start: Message | None = None
    for j in range(i, -1, -1):
        if starts[j]:
            start = parse_start(conn.payload(j))
            if start is not None:
                start.i, start.side, start.end = j, conn.at("side", j), j
                break
    if start is None or not start.is_request or start.side != conn.at("side", i):
        return None  # the latest message is not a request of row i's side: no such request
    if start.i == i:
        return start
    for k in range(i, conn.n):
        if not starts[k]:
            continue
        if parse_start(conn.payload(k)) is not None:
            return None  # the next message begins before any segment continued this one
        if conn.at("side", k) == start.side:
            return start
    return None


def _request_at(msgs: list[Message], side: int, i: int) -> Message | None:
    best = None
    for m in msgs:
        if m.is_request and m.side == side and m.i <= i:
            best = m
    return best if best is not None and (best.i == i or best.end >= i) else None


def _first_sends(conn: Conn) -> npt.NDArray[np.bool_]:
    """Per local row: a data segment whose (side, seq) was not seen before, the segments
    `messages` looks at. From the connection's kept columns, and not as a list: `request_at`
    reads a few rows of connections that carry thousands of requests."""
    got: npt.NDArray[np.bool_] | None = conn.cache.get("http_first_sends")
    if got is None:
        data = np.flatnonzero(conn._np_data)
        seq = conn.cap.table["seq"][conn.rows[data]].astype(np.int64)
        side = conn._np_side[data]
        got = np.zeros(conn.n, np.bool_)
        if all((np.diff(seq[side == x]) > 0).all() for x in (0, 1)):
            # each side's sequence numbers only rise (no retransmission, no wrap): no (side,
            # seq) is seen twice, and the sort that finds the repeated ones is not needed
            got[data] = True
        else:
            key = side.astype(np.int64) << 32 | seq
            got[data[np.unique(key, return_index=True)[1]]] = True
        conn.cache["http_first_sends"] = got
    return got


def last_response_before(conn: Conn, i: int) -> Message | None:
    """The last HTTP/1 response that started before row i; None past the server's switch
    to HTTP/2 on an h2c-upgraded connection (its responses since are frames)."""
    hc = h2(conn)
    if hc is not None and hc.upgrade is not None and i > hc.upgrade[1]:
        return None
    best = None
    for m in messages(conn):
        if not m.is_request and m.i < i:
            best = m
    return best


@dataclass
class H2Conn:
    """An HTTP/2 connection: told by the client's connection preface in clear (h2c), by an
    HTTP/1.1 ``Upgrade: h2c`` request answered ``101`` (RFC 7540 §3.2: the request is
    stream 1, its answer comes in frames), or by the protocol TLS's ALPN settled on (h2),
    where its frames are encrypted."""

    how: str  # "h2c", "h2c upgrade" or "ALPN h2"
    frames: http2.Frames | None  # h2c only; `row` is the connection's local row
    # upgraded: local rows of the client's request head and the server's 101 head, by side
    upgrade: tuple[int, int] | None = None

    def goaway(self) -> tuple[int, int, int] | None:
        """The server's first GOAWAY: (local row, last stream id, error code)."""
        f = self.frames
        if f is None:
            return None
        idx = np.flatnonzero((f.ftype == http2.GOAWAY) & ~f.client & (f.last_sid >= 0))
        if not len(idx):
            return None
        k = int(idx[0])
        return int(f.row[k]), int(f.last_sid[k]), int(f.error[k])


def h2(conn: Conn) -> H2Conn | None:
    """The HTTP/2 view of a connection, None when it is not known to carry HTTP/2."""
    if "h2" in conn.cache:
        got: H2Conn | None = conn.cache["h2"]
        return got
    got = None
    sent = np.flatnonzero(conn._np_data)  # the kept mask, not three lists of every row
    first = int(sent[0]) if len(sent) else None
    skips: tuple[int, int] | None = None
    upgrade: tuple[int, int] | None = None
    if first is not None and conn.at("side", first) == 0:
        data = conn.payload(first)
        head = data[: len(http2.PREFACE)]
        if head and http2.PREFACE.startswith(head):
            skips = (len(http2.PREFACE), 0)
        elif head[:4].isupper() and (b"h2c" in data or b"H2C" in data):
            # a request asking for h2c: an upgrade if the server answers 101
            peer = next(
                (
                    i
                    for i in range(first + 1, conn.n)
                    if conn.side[i] != 0 and conn.plen[i] > 0 and not conn.flags[i] & RST
                ),
                None,
            )
            if peer is not None and conn.payload(peer).startswith(b"HTTP/1.1 101"):
                rows = conn.rows
                skips = http2.upgrade_heads(conn.cap.table, int(rows[first]), int(rows[peer]))
                upgrade = (first, peer) if skips is not None else None
    if skips is not None:
        side = conn.side
        rows = conn.rows.tolist()
        t = conn.cap.table
        f = http2.walk_rows(
            t,
            [rows[i] for i in range(conn.n) if side[i] == 0],
            [rows[i] for i in range(conn.n) if side[i] != 0],
            skips,
        )
        local = {r: i for i, r in enumerate(rows)}
        f.row = np.asarray([local[int(r)] for r in f.row.tolist()], np.int64)
        got = H2Conn("h2c" if upgrade is None else "h2c upgrade", f, upgrade)
    if got is None:
        from tcpwhy.diagnose import tls

        tc = tls.of(conn)
        if tc is not None and tc.alpn == [b"h2"]:
            got = H2Conn("ALPN h2", None)
    conn.cache["h2"] = got
    return got


def _frame_name(ftype: int) -> str:
    return "preface" if ftype < 0 else http2.TYPE_NAMES.get(ftype, f"type {ftype}")


def _describe_h2(conn: Conn, hc: H2Conn, i: int) -> str:
    """The HTTP/2 frames row i completes, and what the server's GOAWAY says of their
    streams (a stream above its last stream id was not processed: safe to retry)."""
    f = hc.frames
    assert f is not None
    at = np.flatnonzero(f.row == i)
    # the request that asked for the upgrade is stream 1 (RFC 7540 §3.2)
    first = hc.upgrade is not None and i == hc.upgrade[0]
    if first:
        m = messages(conn)
        line = f"{m[0].method} {m[0].target}" if m and m[0].is_request else "the request"
        what = f"{line}, the HTTP/1.1 request that asked to upgrade to h2c: HTTP/2 stream 1"
    elif not len(at):
        what = f"{conn.plen[i]} bytes of HTTP/2 frames"
    else:
        names = sorted({_frame_name(int(f.ftype[k])) for k in at})
        sids = sorted({int(f.sid[k]) for k in at if f.sid[k] > 0})
        what = "HTTP/2 " + "+".join(names)
        if sids:
            what += " on stream " + ", ".join(map(str, sids))
    note = "on a pooled, multiplexed HTTP/2 connection"
    g = hc.goaway()
    sent = {int(f.sid[k]) for k in at if f.client[k]} | ({1} if first else set())
    new = sorted({sid for sid in sent if g is not None and sid > g[1]})
    if g is not None and (g[0] < i or new):
        err = http2.ERROR_NAMES.get(g[2], str(g[2]))
        if g[0] < i:
            note += f" the server had ended with GOAWAY, last stream id {g[1]}, {err}"
        else:  # the request crossed the GOAWAY: the streams above its last id were cut off
            note += f"; the server's GOAWAY that crossed it said last stream id {g[1]}, {err}"
        if new:
            many = len(new) > 1
            note += (
                f"; so stream{'s' if many else ''} {', '.join(map(str, new))} "
                f"{'were' if many else 'was'} not processed and {'are' if many else 'is'} "
                "safe to retry"
            )
    return f"{what} ({note})"


def describe_request(conn: Conn, i: int) -> str:
    """`GET /second` for HTTP, else `a 73-byte request`: either reads as the subject of a
    sentence ("… was sent")."""
    hc = h2(conn)
    if hc is not None and hc.frames is not None:
        return _describe_h2(conn, hc, i)
    m = request_at(conn, i)
    if m is not None and m.encrypted:
        on_h2 = " on an HTTP/2 connection (ALPN h2: pooled, multiplexed)" if hc else ""
        return f"an encrypted request {m.line}{on_h2}"
    if m is not None:
        return f"{m.method} {m.target}"
    return f"a {conn.plen[i]}-byte request"
