"""The server name of every connection, vectorised: the ClientHello's SNI, or the Host
header of cleartext HTTP, read from the first client payload of each stream.

`tcpwhy conns` writes one record per connection for captures of hundreds of thousands
of connections, so the names are found with whole-array numpy steps, never a Python
step per connection: the first client payload of each stream is picked out, the rows
that start with a TLS ClientHello are walked in lockstep through the hello's
length-prefixed vectors to the server_name extension, and the rows that start with an
HTTP request are searched for ``\\r\\nHost:`` from their line starts. The result is the
distinct names and one index into them per stream (`Names`): only the distinct names
become Python bytes, and memory follows the names, not the streams times `NAME_MAX`.

A ClientHello longer than its first segment (a large hello -- post-quantum key shares
pass 1,500 bytes and browsers shuffle their extensions -- or a sender's partial write of
a few bytes) is followed into the next segments of its direction in sequence order
(`Hellos`, a Python step for each of those few connections' segments until the hello's
record is whole), as tshark reassembles it; a gap, a byte cut by the snaplen or a record
longer than TLS allows ends the search without a name. Otherwise only the first
segment's captured bytes are read: a request whose Host header is in a later segment
has no name. Payloads are attacker data: every read is bounded by the captured bytes,
and names are bytes (escape before printing).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import SCAN_ROWS, first_where
from tcpwhy.decode.http1 import METHOD_WORDS
from tcpwhy.decode.table import SYN, PacketTable
from tcpwhy.tcp.seq import seq_add, seq_diff

NAME_MAX = 255
"""Longest name kept (a DNS name is at most 253 bytes; a Host value longer than this is cut)."""
HOST_WINDOW = 1024
"""Bytes of a request searched for its Host header."""
_EXT_MAX = 64
"""ClientHello extensions walked before giving up (browsers send about 20)."""
_BLOCK = 4096
"""Requests whose Host value is read at once (bounds memory: _BLOCK x _VALUE bytes)."""
_VALUE = NAME_MAX + 16
"""Bytes read after ``Host:`` for its value (blanks, the name, a port)."""
_SCAN = 1 << 22
"""Request bytes searched for newlines at once (`_host`)."""
PENDING_MAX = 4096
"""Connections whose ClientHello is followed past its first segment at the same time
(`Hellos`; each holds at most one record's bytes)."""
_RECORD_MAX = 18432
"""Longest TLS record taken (2^14 plus the expansion a peer may add, as `decode.tls`)."""

I64 = npt.NDArray[np.int64]
_Get = Callable[[I64], tuple[I64, npt.NDArray[np.bool_]]]


class Names:
    """Per stream, the index of its name in `words_` (b"" first: no name). Held as
    distinct words and one code per stream, not a row of `NAME_MAX` bytes per stream: a
    capture of millions of connections would need gigabytes for that."""

    def __init__(self, words: list[bytes], code: I64) -> None:
        self.words_ = words
        self.code = code

    @property
    def length(self) -> I64:
        """Bytes of each stream's name (0: none)."""
        sizes = np.array([len(w) for w in self.words_], np.int64)
        return sizes[self.code]

    @property
    def chars(self) -> npt.NDArray[np.uint8]:
        """Each stream's name as a row of `NAME_MAX` bytes (zero-padded)."""
        rows = np.zeros((len(self.words_), NAME_MAX), np.uint8)
        for i, w in enumerate(self.words_):
            rows[i, : len(w)] = np.frombuffer(w, np.uint8)
        return rows[self.code]

    def words(self) -> tuple[list[bytes], I64]:
        """The distinct names (b"" first) and each stream's index into them."""
        return self.words_, self.code

    def name(self, s: int) -> bytes:
        return self.words_[int(self.code[s])]


def _reader(table: PacketTable, off: I64, cap: I64) -> tuple[_Get, I64]:
    """`get(pos)`: the byte at absolute offset `pos` of each row, and whether it was
    captured (within the row's payload)."""
    data = table.data
    last = max(data.size - 1, 0)
    end = off + cap

    def get(pos: I64) -> tuple[I64, npt.NDArray[np.bool_]]:
        ok = (pos >= off) & (pos < end)
        v = data[np.clip(pos, 0, last)].astype(np.int64) if data.size else np.zeros_like(pos)
        return np.where(ok, v, 0), ok

    return get, end


def _sni(table: PacketTable, rows: I64) -> tuple[I64, I64]:
    """Absolute offset and length of the SNI host name of each ClientHello row (length 0
    where there is none in the captured bytes)."""
    off = table["payload_off"][rows].astype(np.int64)
    cap = table["payload_cap"][rows].astype(np.int64)
    get, end = _reader(table, off, cap)

    def u16(p: I64) -> tuple[I64, npt.NDArray[np.bool_]]:
        a, oa = get(p)
        b, ob = get(p + 1)
        return a * 256 + b, oa & ob

    ok = np.ones(len(rows), bool)
    p = off + 5 + 4 + 2 + 32  # record header, handshake header, version, random
    sid, o = get(p)
    ok &= o
    p = p + 1 + sid
    n, o = u16(p)
    ok &= o
    p = p + 2 + n
    comp, o = get(p)
    ok &= o
    p = p + 1 + comp
    total, o = u16(p)
    ok &= o
    p = p + 2
    ext_end = np.minimum(p + total, end)
    name_off = np.zeros(len(rows), np.int64)
    name_len = np.zeros(len(rows), np.int64)
    active = ok.copy()
    for _ in range(_EXT_MAX):
        active &= p + 4 <= ext_end
        if not active.any():
            break
        et, _o = u16(p)
        el, _o = u16(p + 2)
        hit = active & (et == 0)
        if hit.any():
            nt, o1 = get(p + 6)  # after the list's own length
            nl, o2 = u16(p + 7)
            good = hit & o1 & o2 & (nt == 0) & (nl > 0) & (p + 9 + nl <= end)
            good &= nl <= NAME_MAX
            name_off = np.where(good, p + 9, name_off)
            name_len = np.where(good, nl, name_len)
            active &= ~hit
        p = p + 4 + el
    return name_off, name_len


def _host(table: PacketTable, rows: I64) -> tuple[I64, I64]:
    """Absolute offset and length of the Host header's host (without a port) in each
    request row's first HOST_WINDOW captured bytes (length 0 where there is none).

    A compiled loop over each request's bytes (`tcpwhy.tcp.records_kernel.find_hosts`):
    on a capture of many short HTTP connections the whole-array search (`_host_numpy`, kept
    as its readable definition) cost more than tracking the connections."""
    from tcpwhy.tcp.records_kernel import find_hosts

    name_off = np.zeros(len(rows), np.int64)
    name_len = np.zeros(len(rows), np.int64)
    if not len(rows) or not table.data.size:
        return name_off, name_len
    data = table.data
    if data.dtype != np.uint8 or not data.flags.c_contiguous or not data.flags.writeable:
        return _host_numpy(table, rows)  # the compiled loop takes the reader's own buffers
    off = np.ascontiguousarray(table["payload_off"][rows], np.int64)
    cap = np.ascontiguousarray(table["payload_cap"][rows], np.int64)
    find_hosts(data, off, cap, HOST_WINDOW, NAME_MAX, _VALUE, name_off, name_len)
    return name_off, name_len


def _host_numpy(table: PacketTable, rows: I64) -> tuple[I64, I64]:
    """`_host` in whole-array numpy steps (what the compiled loop does, and its test).

    Only the line starts are looked at: the newlines of the rows' bytes are found in one
    pass over those bytes, and a header line is recognised from the few bytes after each,
    so the cost follows the bytes of the requests, not a window per row. The rows go in
    blocks of about `_SCAN` bytes: the pass indexes every byte with 8 bytes."""
    name_off = np.zeros(len(rows), np.int64)
    name_len = np.zeros(len(rows), np.int64)
    if not len(rows) or not table.data.size:
        return name_off, name_len
    cap = np.minimum(table["payload_cap"][rows].astype(np.int64), HOST_WINDOW)
    ends = np.cumsum(cap)
    lo = 0
    while lo < len(rows):
        base = int(ends[lo - 1]) if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base + _SCAN, side="right")))
        name_off[lo:hi], name_len[lo:hi] = _host_block(table, rows[lo:hi])
        lo = hi
    return name_off, name_len


def _host_block(table: PacketTable, rows: I64) -> tuple[I64, I64]:
    """`_host` of a block of rows."""
    n = len(rows)
    name_off = np.zeros(n, np.int64)
    name_len = np.zeros(n, np.int64)
    data = table.data
    if not n or not data.size:
        return name_off, name_len
    so = table["payload_off"][rows].astype(np.int64)
    cap = np.minimum(table["payload_cap"][rows].astype(np.int64), HOST_WINDOW)
    se = so + cap
    # the rows' bytes one after the other; a newline's row is the last starting before it
    # (of rows starting at one place, the last is the one with bytes)
    cstart = np.cumsum(cap) - cap
    total = int(cap.sum())
    idx = np.repeat(so - cstart, cap) + np.arange(total)
    at_nl = np.flatnonzero(data[idx] == 10)
    r = np.searchsorted(cstart, at_nl, side="right") - 1
    nl = idx[at_nl]
    keep = nl > so[r]
    nl, r = nl[keep], r[keep]
    last = data.size - 1

    def at(p: I64) -> I64:
        return data[np.minimum(p, last)].astype(np.int64)

    cr = at(nl - 1) == 13
    end = se[r]
    # "\r\n\r\n" (the blank line that ends the headers), "\r\nhost:" (any case)
    blank = cr & (nl + 2 < end) & (at(nl + 1) == 13) & (at(nl + 2) == 10)
    host = cr & (nl + 5 < end)
    for j, c in enumerate(b"host:"):
        b = at(nl + 1 + j)
        host &= (b == c) | ((c >= 97) & (c <= 122) & (b == c - 32))
    # newlines are in row order: a row's first of each kind is where its row number starts
    head_end = np.full(n, HOST_WINDOW, np.int64)
    q = np.flatnonzero(blank)
    u, fi = np.unique(r[q], return_index=True)
    head_end[u] = nl[q[fi]] - 1 - so[u]
    first = np.full(n, HOST_WINDOW, np.int64)
    line_end = np.zeros(n, np.int64)  # the next newline (or the row's end) after that Host
    q = np.flatnonzero(host)
    u, fi = np.unique(r[q], return_index=True)
    q = q[fi]
    first[u] = nl[q] - 1 - so[u]
    nxt = np.minimum(q + 1, len(nl) - 1)
    line_end[u] = np.where((q + 1 < len(nl)) & (r[nxt] == u), nl[nxt], se[u]) - so[u]
    hit = np.flatnonzero((first < HOST_WINDOW) & (first < head_end))
    pat = len(b"\r\nhost:")
    for a in range(0, len(hit), _BLOCK):
        h = hit[a : a + _BLOCK]
        start = first[h] + pat  # relative to the row's first byte
        # as wide as the longest line of the block (every line ends within it), at most _VALUE
        width = min(_VALUE, int((line_end[h] - start).max()) + 1)
        v = np.arange(width)
        rel = start[:, None] + v[None, :]
        inside2 = rel < (se[h] - so[h])[:, None]
        pos = so[h][:, None] + np.minimum(rel, HOST_WINDOW - 1)
        val = np.where(inside2, data[np.minimum(pos, last)], 0)
        # the value: skip blanks, run to the end of the line
        ws = (val == 32) | (val == 9)
        vstart = np.where(inside2 & ~ws, v[None, :], width).min(1)
        eol = (val == 13) | (val == 10) | ~inside2
        vend = np.where(eol, v[None, :], width).min(1)
        found = vend < width  # the line ends within the window (_VALUE bytes)
        inval = (v[None, :] >= vstart[:, None]) & (v[None, :] < vend[:, None])
        nonblank = inval & ~ws
        vend = np.where(nonblank.any(1), width - np.argmax(nonblank[:, ::-1], 1), vstart)
        # the port: cut at a single ':' unless the host is a bracketed IPv6 address
        colon = inval & (val == ord(":"))
        ncolon = colon.sum(1)
        first_colon = np.where(colon.any(1), colon.argmax(1), width)
        bracket = val[np.arange(len(h)), np.minimum(vstart, width - 1)] == ord("[")
        close = inval & (val == ord("]"))
        close_at = np.where(close.any(1), close.argmax(1), -1)
        vend = np.where(~bracket & (ncolon == 1), first_colon, vend)
        vstart2 = np.where(bracket & (close_at >= 0), vstart + 1, vstart)
        vend = np.where(bracket & (close_at >= 0), close_at, vend)
        ln = vend - vstart2
        good = found & (ln > 0) & (ln <= NAME_MAX)
        dest = h
        name_off[dest] = np.where(good, so[h] + start + vstart2, 0)
        name_len[dest] = np.where(good, ln, 0)
    return name_off, name_len


def _head(table: PacketTable, rows: I64) -> npt.NDArray[np.uint64]:
    """The first 16 captured bytes of each row as two little-endian words (0 past the end):
    enough for the longest method and its blank."""
    off = table["payload_off"][rows].astype(np.int64)
    cap = table["payload_cap"][rows].astype(np.int64)
    k = np.arange(16)
    b = table.data[np.clip(off[:, None] + k[None, :], 0, max(table.data.size - 1, 0))]
    b = np.where(k[None, :] < cap[:, None], b, 0).astype(np.uint8)
    head: npt.NDArray[np.uint64] = np.ascontiguousarray(b).view("<u8")
    return head


def _prefix(head: npt.NDArray[np.uint64], word: bytes) -> npt.NDArray[np.bool_]:
    """Rows whose first bytes (`_head`) are `word` (at most 16 bytes, no zero byte)."""
    out: npt.NDArray[np.bool_] = np.ones(len(head), bool)
    for i, part in enumerate((word[:8], word[8:16])):
        if part:
            mask = np.uint64((1 << (8 * len(part))) - 1)
            out &= (head[:, i] & mask) == np.uint64(int.from_bytes(part, "little"))
    return out


_METHOD_WORDS = [w[:16] for w in METHOD_WORDS]
_METHOD_VOCAB = np.frombuffer(b"".join(_METHOD_WORDS), np.uint8).copy()
_METHOD_OFF = np.cumsum([0] + [len(w) for w in _METHOD_WORDS], dtype=np.int64)


def kinds(table: PacketTable, rows: I64) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Which payload rows start with a TLS ClientHello (record type 22, version 3.x,
    handshake type 1), and which with an HTTP request (a method and a blank): a compiled
    loop (`tcpwhy.tcp.records_kernel.payload_kinds`; `_kinds_numpy` is the same in
    whole-array steps)."""
    from tcpwhy.tcp.records_kernel import payload_kinds

    data = table.data
    if (
        not data.size
        or data.dtype != np.uint8
        or not data.flags.c_contiguous
        or not data.flags.writeable
    ):
        return _kinds_numpy(table, rows)
    off = np.ascontiguousarray(table["payload_off"][rows], np.int64)
    cap = np.ascontiguousarray(table["payload_cap"][rows], np.int64)
    kind = np.empty(len(rows), np.uint8)
    payload_kinds(data, off, cap, _METHOD_VOCAB, _METHOD_OFF, kind)
    return kind == 1, kind == 2


def _kinds_numpy(
    table: PacketTable, rows: I64
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """`kinds` in whole-array numpy steps."""
    full = _head(table, rows)
    head = full[:, 0]
    cap = table["payload_cap"][rows]
    tls = (head & np.uint64(0xFFFF)) == np.uint64(0x0316)
    hello = tls & (((head >> np.uint64(16)) & np.uint64(0xFF)) <= 4) & (cap > 5)
    hello &= ((head >> np.uint64(40)) & np.uint64(0xFF)) == 1
    request = np.zeros(len(rows), bool)
    for w in METHOD_WORDS:
        request |= _prefix(full, w)
    return hello, request & ~hello


def partial_hellos(table: PacketTable, rows: I64, name_len: I64) -> npt.NDArray[np.bool_]:
    """Rows whose captured payload is whole and starts a TLS handshake record (as much of
    ``16 03 0x .. .. 01`` as it holds) that ends after the row, and named nothing: the
    ClientHello goes on in the next segments (`Hellos`). Vectorised."""
    if not len(rows) or not table.data.size:
        return np.zeros(len(rows), bool)
    off = table["payload_off"][rows].astype(np.int64)
    cap = table["payload_cap"][rows].astype(np.int64)
    plen = table["payload_len"][rows].astype(np.int64)
    last = table.data.size - 1

    def byte(k: int) -> npt.NDArray[np.int64]:
        # a byte column at a time: a (rows, 6) block of 64-bit indices and values was
        # 20 MB of temporaries at 200,000 connections
        return table.data[np.minimum(off + k, last)].astype(np.int64)

    start = (cap == plen) & (cap >= 1) & (byte(0) == 22)
    start &= ((cap <= 1) | (byte(1) == 3)) & ((cap <= 2) | (byte(2) <= 4))
    start &= (cap <= 5) | (byte(5) == 1)
    reclen = byte(3) * 256 + byte(4)
    beyond = (cap < 5) | (cap < 5 + reclen)
    out: npt.NDArray[np.bool_] = start & beyond & (name_len == 0)
    return out


def hello_sni(rec: bytes) -> bytes:
    """The SNI host name of a whole ClientHello record (header included): `_sni` reads it as
    the payload of one segment, so a hello split over segments follows the one rule of a
    hello in a segment (the first entry of the server_name extension if it is a host name of
    1 to `NAME_MAX` bytes inside the record); b"" otherwise."""
    if len(rec) < 9 or rec[0] != 22 or rec[5] != 1:
        return b""
    one = PacketTable(
        {"payload_off": np.zeros(1, np.uint64), "payload_cap": np.array([len(rec)], np.uint32)},
        np.frombuffer(rec, np.uint8),
    )
    off, n = _sni(one, np.zeros(1, np.int64))
    return rec[int(off[0]) : int(off[0]) + int(n[0])]


class _Partial:
    """The bytes of one ClientHello record so far, who sends them and the next one due."""

    __slots__ = ("buf", "nxt", "src")

    def __init__(self, src: tuple[int, int, int], nxt: int, buf: bytes) -> None:
        self.src = src
        self.nxt = nxt
        self.buf = bytearray(buf)


class Hellos:
    """ClientHellos longer than their first segment, by key (a stream or a connection's
    uid), followed through the next segments of their sender until the record is whole:
    then its SNI is the connection's name, as tshark gives it once it has reassembled the
    hello. Only the rare connections whose hello did not fit take a Python step per
    segment; at most `PENDING_MAX` are followed at once (later ones get no name)."""

    def __init__(self) -> None:
        self._p: dict[int, _Partial] = {}

    def __len__(self) -> int:
        return len(self._p)

    @staticmethod
    def _src(table: PacketTable, r: int) -> tuple[int, int, int]:
        return (int(table["src_hi"][r]), int(table["src_lo"][r]), int(table["sport"][r]))

    @staticmethod
    def _seq(table: PacketTable, r: int) -> int:
        syn = 1 if int(table["flags"][r]) & SYN else 0
        return int(seq_add(int(table["seq"][r]), syn))

    def start(self, table: PacketTable, rows: I64, keys: npt.NDArray[np.integer]) -> None:
        """Follow the hellos that `rows` (each a connection's first payload, whole, found by
        `partial_hellos`) begin, one per key."""
        for r, key in zip(rows.tolist(), keys.tolist(), strict=True):
            if len(self._p) >= PENDING_MAX:
                break
            L = int(table["payload_len"][r])
            self._p[key] = _Partial(
                self._src(table, r), seq_add(self._seq(table, r), L), table.payload(r)
            )

    def feed(
        self, table: PacketTable, rows: I64, keys: npt.NDArray[np.integer]
    ) -> tuple[I64, list[bytes]]:
        """Take the segments among `rows` (payload rows in capture order, `keys` theirs) that
        continue a followed hello; the keys whose hello ended (whole, or given up) and the
        name each gave (b"": none). Segments of the other direction, retransmissions and
        the first segment itself add nothing."""
        if not self._p or not len(rows):
            return np.zeros(0, np.int64), []
        keys = np.asarray(keys, np.int64)
        watch = np.fromiter(self._p, np.int64, len(self._p))
        sel = np.flatnonzero(np.isin(keys, watch))
        done: list[int] = []
        names: list[bytes] = []
        for r, key in zip(rows[sel].tolist(), keys[sel].tolist(), strict=True):
            part = self._p.get(key)
            if part is None or self._src(table, r) != part.src:
                continue
            L = int(table["payload_len"][r])
            d = seq_diff(self._seq(table, r), part.nxt)
            if d + L <= 0:
                continue  # nothing new
            name: bytes | None = None
            if d > 0 or int(table["payload_cap"][r]) < L:
                name = b""  # bytes lost or not captured: the hello is not read
            else:
                part.buf += table.payload(r)[-d:]
                part.nxt = seq_add(part.nxt, d + L)
                name = self._check(part.buf)
            if name is not None:
                del self._p[key]
                done.append(key)
                names.append(name)
        return np.array(done, np.int64), names

    @staticmethod
    def _check(buf: bytearray) -> bytes | None:
        """The name once the record is whole (b"" if it is no ClientHello); None: not yet."""
        head = buf[:6]
        if (
            head[0] != 22
            or (len(head) > 1 and head[1] != 3)
            or (len(head) > 2 and head[2] > 4)
            or (len(head) > 5 and head[5] != 1)
        ):
            return b""
        if len(buf) < 5:
            return None
        end = 5 + buf[3] * 256 + buf[4]
        if end > 5 + _RECORD_MAX:
            return b""
        return hello_sni(bytes(buf[:end])) if len(buf) >= end else None

    def forget(self, keys: npt.NDArray[np.integer]) -> None:
        """Stop following these keys (their records were written)."""
        if self._p:
            for key in np.asarray(keys, np.int64).tolist():
                self._p.pop(key, None)


def locate(
    table: PacketTable, rows: I64, hello: npt.NDArray[np.bool_], request: npt.NDArray[np.bool_]
) -> tuple[I64, I64]:
    """Absolute offset and length of the name in each row: the SNI of `hello` rows, the
    Host of `request` rows (length 0: none)."""
    name_off = np.zeros(len(rows), np.int64)
    name_len = np.zeros(len(rows), np.int64)
    for sel, find in ((hello, _sni), (request, _host)):
        i = np.flatnonzero(sel)
        if len(i):
            name_off[i], name_len[i] = find(table, rows[i])
    return name_off, name_len


def distinct(data: npt.NDArray[np.uint8], off: I64, length: I64) -> tuple[list[bytes], I64]:
    """The distinct names at (`off`, `length`) in `data` (b"" first, then in the order of
    their length and bytes) and each one's index: grouped by a compiled hash of their
    bytes (`tcpwhy.tcp.records_kernel.name_groups`), so that only the distinct names are
    cut out and sorted."""
    from tcpwhy.tcp.records_kernel import name_groups

    code = np.zeros(len(off), np.int64)
    named = np.flatnonzero(length > 0)
    if not len(named):
        return [b""], code
    o = np.ascontiguousarray(off[named], np.int64)
    ln = np.ascontiguousarray(length[named], np.int64)
    if not (data.flags.c_contiguous and data.flags.writeable and data.dtype == np.uint8):
        # what the compiled loop cannot take (a file's bytes, read-only): the names' bytes
        # side by side, each index clipped into `data`
        at = np.zeros(len(ln), np.int64)
        np.cumsum(ln[:-1], out=at[1:])
        pos = np.repeat(o - at, ln) + np.arange(int(ln.sum()))
        data, o = data[np.clip(pos, 0, max(data.size - 1, 0))], at
    table = np.full(1 << max(4, (2 * len(named) - 1).bit_length()), -1, np.int64)
    rep = np.empty(len(named), np.int64)
    group = np.empty(len(named), np.int64)
    n = name_groups(data, o, ln, table, rep, group)
    last = max(data.size - 1, 0)
    found = [bytes(data[np.clip(np.arange(o[r], o[r] + ln[r]), 0, last)]) for r in rep[:n].tolist()]
    order = sorted(range(n), key=lambda g: (len(found[g]), found[g]))
    place = np.empty(n, np.int64)
    place[order] = np.arange(1, n + 1)
    code[named] = place[group]
    return [b""] + [found[g] for g in order], code


def _distinct_numpy(data: npt.NDArray[np.uint8], off: I64, length: I64) -> tuple[list[bytes], I64]:
    """`distinct` in whole-array numpy steps (its test's reference): rows as wide as the
    longest name, sorted as fixed-width bytes (gathered in blocks of `_BLOCK` rows: the
    index of a gather is 8 bytes per name byte)."""
    code = np.zeros(len(off), np.int64)
    named = np.flatnonzero(length > 0)
    if not len(named):
        return [b""], code
    ln = length[named]
    width = int(ln.max())
    k = np.arange(width)
    keyed = np.zeros((len(named), width + 1), np.uint8)
    keyed[:, 0] = ln
    last = max(data.size - 1, 0)
    for lo in range(0, len(named), _BLOCK):
        part = named[lo : lo + _BLOCK]
        vals = data[np.clip(off[part, None] + k[None, :], 0, last)]
        keyed[lo : lo + len(part), 1:] = np.where(
            k[None, :] < ln[lo : lo + len(part), None], vals, 0
        )
    uniq, inv = np.unique(keyed.view(np.dtype((np.void, width + 1))), return_inverse=True)
    words = [b""] + [w[1 : 1 + w[0]] for w in (bytes(u) for u in uniq.tolist())]
    code[named] = inv.reshape(-1) + 1
    return words, code


def server_names(
    table: PacketTable,
    stream: npt.NDArray[np.integer],
    client: npt.NDArray[np.bool_],
    nstreams: int | None = None,
) -> Names:
    """The name each stream's client gave its server (see the module docstring).
    `client`: per row, whether it was sent by the stream's client (originator)."""
    n = len(table)
    ns = nstreams if nstreams is not None else (int(stream.max()) + 1 if n else 0)
    code = np.zeros(ns, np.int64)
    if not n or not table.has_payload():
        return Names([b""], code)
    head = _first_client_payloads(table, stream, client, ns)
    sids = np.flatnonzero(head >= 0)
    if not len(sids):
        return Names([b""], code)
    # each stream's first client payload, its bytes gathered (wherever the table keeps
    # them), a block of streams at a time: all at once, the bytes and their index were
    # 26 MB at `analyze`'s peak on 210,000 connections
    found: dict[bytes, int] = {}  # the blocks' names, numbered as they come
    parts = []
    for lo in range(0, len(sids), _NAME_STREAMS):
        blk = sids[lo : lo + _NAME_STREAMS]
        first = table.rows(head[blk], ("payload_len",))
        if not first.data.size:
            continue
        rows = np.arange(len(first), dtype=np.int64)
        name_off, name_len = locate(first, rows, *kinds(first, rows))
        got_words, got = distinct(first.data, name_off, name_len)
        ids = np.array([found.setdefault(w, len(found)) for w in got_words], np.int64)
        code[blk] = ids[got]
        # hellos longer than their first segment: the stream's next client segments
        parts.append(blk[partial_hellos(first, rows, name_len)])
        del first, rows, name_off, name_len, got
    # numbered as one pass over every stream numbers them (`distinct`: b"" first, then by
    # length and bytes), so the words are in the same order however the blocks fell
    words = sorted(found, key=lambda w: (len(w), w))
    if not words or words[0] != b"":
        words.insert(0, b"")
    index = {w: i for i, w in enumerate(words)}
    code[sids] = np.array([index[w] for w in found] or [0], np.int64)[code[sids]]
    part_sids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if len(part_sids):
        hellos = Hellos()
        hellos.start(table, head[part_sids], part_sids)
        later = _client_payloads_of(table, stream, client, part_sids)
        done, late = hellos.feed(table, later, np.asarray(stream[later], np.int64))
        for sid, name in zip(done.tolist(), late, strict=True):
            if name:
                code[sid] = index.setdefault(name, len(words))
                if code[sid] == len(words):
                    words.append(name)
    return Names(words, code)


_NAME_STREAMS = 1 << 15
"""Streams whose first client payloads `server_names` reads back at once."""

_PAYLOAD_ROWS = SCAN_ROWS // 4
"""Rows scanned at once for client payloads (a quarter of the usual block: `analyze` is at
its highest memory here)."""


def _client_payloads(
    table: PacketTable, client: npt.NDArray[np.bool_], lo: int, hi: int
) -> npt.NDArray[np.int64]:
    """Rows lo..hi that carry client payload (not a reset's)."""
    sl = slice(lo, hi)
    mask = table.data_mask(lo, hi) & client[sl]
    return np.flatnonzero(mask) + lo


def _first_client_payloads(
    table: PacketTable, stream: npt.NDArray[np.integer], client: npt.NDArray[np.bool_], ns: int
) -> I64:
    """Per stream, the row of its first client payload, or -1: the rows' mask made a block at
    a time (no capture-sized temporaries), the first of each stream found in one compiled pass
    (`first_where`; a sort of each block's streams took 0.1 s of 4.3 M rows)."""
    n = len(table)
    mask = np.empty(n, np.bool_)
    for lo in range(0, n, _PAYLOAD_ROWS):
        sl = slice(lo, lo + _PAYLOAD_ROWS)
        np.logical_and(table.data_mask(sl.start, sl.stop), client[sl], out=mask[sl])
    return first_where(mask, stream, ns).astype(np.int64)


def _client_payloads_of(
    table: PacketTable,
    stream: npt.NDArray[np.integer],
    client: npt.NDArray[np.bool_],
    sids: I64,
) -> I64:
    """The client payload rows of streams `sids`, in row order."""
    got = []
    for lo in range(0, len(table), _PAYLOAD_ROWS):
        rows = _client_payloads(table, client, lo, lo + _PAYLOAD_ROWS)
        got.append(rows[np.isin(stream[rows], sids)])
    return np.concatenate(got) if got else np.zeros(0, np.int64)


def client_rows(
    table: PacketTable, stream: npt.NDArray[np.integer], direction: npt.NDArray[np.integer]
) -> npt.NDArray[np.bool_]:
    """Rows sent by their stream's client: the direction of its first SYN without ACK, or
    of its first packet when the capture missed the SYN."""
    from tcpwhy.decode.table import ACK, SYN

    n = len(table)
    stream = np.asarray(stream, np.int64)
    direction = np.asarray(direction, np.int64)
    if not n:
        return np.zeros(0, bool)
    ns = int(stream.max()) + 1
    flags = table["flags"].astype(np.int64)
    syn = np.flatnonzero(((flags & SYN) != 0) & ((flags & ACK) == 0))
    pick = np.full(ns, n, np.int64)
    np.minimum.at(pick, stream[syn], syn)
    first = np.full(ns, n, np.int64)
    np.minimum.at(first, stream, np.arange(n))
    row = np.where(pick < n, pick, first)
    out: npt.NDArray[np.bool_] = direction == direction[row[stream]]
    return out
