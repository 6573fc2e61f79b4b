"""The server name of every connection, vectorised: the ClientHello's SNI, or the Host
header of cleartext HTTP, read from the first client payload of each stream.

`tcpwhy conns` writes one record per connection for captures of hundreds of thousands
of connections, so the names are found with whole-array numpy steps, never a Python
step per connection: the first client payload of each stream is picked out, the rows
that start with a TLS ClientHello are walked in lockstep through the hello's
length-prefixed vectors to the server_name extension, and the rows that start with an
HTTP request are searched for ``\\r\\nHost:`` in fixed-width windows. The result is one
fixed-width row of bytes per stream (`Names`); only the distinct names become Python
bytes (`Names.words`).

Only the first segment's captured bytes are read: a name past the end of that segment
(a ClientHello longer than one segment whose server_name extension comes late, or a
request whose Host header is in a later segment) is not found, and the name stays
empty. Payloads are attacker data: every read is bounded by the captured bytes, and
names are bytes (escape before printing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import RST, PacketTable
from tcpwhy.filter.http import METHODS

NAME_MAX = 255
"""Longest name kept (a DNS name is at most 253 bytes; a Host value longer than this is cut)."""
HOST_WINDOW = 1024
"""Bytes of a request searched for its Host header."""
_EXT_MAX = 64
"""ClientHello extensions walked before giving up (browsers send about 20)."""
_BLOCK = 4096
"""Rows searched at once for a Host header (bounds memory: _BLOCK x HOST_WINDOW bytes)."""
_VALUE = NAME_MAX + 16
"""Bytes read after ``Host:`` for its value (blanks, the name, a port)."""
"""Rows searched at once for a Host header (bounds memory: _BLOCK x HOST_WINDOW bytes)."""

I64 = npt.NDArray[np.int64]
_Get = Callable[[I64], tuple[I64, npt.NDArray[np.bool_]]]


@dataclass
class Names:
    """Per stream: `length[s]` bytes of `chars[s]` (0: no name)."""

    chars: npt.NDArray[np.uint8]  # (nstreams, NAME_MAX)
    length: I64

    def words(self) -> tuple[list[bytes], I64]:
        """The distinct names (b"" first) and each stream's index into them."""
        n = len(self.length)
        if not n:
            return [b""], np.zeros(0, np.int64)
        chars = np.where(np.arange(NAME_MAX)[None, :] < self.length[:, None], self.chars, 0)
        keyed = np.ascontiguousarray(
            np.concatenate([self.length[:, None], chars], axis=1).astype(np.uint8)
        )
        # one fixed-width bytes value per row: sorted as strings, far faster than axis=0
        uniq, inv = np.unique(keyed.view(np.dtype((np.void, NAME_MAX + 1))), return_inverse=True)
        raw = [bytes(u) for u in uniq.tolist()]
        words = [w[1 : 1 + w[0]] for w in raw]
        code = inv.reshape(-1).astype(np.int64)
        if words[0] != b"":  # every stream named: keep b"" as word 0 all the same
            words.insert(0, b"")
            code += 1
        return words, code

    def name(self, s: int) -> bytes:
        return self.chars[s, : int(self.length[s])].tobytes()


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


def _lower(b: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    upper = (b >= 65) & (b <= 90)
    out: npt.NDArray[np.uint8] = np.where(upper, b + 32, b).astype(np.uint8)
    return out


def _host(table: PacketTable, rows: I64) -> tuple[I64, I64]:
    """Absolute offset and length of the Host header's host (without a port) in each
    request row's first HOST_WINDOW captured bytes (length 0 where there is none)."""
    name_off = np.zeros(len(rows), np.int64)
    name_len = np.zeros(len(rows), np.int64)
    pat = np.frombuffer(b"\r\nhost:", np.uint8)
    k = np.arange(HOST_WINDOW)
    for a in range(0, len(rows), _BLOCK):
        r = rows[a : a + _BLOCK]
        off = table["payload_off"][r].astype(np.int64)
        cap = np.minimum(table["payload_cap"][r].astype(np.int64), HOST_WINDOW)
        win = table.data[np.clip(off[:, None] + k[None, :], 0, table.data.size - 1)]
        win = np.where(k[None, :] < cap[:, None], win, 0).astype(np.uint8)
        low = _lower(win)
        # first "\r\nhost:" before the blank line that ends the headers
        m = np.ones((len(r), HOST_WINDOW - len(pat)), bool)
        for j, c in enumerate(pat):
            m &= low[:, j : HOST_WINDOW - len(pat) + j] == c
        blank = np.ones((len(r), HOST_WINDOW - 3), bool)
        for j, c in enumerate(b"\r\n\r\n"):
            blank &= win[:, j : HOST_WINDOW - 3 + j] == c
        head_end = np.where(blank.any(1), blank.argmax(1), HOST_WINDOW)
        found = m.any(1)
        at = m.argmax(1)
        found &= at < head_end
        start = at + len(pat)
        # the value, from a window after "host:": skip blanks, run to the end of the line
        v = np.arange(_VALUE)
        pos = start[:, None] + v[None, :]
        val = win[np.arange(len(r))[:, None], np.minimum(pos, HOST_WINDOW - 1)]
        inside = pos < cap[:, None]
        ws = (val == 32) | (val == 9)
        vstart = np.where(inside & ~ws, v[None, :], _VALUE).min(1)
        eol = (val == 13) | (val == 10) | ~inside
        vend = np.where(eol, v[None, :], _VALUE).min(1)
        found &= vend < _VALUE  # the line ends within the window
        inval = (v[None, :] >= vstart[:, None]) & (v[None, :] < vend[:, None])
        nonblank = inval & ~ws
        vend = np.where(nonblank.any(1), _VALUE - np.argmax(nonblank[:, ::-1], 1), vstart)
        # the port: cut at a single ':' unless the host is a bracketed IPv6 address
        colon = inval & (val == ord(":"))
        ncolon = colon.sum(1)
        first_colon = np.where(colon.any(1), colon.argmax(1), _VALUE)
        bracket = val[np.arange(len(r)), np.minimum(vstart, _VALUE - 1)] == ord("[")
        close = inval & (val == ord("]"))
        close_at = np.where(close.any(1), close.argmax(1), -1)
        vend = np.where(~bracket & (ncolon == 1), first_colon, vend)
        vstart2 = np.where(bracket & (close_at >= 0), vstart + 1, vstart)
        vend = np.where(bracket & (close_at >= 0), close_at, vend)
        vstart2 = vstart2 + start
        vend = vend + start
        ln = vend - vstart2
        good = found & (ln > 0) & (ln <= NAME_MAX)
        name_off[a : a + _BLOCK] = np.where(good, off + vstart2, 0)
        name_len[a : a + _BLOCK] = np.where(good, ln, 0)
    return name_off, name_len


def _starts_with(table: PacketTable, rows: I64, words: list[bytes]) -> npt.NDArray[np.bool_]:
    off = table["payload_off"][rows].astype(np.int64)
    cap = table["payload_cap"][rows].astype(np.int64)
    get, _ = _reader(table, off, cap)
    width = max(len(w) for w in words)
    got = [get(off + j) for j in range(width)]
    out = np.zeros(len(rows), bool)
    for w in words:
        m = np.ones(len(rows), bool)
        for j, c in enumerate(w):
            v, o = got[j]
            m &= o & (v == c)
        out |= m
    return out


def server_names(
    table: PacketTable,
    stream: npt.NDArray[np.integer],
    client: npt.NDArray[np.bool_],
    nstreams: int | None = None,
) -> Names:
    """The name each stream's client gave its server (see the module docstring).
    `client`: per row, whether it was sent by the stream's client (originator)."""
    n = len(table)
    stream = np.asarray(stream, np.int64)
    ns = nstreams if nstreams is not None else (int(stream.max()) + 1 if n else 0)
    chars = np.zeros((ns, NAME_MAX), np.uint8)
    length = np.zeros(ns, np.int64)
    if not n or not table.data.size:
        return Names(chars, length)
    flags = table["flags"].astype(np.int64)
    data = np.flatnonzero((table["payload_len"] > 0) & ((flags & RST) == 0) & client)
    if not len(data):
        return Names(chars, length)
    st = stream[data]
    _, idx = np.unique(st, return_index=True)
    first = data[idx]  # each stream's first client payload
    sids = st[idx]
    hello = _starts_with(table, first, [b"\x16\x03"])
    hello &= _starts_with(table, first, [b"\x16\x03\x00"]) | _starts_with(
        table, first, [bytes([22, 3, v]) for v in range(1, 5)]
    )
    off = table["payload_off"][first].astype(np.int64)
    get, _ = _reader(table, off, table["payload_cap"][first].astype(np.int64))
    hs_type, _ok = get(off + 5)
    hello &= hs_type == 1
    request = ~hello & _starts_with(table, first, [m + b" " for m in METHODS])
    name_off = np.zeros(len(first), np.int64)
    name_len = np.zeros(len(first), np.int64)
    for sel, find in ((hello, _sni), (request, _host)):
        i = np.flatnonzero(sel)
        if len(i):
            name_off[i], name_len[i] = find(table, first[i])
    named = np.flatnonzero(name_len > 0)
    if len(named):
        k = np.arange(NAME_MAX)
        pos = name_off[named, None] + k[None, :]
        vals = table.data[np.clip(pos, 0, table.data.size - 1)]
        vals = np.where(k[None, :] < name_len[named, None], vals, 0).astype(np.uint8)
        chars[sids[named]] = vals
        length[sids[named]] = name_len[named]
    return Names(chars, length)


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
