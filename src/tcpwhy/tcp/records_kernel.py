"""Compiled loops over connection records and their first payloads, for `tcpwhy.tcp`.

`community_ids` computes Community ID v1 hashes (SHA-1 of the ordered 5-tuple, base64)
for a batch in one call: one 64-byte SHA-1 block per connection, as the tuple of a TCP
connection is at most 40 bytes. `find_hosts` and `payload_kinds` find what names a
connection's server in its first payload (`tcpwhy.tcp.server_names`): an HTTP request's
Host, or a TLS ClientHello to read further; `name_groups` groups the names found. `kept_rows`
and `group_kept` find the packets the connection builder kept for a batch of records.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tcpwhy.intrinsics import rotl32
from tcpwhy.native import kernel, njit

COMMUNITY_ID_WIDTH = 28
"""Characters of a Community ID v1 hash (base64 of a SHA-1 digest), without the ``1:``."""


@njit(cache=True, inline="always")
def _ult(x: int, y: int) -> bool:
    """x < y, both int64 read as unsigned 64 bits."""
    if (x < 0) != (y < 0):
        return y < 0
    return x < y


_B64 = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", np.uint8
).copy()
"""Base64's alphabet, looked up: a chain of comparisons per character cost more than the
SHA-1 itself (its branches are taken at random)."""


@kernel("i8 i8 i8[:] i8[:] i8[:] i8[:] i8[:] i8[:] u1[:,:] -> none", nogil=True)
def community_ids(
    seed: int, proto: int, ohi: Any, olo: Any, op: Any, rhi: Any, rlo: Any, rp: Any, out: Any
) -> None:
    """Community ID v1 of each row (without the ``1:`` version prefix) into ``out[i, :28]``:
    base64 of SHA-1 over seed (2 bytes), the two addresses (4 bytes each when both are
    IPv4-mapped, else 16), protocol, a zero byte and the two ports, the endpoint with the
    lower address (then port) first. Addresses are the packet table's two 64-bit halves.

    The message is at most 40 bytes, so its SHA-1 is one block, whose sixteen big-endian
    words are put together from the fields here (16 bytes then the 0x80 byte and the bit
    length 128 for IPv4, 40 bytes and 320 for IPv6). 0.70 s -> 0.31 s for 3 million rows,
    with the alphabet looked up (`_B64`)."""
    n = ohi.shape[0]
    m32 = 0xFFFFFFFF
    w = np.zeros(80, np.int64)
    for i in range(n):
        ah, al, ap = ohi[i], olo[i], op[i]
        bh, bl, bp = rhi[i], rlo[i], rp[i]
        if _ult(bh, ah) or (bh == ah and (_ult(bl, al) or (bl == al and bp < ap))):
            ah, al, ap, bh, bl, bp = bh, bl, bp, ah, al, ap
        ports = ((ap & 0xFFFF) << 16) | (bp & 0xFFFF)
        pr = (proto & 0xFF) << 8  # and the zero byte of padding
        for t in range(16):
            w[t] = 0
        if ah == 0 and bh == 0 and (al >> 32) & m32 == 0xFFFF and (bl >> 32) & m32 == 0xFFFF:
            a4, b4 = al & m32, bl & m32
            w[0] = ((seed & 0xFFFF) << 16) | (a4 >> 16)
            w[1] = ((a4 & 0xFFFF) << 16) | (b4 >> 16)
            w[2] = ((b4 & 0xFFFF) << 16) | pr
            w[3] = ports
            w[4] = 0x80000000
            w[15] = 128
        else:
            w[0] = ((seed & 0xFFFF) << 16) | ((ah >> 48) & 0xFFFF)
            w[1] = (ah >> 16) & m32
            w[2] = ((ah & 0xFFFF) << 16) | ((al >> 48) & 0xFFFF)
            w[3] = (al >> 16) & m32
            w[4] = ((al & 0xFFFF) << 16) | ((bh >> 48) & 0xFFFF)
            w[5] = (bh >> 16) & m32
            w[6] = ((bh & 0xFFFF) << 16) | ((bl >> 48) & 0xFFFF)
            w[7] = (bl >> 16) & m32
            w[8] = ((bl & 0xFFFF) << 16) | pr
            w[9] = ports
            w[10] = 0x80000000
            w[15] = 320
        for t in range(16, 80):
            w[t] = rotl32(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1)
        a, b, c, d, e = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0
        for t in range(20):
            tmp = (rotl32(a, 5) + (d ^ (b & (c ^ d))) + e + 0x5A827999 + w[t]) & m32
            e, d, c, b, a = d, c, rotl32(b, 30), a, tmp
        for t in range(20, 40):
            tmp = (rotl32(a, 5) + (b ^ c ^ d) + e + 0x6ED9EBA1 + w[t]) & m32
            e, d, c, b, a = d, c, rotl32(b, 30), a, tmp
        for t in range(40, 60):
            tmp = (rotl32(a, 5) + ((b & c) | (d & (b | c))) + e + 0x8F1BBCDC + w[t]) & m32
            e, d, c, b, a = d, c, rotl32(b, 30), a, tmp
        for t in range(60, 80):
            tmp = (rotl32(a, 5) + (b ^ c ^ d) + e + 0xCA62C1D6 + w[t]) & m32
            e, d, c, b, a = d, c, rotl32(b, 30), a, tmp
        h0 = (0x67452301 + a) & m32
        h1 = (0xEFCDAB89 + b) & m32
        h2 = (0x98BADCFE + c) & m32
        h3 = (0x10325476 + d) & m32
        h4 = (0xC3D2E1F0 + e) & m32
        # the 160-bit digest as seven 24-bit groups of four characters, the last one two
        # bytes and two zero bits, then '='
        for g in range(7):
            if g == 0:
                v = h0 >> 8
            elif g == 1:
                v = ((h0 & 0xFF) << 16) | (h1 >> 16)
            elif g == 2:
                v = ((h1 & 0xFFFF) << 8) | (h2 >> 24)
            elif g == 3:
                v = h2 & 0xFFFFFF
            elif g == 4:
                v = h3 >> 8
            elif g == 5:
                v = ((h3 & 0xFF) << 16) | (h4 >> 16)
            else:
                v = (h4 & 0xFFFF) << 8
            out[i, 4 * g] = _B64[(v >> 18) & 63]
            out[i, 4 * g + 1] = _B64[(v >> 12) & 63]
            out[i, 4 * g + 2] = _B64[(v >> 6) & 63]
            out[i, 4 * g + 3] = _B64[v & 63] if g < 6 else 61


# -- the Host header of HTTP requests ----------------------------------------------------------


@njit(cache=True, inline="always")
def _lower_eq(b: int, c: int) -> bool:
    """Byte b is c, or c's upper case when c is a lower-case ASCII letter."""
    return b == c or (97 <= c <= 122 and b == c - 32)


@kernel("u1[:] i8[:] i8[:] i8 i8 i8 i8[:] i8[:] -> none", nogil=True)
def find_hosts(
    data: Any,
    off: Any,
    cap: Any,
    window: int,
    name_max: int,
    value_max: int,
    name_off: Any,
    name_len: Any,
) -> None:
    """The host of each request's Host header (`tcpwhy.tcp.server_names._host`, compiled):
    the request's bytes are ``data[off[i]:off[i] + min(cap[i], window)]``; the first header
    line ``\\r\\nHost:`` (any case) before the blank line that ends the headers gives the
    value: blanks skipped, the line's end within `value_max` bytes, trailing blanks
    dropped, a port cut at a single ':' unless the host is a bracketed IPv6 address.
    Writes its absolute offset and length (0: none, or longer than `name_max`)."""
    n = off.shape[0]
    for i in range(n):
        name_off[i] = 0
        name_len[i] = 0
        so = off[i]
        se = so + min(cap[i], window)
        # the first Host line, and the first blank line, each found at its newline
        host_nl = -1
        nl = so + 1
        while nl < se:
            if data[nl] == 10 and data[nl - 1] == 13:
                if nl + 2 < se and data[nl + 1] == 13 and data[nl + 2] == 10:
                    break  # the headers end before any Host line
                if (
                    nl + 5 < se
                    and _lower_eq(data[nl + 1], 104)
                    and _lower_eq(data[nl + 2], 111)
                    and _lower_eq(data[nl + 3], 115)
                    and _lower_eq(data[nl + 4], 116)
                    and data[nl + 5] == 58
                ):
                    host_nl = nl
                    break
            nl += 1
        if host_nl < 0:
            continue
        start = host_nl + 6  # the first byte after "Host:"
        limit = min(se, start + value_max)
        # the value: blanks skipped, up to the end of the line (which must come in time)
        vstart = -1
        eol = -1
        p = start
        while p < limit:
            b = data[p]
            if b == 13 or b == 10:
                eol = p
                break
            if vstart < 0 and b != 32 and b != 9:
                vstart = p
            p += 1
        if eol < 0:
            if limit < start + value_max:  # the row's bytes ended: the line ends there
                eol = limit
            else:
                continue  # no end of line within value_max bytes
        if vstart < 0:
            continue  # only blanks
        vend = vstart
        ncolon = 0
        first_colon = -1
        close_at = -1
        for q in range(vstart, eol):
            b = data[q]
            if b != 32 and b != 9:
                vend = q + 1
            if b == 58:
                ncolon += 1
                if first_colon < 0:
                    first_colon = q
            elif b == 93 and close_at < 0:
                close_at = q
        lo = vstart
        if data[vstart] == 91:  # '[': a bracketed IPv6 address, up to its ']'
            if close_at >= 0:
                lo = vstart + 1
                vend = close_at
        elif ncolon == 1:
            vend = first_colon
        ln = vend - lo
        if 0 < ln <= name_max:
            name_off[i] = lo
            name_len[i] = ln


@njit(cache=True, inline="always")
def _byte(data: Any, off: int, cap: int, j: int) -> int:
    """Byte j of a payload, 0 past its captured bytes."""
    return int(data[off + j]) if j < cap else 0


@kernel("u1[:] i8[:] i8[:] u1[:] i8[:] u1[:] -> none", nogil=True)
def payload_kinds(data: Any, off: Any, cap: Any, words: Any, woff: Any, kind: Any) -> None:
    """What each payload starts with (`tcpwhy.tcp.server_names.kinds`, compiled): 1 a TLS
    ClientHello (record type 22, version 3.x, handshake type 1), 2 one of the `words` (an
    HTTP method and its blank; ``words[woff[w]:woff[w + 1]]``, at most 16 bytes, no zero
    byte), 0 neither."""
    nw = woff.shape[0] - 1
    for i in range(off.shape[0]):
        o = off[i]
        c = cap[i]
        if (
            _byte(data, o, c, 0) == 0x16
            and _byte(data, o, c, 1) == 3
            and _byte(data, o, c, 2) <= 4
            and c > 5
            and _byte(data, o, c, 5) == 1
        ):
            kind[i] = 1
            continue
        kind[i] = 0
        for w in range(nw):
            a = woff[w]
            m = woff[w + 1] - a
            if m > c:
                continue
            same = True
            for j in range(m):
                if data[o + j] != words[a + j]:
                    same = False
                    break
            if same:
                kind[i] = 2
                break


@kernel("i8[:] b1[:] i8 i8 b1[:] i4[:] i8[:] i8[:] -> i8", nogil=True)
def kept_rows(
    uid: Any, alive: Any, n: int, lo: int, mark: Any, rank: Any, start: Any, found: Any
) -> int:
    """The rows below `n` still alive whose ``uid - lo`` is marked, in order, into `found`;
    returns how many. `rank` holds each marked uid's group, its place among the caller's
    uids (read only where marked); `start` (a zeroed entry per group and one more) is left
    holding where each group's rows go in `group_kept`'s order. One pass over the kept packets' uids:
    numpy's masks and gathers made six, with their temporaries, each batch a pass over
    half a million rows on a flood."""
    m = len(mark)
    k = 0
    for i in range(n):
        if alive[i]:
            r = uid[i] - lo
            if r >= 0 and r < m and mark[r]:
                found[k] = i
                start[rank[r] + 1] += 1
                k += 1
    for j in range(1, len(start)):
        start[j] += start[j - 1]
    return k


@kernel("i8[:] i8 i4[:] i8[:] i8[:] i8[:] -> none", nogil=True)
def group_kept(uid: Any, lo: int, rank: Any, start: Any, found: Any, out: Any) -> None:
    """`found` (`kept_rows`' rows) into `out` grouped by their uids' ranks (`rank`, in the
    order the caller numbers the uids), each uid's rows in their order: a counting sort. A stable sort of the rows' uids took
    three times as long as the search for them on the connection-heavy capture (profiled:
    0.04 against 0.013 s; `_KeptPackets.take` 0.11 s before, 0.05 s since)."""
    for j in range(out.shape[0]):
        i = found[j]
        g = rank[uid[i] - lo]
        out[start[g]] = i
        start[g] += 1


@kernel("u1[:] i8[:] i8[:] i8[:] i8[:] i8[:] -> i8", nogil=True)
def name_groups(data: Any, off: Any, length: Any, table: Any, rep: Any, code: Any) -> int:
    """Groups the names at (`off`, `length`) in `data` by their bytes: `code` gets each
    name's group, numbered as first met, and `rep` each group's first name; returns how
    many groups. A byte past `data`'s end reads as its last byte (as the names are cut).
    `table` (a power of two in size, at least twice the names, all -1) is an
    open-addressing table of group numbers by an FNV-1a hash of the bytes. Most chunks
    name one or two servers, which numpy's `unique` of the names as fixed-width rows found
    by sorting them all: four times the time of this and the sort of the few distinct
    names (`server_names.distinct` on the connection-heavy capture, profiled: 0.08 against
    0.02 s)."""
    last = max(data.shape[0] - 1, 0)
    mask = np.uint64(table.shape[0] - 1)
    groups = 0
    for j in range(off.shape[0]):
        o, ln = off[j], length[j]
        h = np.uint64(14695981039346656037) ^ np.uint64(ln)
        for k in range(ln):
            h = (h ^ np.uint64(data[min(max(o + k, 0), last)])) * np.uint64(1099511628211)
        q = h & mask
        while True:
            g = table[q]
            if g < 0:
                table[q] = groups
                rep[groups] = j
                code[j] = groups
                groups += 1
                break
            r = rep[g]
            if length[r] == ln:
                same = True
                for k in range(ln):
                    if data[min(max(off[r] + k, 0), last)] != data[min(max(o + k, 0), last)]:
                        same = False
                        break
                if same:
                    code[j] = g
                    break
            q = (q + np.uint64(1)) & mask
    return groups
