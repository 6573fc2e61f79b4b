"""A compiled row formatter for `tcpwhy conns`: text lines written from columns, no Python per row.

Why it exists: formatting each connection in Python (a record object, an
f-string, ``round`` and ``repr`` of three floats, string escapes) cost more
than decoding the capture and tracking its connections together. Here one
call formats a whole batch into a byte buffer, driven by a small program that
the writer builds once per format (`tcpwhy.report.conns`): each step writes a
literal, an integer, a float, an address, a history or a word of a
vocabulary, with optional padding (the table format). Strings that need
escaping (JSON, CSV) are escaped in Python, once per word of a vocabulary.

Floats are printed from their exact binary value, as CPython does: ``.Nf``
rounds the exact value half to even (``_Py_dg_dtoa`` mode 3), and
``repr(round(x, 6))`` -- what ``json.dumps`` writes for the rounded values --
is the shortest text that reads back as the double nearest the rounded
decimal, which is that decimal itself while doubles are closer together than
1e-6 (below 2**33). Values outside that range, or not finite, make the call
return -1 and the writer formats the batch record by record instead.

A program is an ``i8[nops, 4]`` array of ``(op, a, b, c)``; ``ints`` holds
one row per input column (integers, word indices, float64 bits); the
vocabulary is ``vocab[voff[w]:voff[w + 1]]`` for word ``w``; ``fixed`` holds
text columns of a fixed width side by side, one row per record (the Community
IDs that `community_ids` writes).

`community_ids` computes Community ID v1 hashes (SHA-1 of the ordered
5-tuple, base64) for a batch in one call: one 64-byte SHA-1 block per
connection, as the tuple of a TCP connection is at most 40 bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tcpwhy.native import kernel, njit

OP_LIT = 0  # word a
OP_INT = 1  # ints[a] as a signed decimal
OP_UINT = 2  # ints[a] as an unsigned 64-bit decimal
OP_HEX = 3  # ints[a] in lowercase hexadecimal
OP_WORD = 4  # the word whose index is ints[a]
OP_REPR6 = 5  # repr(round(x, 6)) of the float64 whose bits are ints[a]; NaN: word b
OP_FIXED = 6  # x with b decimals ('.bf'); NaN: word c
OP_ADDR = 7  # address ints[a] (high half), ints[b] (low half); c=1: IPv6 in brackets
OP_HIST = 8  # the history letters of the row; none: word c (c >= 0)
OP_MARK = 9  # remember where the next field starts (for padding)
OP_PADL = 10  # pad the field since the mark with spaces to width a, left-aligned
OP_PADR = 11  # right-aligned
OP_UNLESS_POS = 12  # ints[a] <= 0: write word b and skip the next max(c, 1) steps
OP_SKIP_NO_HIST = 13  # the row has no history letters: skip the next a steps
OP_B62 = 14  # ints[a] read as unsigned 64 bits, in base 62 least significant digit first (Zeek)
OP_FIXED_TEXT = 15  # the bytes fixed[i, a:a + b] (a text column of fixed width)
OP_RFC3339 = 16  # ints[a] nanoseconds since the epoch as RFC 3339 UTC with nine decimals

_MASK26 = (1 << 26) - 1


@njit(cache=True)
def _put_uint(out: Any, p: int, v: int) -> int:
    """Decimal digits of a non-negative int64."""
    if v == 0:
        out[p] = 48
        return p + 1
    n = 1
    p10 = 10
    while n < 19 and v >= p10:  # digits counted by comparing, not dividing
        n += 1
        p10 *= 10
    q = p + n
    while v > 0:
        q -= 1
        out[q] = 48 + v % 10
        v //= 10
    return p + n


@njit(cache=True)
def _put_u64(out: Any, p: int, v: int) -> int:
    """Decimal digits of an int64 read as unsigned (Python's ``v & 0xFFFF_FFFF_FFFF_FFFF``)."""
    if v >= 0:
        return _put_uint(out, p, v)
    # v + 2**64 = 10 * hi + lo, computed without leaving int64: (v >>> 1) // 5 is (v+2**64) // 10
    half = (v >> 1) & 0x7FFFFFFFFFFFFFFF
    hi = half // 5
    lo = (v & 1) + 2 * (half - 5 * hi)
    hi += lo // 10
    lo %= 10
    p = _put_uint(out, p, hi)
    out[p] = 48 + lo
    return p + 1


@njit(cache=True)
def _put_int(out: Any, p: int, v: int) -> int:
    if v < 0:
        out[p] = 45
        p += 1
        if v == -9223372036854775808:
            return _put_u64(out, p, v)
        v = -v
    return _put_uint(out, p, v)


@njit(cache=True)
def _put_hex(out: Any, p: int, v: int) -> int:
    n = 1
    t = (v >> 4) & 0x0FFFFFFFFFFFFFFF
    while t > 0:
        n += 1
        t >>= 4
    for k in range(n):
        d = (v >> (4 * (n - 1 - k))) & 15
        out[p + k] = 48 + d if d < 10 else 87 + d
    return p + n


@njit(cache=True)
def _put_padded(out: Any, p: int, v: int, width: int) -> int:
    """v in decimal, zero-padded on the left to `width` digits."""
    for k in range(width - 1, -1, -1):
        out[p + k] = 48 + v % 10
        v //= 10
    return p + width


@njit(cache=True, inline="always")
def _round_scaled(bits: int, digits: int) -> tuple[bool, int, bool]:
    """(negative, N, ok): N = the exact value of the double, times 10**digits, rounded half to
    even. ok is False for values not finite or not below 2**33. Inlined where it is called,
    so that a constant `digits` makes 5**digits a constant (`packets`' table and CSV times:
    called, it was about a fifth of their time)."""
    neg = bits < 0
    ex = (bits >> 52) & 0x7FF
    frac = bits & ((1 << 52) - 1)
    if ex == 0x7FF or ex >= 1023 + 33:
        return neg, 0, False
    if ex == 0:
        m = frac
        e = -1074
    else:
        m = frac | (1 << 52)
        e = ex - 1075
    p5 = 1
    for _ in range(digits):
        p5 *= 5
    # x * 10**d = m * 5**d * 2**(e + d); m * 5**d needs up to 67 bits: two limbs, 2**26 apart
    q = -(e + digits)
    if q >= 69:
        return neg, 0, True
    ah = (m >> 26) * p5
    al = (m & _MASK26) * p5
    ah += al >> 26
    al &= _MASK26
    if q >= 26:
        n = ah >> (q - 26)
    else:
        n = (ah << (26 - q)) | (al >> q)
    b = q - 1
    if b < 26:
        half = (al >> b) & 1
        below = (al & ((1 << b) - 1)) == 0
    else:
        half = (ah >> (b - 26)) & 1
        below = al == 0 and (ah & ((1 << (b - 26)) - 1)) == 0
    if half == 1 and (not below or (n & 1) == 1):
        n += 1
    return neg, n, True


@njit(cache=True)
def _put_fixed(out: Any, p: int, neg: bool, n: int, digits: int) -> int:
    if neg:
        out[p] = 45
        p += 1
    scale = 1
    for _ in range(digits):
        scale *= 10
    p = _put_uint(out, p, n // scale)
    if digits > 0:
        out[p] = 46
        p = _put_padded(out, p + 1, n % scale, digits)
    return p


@njit(cache=True)
def _put_repr6(out: Any, p: int, neg: bool, n: int) -> int:
    """repr() of the double nearest n / 10**6: fixed notation from 1e-4 up, else scientific."""
    if neg:
        out[p] = 45
        p += 1
    if n == 0:
        out[p] = 48
        out[p + 1] = 46
        out[p + 2] = 48
        return p + 3
    if n >= 100:
        p = _put_uint(out, p, n // 1000000)
        out[p] = 46
        p += 1
        f = n % 1000000
        if f == 0:
            out[p] = 48
            return p + 1
        width = 6
        while f % 10 == 0:
            f //= 10
            width -= 1
        return _put_padded(out, p, f, width)
    if n >= 10:
        out[p] = 48 + n // 10
        p += 1
        if n % 10 != 0:
            out[p] = 46
            out[p + 1] = 48 + n % 10
            p += 2
        exp = 5
    else:
        out[p] = 48 + n
        p += 1
        exp = 6
    out[p] = 101  # e-0N
    out[p + 1] = 45
    out[p + 2] = 48
    out[p + 3] = 48 + exp
    return p + 4


@njit(cache=True)
def _hextet(hi: int, lo: int, k: int) -> int:
    v = hi if k < 4 else lo
    return (v >> (48 - 16 * (k & 3))) & 0xFFFF


@njit(cache=True)
def _put_addr(out: Any, p: int, hi: int, lo: int, brackets: bool) -> int:
    """A stored address as `tcpwhy.decode.table.format_addr` writes it: IPv4-mapped as a dotted
    quad, anything else as ``ipaddress.IPv6Address`` does (lowercase hextets without leading
    zeros, the first longest run of two or more zero hextets as ``::``)."""
    if hi == 0 and ((lo >> 32) & 0xFFFFFFFF) == 0xFFFF:
        for k in range(4):
            if k:
                out[p] = 46
                p += 1
            p = _put_uint(out, p, (lo >> (24 - 8 * k)) & 255)
        return p
    best, best_len, start, run = -1, 0, -1, 0
    for k in range(8):
        if _hextet(hi, lo, k) == 0:
            if run == 0:
                start = k
            run += 1
            if run > best_len:
                best, best_len = start, run
        else:
            run = 0
    if brackets:
        out[p] = 91
        p += 1
    if best_len < 2:
        best = 8
    for k in range(best):
        if k:
            out[p] = 58
            p += 1
        p = _put_hex(out, p, _hextet(hi, lo, k))
    if best < 8:
        out[p] = 58
        out[p + 1] = 58
        p += 2
        for k in range(best + best_len, 8):
            if k > best + best_len:
                out[p] = 58
                p += 1
            p = _put_hex(out, p, _hextet(hi, lo, k))
    if brackets:
        out[p] = 93
        p += 1
    return p


@njit(cache=True)
def _put_word(out: Any, p: int, vocab: Any, voff: Any, w: int) -> int:
    n = voff[w + 1] - voff[w]
    # a loop with unsigned indices: a slice copy makes two array views, and a signed index
    # is checked for wrapping around; either costs more than these few bytes (3.5x measured)
    a = np.uint64(voff[w])
    q = np.uint64(p)
    for j in range(n):
        out[q + np.uint64(j)] = vocab[a + np.uint64(j)]
    return p + n


@njit(cache=True)
def _put_float(out: Any, p: int, bits: int, digits: int, null: int, vocab: Any, voff: Any) -> int:
    """The float64 whose bits are given: digits -1 for repr(round(x, 6)), else '.{digits}f';
    NaN writes word `null` (if >= 0). -1 if out of range."""
    if null >= 0 and (bits >> 52) & 0x7FF == 0x7FF and bits & ((1 << 52) - 1) != 0:
        return _put_word(out, p, vocab, voff, null)
    neg, v, ok = _round_scaled(bits, 6 if digits < 0 else digits)
    if not ok:
        return -1
    if digits < 0:
        return _put_repr6(out, p, neg, v)
    return _put_fixed(out, p, neg, v, digits)


@njit(cache=True)
def _put_b62(out: Any, p: int, v: int) -> int:
    """v read as unsigned 64 bits, in base 62 with Zeek's digits (0-9, a-z, A-Z), least
    significant digit first, as Zeek's ``uitoa_n`` writes the parts of a uid."""
    u = np.uint64(v)
    q = u // np.uint64(62)
    d = np.int64(u - q * np.uint64(62))
    out[p] = 48 + d if d < 10 else (87 + d if d < 36 else 29 + d)
    p += 1
    x = np.int64(q)  # below 2**58: the rest in signed arithmetic, which numba divides faster
    while x > 0:
        y = x // 62
        d = x - y * 62
        out[p] = 48 + d if d < 10 else (87 + d if d < 36 else 29 + d)
        p += 1
        x = y
    return p


@njit(cache=True)
def _put_rfc3339(out: Any, p: int, ns: int) -> int:
    """YYYY-MM-DDTHH:MM:SS.fffffffffZ of nanoseconds since the epoch, as
    `tcpwhy.timestamps.rfc3339` writes it (years 1000 to 9999: every int64 of nanoseconds
    from 1970 on). Not `packets_kernel._clock`: that module imports this one."""
    days = ns // 86400000000000
    rem = ns - days * 86400000000000
    z = days + 719468  # days to a civil date (H. Hinnant's algorithm)
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if m <= 2 else 0)
    p = _put_padded(out, p, y, 4)
    out[p] = 45
    p = _put_padded(out, p + 1, m, 2)
    out[p] = 45
    p = _put_padded(out, p + 1, d, 2)
    out[p] = 84  # T
    secs = rem // 1000000000
    p = _put_padded(out, p + 1, secs // 3600, 2)
    out[p] = 58
    p = _put_padded(out, p + 1, (secs // 60) % 60, 2)
    out[p] = 58
    p = _put_padded(out, p + 1, secs % 60, 2)
    out[p] = 46
    p = _put_padded(out, p + 1, rem % 1000000000, 9)
    out[p] = 90  # Z
    return p + 1


@kernel("i8[:,:] i8[:,:] u1[:,:] i8[:] u1[:] i8[:] u1[:,:] u1[:] -> i8", nogil=True)
def format_rows(
    prog: Any, ints: Any, hist: Any, hlen: Any, vocab: Any, voff: Any, fixed: Any, out: Any
) -> int:
    """Every row through the program, into `out`; the bytes written, or -1 if a float is out of
    range (the caller sizes `out` for the longest possible row)."""
    n = ints.shape[1]
    nops = prog.shape[0]
    p = 0
    for i in range(n):
        mark = p
        k = 0
        while k < nops:
            op = prog[k, 0]
            a = prog[k, 1]
            b = prog[k, 2]
            c = prog[k, 3]
            k += 1
            if op == OP_LIT:
                p = _put_word(out, p, vocab, voff, a)
            elif op == OP_INT:
                p = _put_int(out, p, ints[a, i])
            elif op == OP_UINT:
                p = _put_u64(out, p, ints[a, i])
            elif op == OP_HEX:
                p = _put_hex(out, p, ints[a, i])
            elif op == OP_WORD:
                p = _put_word(out, p, vocab, voff, ints[a, i])
            elif op == OP_REPR6:
                p = _put_float(out, p, ints[a, i], -1, b, vocab, voff)
                if p < 0:
                    return -1
            elif op == OP_FIXED:
                p = _put_float(out, p, ints[a, i], b, c, vocab, voff)
                if p < 0:
                    return -1
            elif op == OP_ADDR:
                p = _put_addr(out, p, ints[a, i], ints[b, i], c == 1)
            elif op == OP_HIST:
                m = hlen[i]
                if m == 0 and c >= 0:
                    p = _put_word(out, p, vocab, voff, c)
                else:
                    u = np.uint64(p)
                    for j in range(m):
                        out[u + np.uint64(j)] = hist[i, j]
                    p += m
            elif op == OP_MARK:
                mark = p
            elif op == OP_PADL:
                while p - mark < a:
                    out[p] = 32
                    p += 1
            elif op == OP_PADR:
                pad = a - (p - mark)
                if pad > 0:
                    for q in range(p - 1, mark - 1, -1):
                        out[q + pad] = out[q]
                    for q in range(mark, mark + pad):
                        out[q] = 32
                    p += pad
            elif op == OP_UNLESS_POS:
                if ints[a, i] <= 0:
                    p = _put_word(out, p, vocab, voff, b)
                    k += c if c > 1 else 1
            elif op == OP_SKIP_NO_HIST:
                if hlen[i] == 0:
                    k += a
            elif op == OP_B62:
                p = _put_b62(out, p, ints[a, i])
            elif op == OP_FIXED_TEXT:
                u = np.uint64(p)
                for j in range(b):
                    out[u + np.uint64(j)] = fixed[i, a + j]
                p += b
            elif op == OP_RFC3339:
                p = _put_rfc3339(out, p, ints[a, i])
    return p


# -- Community ID ------------------------------------------------------------------------------

COMMUNITY_ID_WIDTH = 28
"""Characters of a Community ID v1 hash (base64 of a SHA-1 digest), without the ``1:``."""


@njit(cache=True)
def _ult(x: int, y: int) -> bool:
    """x < y, both int64 read as unsigned 64 bits."""
    if (x < 0) != (y < 0):
        return y < 0
    return x < y


@njit(cache=True)
def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF


@njit(cache=True)
def _b64(v: int) -> int:
    if v < 26:
        return 65 + v
    if v < 52:
        return 71 + v  # 97 + v - 26
    if v < 62:
        return v - 4  # 48 + v - 52
    return 43 if v == 62 else 47


@njit(cache=True)
def _put_be(msg: Any, p: int, v: int, nbytes: int) -> int:
    for j in range(nbytes):
        msg[p + j] = (v >> (8 * (nbytes - 1 - j))) & 0xFF
    return p + nbytes


@kernel("i8 i8 i8[:] i8[:] i8[:] i8[:] i8[:] i8[:] u1[:,:] -> none", nogil=True)
def community_ids(
    seed: int, proto: int, ohi: Any, olo: Any, op: Any, rhi: Any, rlo: Any, rp: Any, out: Any
) -> None:
    """Community ID v1 of each row (without the ``1:`` version prefix) into ``out[i, :28]``:
    base64 of SHA-1 over seed (2 bytes), the two addresses (4 bytes each when both are
    IPv4-mapped, else 16), protocol, a zero byte and the two ports, the endpoint with the
    lower address (then port) first. Addresses are the packet table's two 64-bit halves."""
    n = ohi.shape[0]
    msg = np.zeros(64, np.int64)
    w = np.zeros(80, np.int64)
    dig = np.zeros(21, np.int64)
    for i in range(n):
        ah, al, ap = ohi[i], olo[i], op[i]
        bh, bl, bp = rhi[i], rlo[i], rp[i]
        if _ult(bh, ah) or (bh == ah and (_ult(bl, al) or (bl == al and bp < ap))):
            ah, al, ap, bh, bl, bp = bh, bl, bp, ah, al, ap
        a4 = ah == 0 and ((al >> 32) & 0xFFFFFFFF) == 0xFFFF
        b4 = bh == 0 and ((bl >> 32) & 0xFFFFFFFF) == 0xFFFF
        v4 = a4 and b4
        for j in range(64):
            msg[j] = 0
        q = _put_be(msg, 0, seed, 2)
        if v4:
            q = _put_be(msg, q, al & 0xFFFFFFFF, 4)
            q = _put_be(msg, q, bl & 0xFFFFFFFF, 4)
        else:
            q = _put_be(msg, q, ah, 8)
            q = _put_be(msg, q, al, 8)
            q = _put_be(msg, q, bh, 8)
            q = _put_be(msg, q, bl, 8)
        msg[q] = proto & 0xFF
        q += 2  # and a zero byte of padding
        q = _put_be(msg, q, ap, 2)
        q = _put_be(msg, q, bp, 2)
        msg[q] = 0x80
        _put_be(msg, 56, 8 * q, 8)
        for t in range(16):
            w[t] = (
                (msg[4 * t] << 24) | (msg[4 * t + 1] << 16) | (msg[4 * t + 2] << 8) | msg[4 * t + 3]
            )
        for t in range(16, 80):
            w[t] = _rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1)
        a, b, c, d, e = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0
        for t in range(20):
            tmp = (_rotl(a, 5) + (d ^ (b & (c ^ d))) + e + 0x5A827999 + w[t]) & 0xFFFFFFFF
            e, d, c, b, a = d, c, _rotl(b, 30), a, tmp
        for t in range(20, 40):
            tmp = (_rotl(a, 5) + (b ^ c ^ d) + e + 0x6ED9EBA1 + w[t]) & 0xFFFFFFFF
            e, d, c, b, a = d, c, _rotl(b, 30), a, tmp
        for t in range(40, 60):
            tmp = (_rotl(a, 5) + ((b & c) | (d & (b | c))) + e + 0x8F1BBCDC + w[t]) & 0xFFFFFFFF
            e, d, c, b, a = d, c, _rotl(b, 30), a, tmp
        for t in range(60, 80):
            tmp = (_rotl(a, 5) + (b ^ c ^ d) + e + 0xCA62C1D6 + w[t]) & 0xFFFFFFFF
            e, d, c, b, a = d, c, _rotl(b, 30), a, tmp
        _put_be(dig, 0, (0x67452301 + a) & 0xFFFFFFFF, 4)
        _put_be(dig, 4, (0xEFCDAB89 + b) & 0xFFFFFFFF, 4)
        _put_be(dig, 8, (0x98BADCFE + c) & 0xFFFFFFFF, 4)
        _put_be(dig, 12, (0x10325476 + d) & 0xFFFFFFFF, 4)
        _put_be(dig, 16, (0xC3D2E1F0 + e) & 0xFFFFFFFF, 4)
        dig[20] = 0
        for g in range(7):  # 3 bytes -> 4 characters; the last group has 2 bytes and a '='
            v = (dig[3 * g] << 16) | (dig[3 * g + 1] << 8) | dig[3 * g + 2]
            out[i, 4 * g] = _b64((v >> 18) & 63)
            out[i, 4 * g + 1] = _b64((v >> 12) & 63)
            out[i, 4 * g + 2] = _b64((v >> 6) & 63)
            out[i, 4 * g + 3] = _b64(v & 63) if g < 6 else 61


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
