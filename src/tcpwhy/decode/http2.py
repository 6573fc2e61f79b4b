"""HTTP/2 frames of cleartext (h2c) TCP streams.

A stream is HTTP/2 when its first payload starts with the client connection preface
(``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n``, RFC 9113 §3.4), on any port, or when an
HTTP/1.1 request asking ``Upgrade: h2c`` is answered ``101`` (`upgraded_streams`). Both
directions are then walked in sequence order: the client's after the 24-byte preface
(and, upgraded, its request head before it), the server's from its first byte (or after
its 101 head). Every frame starts with a 9-byte header (24-bit length, type, flags,
31-bit stream id). A frame is reported on the segment that carries its last byte, as
tshark shows it after reassembly; a frame's payload is read only for GOAWAY (last stream
id, error code) and RST_STREAM (error code), so a large DATA frame costs nothing but a skip.

Segments are taken in capture order: a retransmission (nothing new) is skipped, and a gap
(lost or not captured bytes, or bytes cut by the snaplen) ends the walk of that direction:
past it nothing is known of frame boundaries. HTTP/2 connections are few next to packets,
so this is plain Python over the rows of those streams only.

Payloads are attacker data: parsing is bounded, byte-level, and never trusts a length
beyond the 24 bits a frame header can say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import RST, SYN, PacketTable
from tcpwhy.tcp.seq import seq_add, seq_diff

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
TYPE_NAMES = {
    DATA: "DATA",
    HEADERS: "HEADERS",
    PRIORITY: "PRIORITY",
    RST_STREAM: "RST_STREAM",
    SETTINGS: "SETTINGS",
    PUSH_PROMISE: "PUSH_PROMISE",
    PING: "PING",
    GOAWAY: "GOAWAY",
    WINDOW_UPDATE: "WINDOW_UPDATE",
    CONTINUATION: "CONTINUATION",
}
ERROR_NAMES = {
    0: "NO_ERROR",
    1: "PROTOCOL_ERROR",
    2: "INTERNAL_ERROR",
    3: "FLOW_CONTROL_ERROR",
    4: "SETTINGS_TIMEOUT",
    5: "STREAM_CLOSED",
    6: "FRAME_SIZE_ERROR",
    7: "REFUSED_STREAM",
    8: "CANCEL",
    9: "COMPRESSION_ERROR",
    10: "CONNECT_ERROR",
    11: "ENHANCE_YOUR_CALM",
    12: "INADEQUATE_SECURITY",
    13: "HTTP_1_1_REQUIRED",
}
END_STREAM = 0x1
ACK = 0x1  # on SETTINGS and PING

I64 = npt.NDArray[np.int64]


@dataclass
class Frames:
    """One entry per frame (and one per client preface, type -1), in walk order: by TCP
    stream and direction, then stream order."""

    row: I64  # table row of the segment carrying the frame's last byte
    stream: I64  # TCP stream index
    client: npt.NDArray[np.bool_]  # sent by the side that sent the preface
    ftype: I64  # frame type, -1 for the preface
    flags: I64
    sid: I64  # HTTP/2 stream identifier (31 bits)
    length: I64
    last_sid: I64  # GOAWAY's last stream id, else -1
    error: I64  # GOAWAY's or RST_STREAM's error code, else -1
    h2_streams: I64  # the TCP streams found to be HTTP/2

    def __len__(self) -> int:
        return int(self.row.shape[0])


def _empty() -> Frames:
    z = np.zeros(0, np.int64)
    return Frames(z, z, np.zeros(0, bool), z, z, z, z, z, z, z)


def _from_rows(out: list[tuple[int, ...]], h2: I64) -> Frames:
    """The frames `_walk` collected (one tuple per frame), with the streams they came from."""
    if not out:
        f = _empty()
        f.h2_streams = h2
        return f
    a = np.asarray(out, np.int64)
    return Frames(
        a[:, 0],
        a[:, 1],
        a[:, 2].astype(bool),
        a[:, 3],
        a[:, 4],
        a[:, 5],
        a[:, 6],
        a[:, 7],
        a[:, 8],
        h2,
    )


def h2_streams(table: PacketTable, stream: npt.NDArray[Any]) -> I64:
    """TCP streams whose first payload (either direction) starts with the client preface."""
    data_rows = np.flatnonzero(table.data_mask())
    if not len(data_rows) or not table.has_payload():
        return np.zeros(0, np.int64)
    st = stream[data_rows].astype(np.int64)
    _, idx = np.unique(st, return_index=True)
    first = data_rows[idx]
    # the first payload holds the whole preface, or only its start and nothing else
    data, off, cap = table.gather(first, len(PREFACE))  # cap: at most the preface's
    if not data.size:
        return np.zeros(0, np.int64)
    whole = (cap == len(PREFACE)) | (cap == table["payload_len"][first].astype(np.int64))
    j = np.arange(len(PREFACE))
    b = data[np.minimum(off[:, None] + j[None, :], data.size - 1)]
    want = np.frombuffer(PREFACE, np.uint8)[None, :]
    same = ((b == want) | (j[None, :] >= cap[:, None])).all(axis=1)
    ok = (cap > 0) & whole & same
    return np.sort(st[idx][ok])


def _head(table: PacketTable, row: int) -> bytes | None:
    """An HTTP/1.1 head (through its blank line) at the start of a captured payload."""
    c = min(int(table["payload_cap"][row]), 8192)
    data = bytes(table.payload(row)[:c])
    end = data.find(b"\r\n\r\n")
    return data[: end + 4] if end >= 0 else None


def upgraded_streams(
    table: PacketTable, stream: npt.NDArray[Any], direction: npt.NDArray[Any]
) -> dict[int, tuple[int, int, int]]:
    """Streams upgraded to h2c by HTTP/1.1 (RFC 7540 §3.2): the client's first payload is a
    request without a body that asks ``Upgrade: h2c``, the server's first payload starts
    with a ``101`` response. Per stream: the client's direction, the bytes before its
    frames (request head and preface) and before the server's (the 101 head). Both heads
    must sit whole in their first segment, as clients and servers send them."""
    data_rows = np.flatnonzero(table.data_mask())
    if not len(data_rows) or not table.has_payload():
        return {}
    key = stream[data_rows].astype(np.int64) * 2 + direction[data_rows].astype(np.int64)
    _, idx = np.unique(key, return_index=True)
    rows = data_rows[idx]
    # the few answers that start "HTTP/1.1 101" (vectorised: a capture has many streams)
    tag = np.frombuffer(b"HTTP/1.1 101", np.uint8)
    j = np.arange(len(tag))
    data, off, _ = table.gather(rows, len(tag))
    is101 = np.zeros(len(rows), bool)
    if data.size:
        b = data[np.minimum(off[:, None] + j[None, :], data.size - 1)]
        is101 = (table["payload_cap"][rows] >= len(tag)) & (b == tag[None, :]).all(axis=1)
    first = {int(k): int(r) for k, r in zip(key[idx].tolist(), rows.tolist(), strict=True)}
    out: dict[int, tuple[int, int, int]] = {}
    for k, peer in zip(key[idx][is101].tolist(), rows[is101].tolist(), strict=True):
        s, sd = divmod(int(k), 2)
        d = 1 - sd  # the client's side
        r = first.get(s * 2 + d)
        if r is None or peer < r:
            continue  # the request comes first
        got = upgrade_heads(table, r, peer)
        if got is not None:
            out[s] = (d, *got)
    return out


def upgrade_heads(table: PacketTable, req_row: int, resp_row: int) -> tuple[int, int] | None:
    """Whether the first payloads of a connection's two sides, row `req_row` (the client's)
    and `resp_row` (the server's), are an HTTP/1.1 request without a body asking
    ``Upgrade: h2c`` and its ``101`` answer: the bytes before the client's frames (request
    head and preface) and before the server's (the 101 head), else None."""
    req = _head(table, req_row)
    if req is None or b" HTTP/1.1\r\n" not in req.split(b"\r\n", 1)[0] + b"\r\n":
        return None
    fields = {
        n.strip().lower(): v.strip().lower()
        for n, _, v in (line.partition(b":") for line in req.split(b"\r\n")[1:])
    }
    if fields.get(b"upgrade") != b"h2c" or fields.get(b"content-length", b"0") != b"0":
        return None
    if b"transfer-encoding" in fields:
        return None
    resp = _head(table, resp_row)
    if resp is None or not resp.startswith((b"HTTP/1.1 101 ", b"HTTP/1.1 101\r\n")):
        return None
    return len(req) + len(PREFACE), len(resp)


def _walk(
    table: PacketTable,
    rows: list[int],
    skip: int,
    out: list[tuple[int, ...]],
    meta: tuple[int, bool],
) -> None:
    """Frames of one direction (its rows in capture order) appended to `out`."""
    seq = table["seq"]
    plen = table["payload_len"]
    pcap = table["payload_cap"]
    fl = table["flags"]
    base = -1
    expect = 0  # next byte wanted, relative to the first segment
    head = bytearray()  # bytes of the current frame's header and first payload bytes
    want = 9  # bytes wanted in `head` before the frame is known (9, then 9 + kept payload)
    rest = -1  # payload bytes of the current frame still to skip once `head` is full
    stream, client = meta
    pending_preface = skip > 0 and client
    for r in rows:
        L = int(plen[r])
        f = int(fl[r])
        if L == 0 or f & RST:
            continue
        s = seq_add(int(seq[r]), 1 if f & SYN else 0)
        if base < 0:
            base = s
        rel = seq_diff(s, base)
        if rel < 0 or rel + L <= expect:
            continue  # before the first segment, or a retransmission
        if rel > expect or int(pcap[r]) < L:
            return  # a gap, or bytes the snaplen cut: frame boundaries are lost
        chunk = table.payload(r)[expect - rel :]
        expect = rel + L
        i = 0
        n = len(chunk)
        while i < n:
            if skip > 0:
                k = min(skip, n - i)
                skip -= k
                i += k
                if skip == 0 and pending_preface:
                    pending_preface = False
                    out.append((r, stream, client, -1, 0, 0, 0, -1, -1))
                continue
            if rest < 0:
                k = min(want - len(head), n - i)
                head += chunk[i : i + k]
                i += k
                if len(head) < want:
                    continue
                length = int.from_bytes(head[0:3], "big")
                if want == 9:
                    keep = min(length, 8) if head[3] in (GOAWAY, RST_STREAM) else 0
                    if keep:
                        want = 9 + keep
                        continue
                rest = length - (len(head) - 9)
            k = min(rest, n - i)
            rest -= k
            i += k
            if rest == 0:
                _emit(head, r, stream, client, out)
                head = bytearray()
                want = 9
                rest = -1


def _emit(head: bytearray, row: int, stream: int, client: bool, out: list[tuple[int, ...]]) -> None:
    length = int.from_bytes(head[0:3], "big")
    ftype, flags = head[3], head[4]
    sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    last_sid = err = -1
    if ftype == GOAWAY and len(head) >= 17:
        last_sid = int.from_bytes(head[9:13], "big") & 0x7FFFFFFF
        err = int.from_bytes(head[13:17], "big")
    elif ftype == RST_STREAM and len(head) >= 13:
        err = int.from_bytes(head[9:13], "big")
    out.append((row, stream, client, ftype, flags, sid, length, last_sid, err))


def walk_rows(
    table: PacketTable,
    client_rows: list[int],
    server_rows: list[int],
    skips: tuple[int, int] = (len(PREFACE), 0),
) -> Frames:
    """The frames of one h2c connection, its client's and server's rows in capture order;
    `skips` are the bytes before each side's first frame: the preface (prior knowledge),
    or as `upgrade_heads` says (the client's ending with the preface). `stream` is 0 in
    the result."""
    out: list[tuple[int, ...]] = []
    _walk(table, client_rows, skips[0], out, (0, True))
    _walk(table, server_rows, skips[1], out, (0, False))
    return _from_rows(out, np.zeros(1 if out else 0, np.int64))


def find_frames(
    table: PacketTable, stream: npt.NDArray[Any], direction: npt.NDArray[Any]
) -> Frames:
    """Every HTTP/2 frame of the h2c streams of `table` (`stream` and `direction`, 0/1, per
    row, as `FilterContext.streams` gives them)."""
    up = upgraded_streams(table, stream, direction)
    h2 = np.union1d(h2_streams(table, stream), np.asarray(list(up), np.int64))
    if not len(h2):
        return _empty()
    st = stream.astype(np.int64)
    sel = np.flatnonzero(np.isin(st, h2))
    out: list[tuple[int, ...]] = []
    for s in h2.tolist():
        rows = sel[st[sel] == s]
        if s in up:
            cdir, cskip, sskip = up[s]
        else:
            data = rows[table["payload_len"][rows] > 0]
            cdir, cskip, sskip = int(direction[data[0]]), len(PREFACE), 0
        for d in (cdir, 1 - cdir):
            mine = rows[direction[rows] == d].tolist()
            _walk(table, mine, cskip if d == cdir else sskip, out, (s, d == cdir))
    return _from_rows(out, h2)
