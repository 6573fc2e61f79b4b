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

A program is an ``i8[nops, 5]`` array of ``(op, a, b, c, d)`` (`program`): d is a word
written after the step (-1: none), so that the literal after a value is not a step of its
own (a JSON line was 74 steps, 37 of them literals; fused, 40 steps and a tenth less
time per line). ``ints`` holds
one row per input column (integers, word indices, float64 bits); the
vocabulary is ``vocab[voff[w]:voff[w + 1]]`` for word ``w``; ``fixed`` holds
text columns of a fixed width side by side, one row per record (the Community
IDs that `tcpwhy.tcp.records_kernel.community_ids` writes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.intrinsics import copy8
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

VALUE_OPS = frozenset({OP_INT, OP_UINT, OP_HEX, OP_WORD, OP_REPR6, OP_FIXED, OP_ADDR, OP_HIST})
VALUE_OPS |= {OP_B62, OP_FIXED_TEXT, OP_RFC3339}
"""The steps that write a value and then their `d` word (the others ignore it)."""


def program(steps: Sequence[tuple[int, ...]]) -> npt.NDArray[np.int64]:
    """`format_rows`' program of these steps, (op, a, b, c) or (op, a, b, c, d)."""
    prog = np.full((len(steps), 5), -1, np.int64)
    for i, step in enumerate(steps):
        prog[i, : len(step)] = step
    return prog


# The helpers only index the arrays their caller holds: compiled without numba's reference
# counting (`_nrt=False`, as in tcpwhy.tcp.zeek), which cost an atomic increment and
# decrement of each array per call, about a tenth of a line's time.


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
def _put_int(out: Any, p: int, v: int) -> int:
    if v < 0:
        out[p] = 45
        p += 1
        if v == -9223372036854775808:
            return _put_u64(out, p, v)
        v = -v
    return _put_uint(out, p, v)


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
def _hextet(hi: int, lo: int, k: int) -> int:
    v = hi if k < 4 else lo
    return (v >> (48 - 16 * (k & 3))) & 0xFFFF


@njit(cache=True, _nrt=False)
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


WORD_SLACK = 8
"""Bytes a word's copy may read past its end and write past where it ends: words are copied
8 bytes at a time, the last 8 overshooting (`_put_word`). The vocabulary ends in that many
spare bytes (`vocabulary`) and the caller's `out` has that many beyond its rows' bound."""


def vocabulary(words: list[bytes]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """`format_rows`' vocab and voff of these words (the vocabulary padded, `WORD_SLACK`)."""
    vocab = np.frombuffer(b"".join(words) + bytes(WORD_SLACK), np.uint8).copy()
    voff = np.cumsum([0] + [len(w) for w in words], dtype=np.int64)
    return vocab, voff


@njit(cache=True, _nrt=False)
def _put_word(out: Any, p: int, vocab: Any, voff: Any, w: int) -> int:
    # 8 bytes at a time (`copy8`), the last copy running past the word (`WORD_SLACK`): a
    # byte loop, or whole copies and a byte loop for the tail, took 1.2x and 2x as long per
    # row; libc's memcpy, called per word, 1.3x
    a = np.uint64(voff[w])
    n = voff[w + 1] - voff[w]
    q = np.uint64(p)
    j = np.uint64(0)
    while j < np.uint64(n):
        copy8(out, q + j, vocab, a + j)
        j += np.uint64(8)
    return p + n


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
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


@kernel("i8[:,:] i8[:,:] u1[:,:] i8[:] u1[:] i8[:] u1[:,:] u1[:] i8 i8 -> i8", nogil=True)
def format_rows(
    prog: Any,
    ints: Any,
    hist: Any,
    hlen: Any,
    vocab: Any,
    voff: Any,
    fixed: Any,
    out: Any,
    first: int,
    stop: int,
) -> int:
    """Rows `first` to `stop` (of all, up to ``ints.shape[1]``) through the program, into `out`
    from its start; the bytes written, or -1 if a float is out of range, -2 if `vocab` is not
    padded as `vocabulary` pads it (the caller sizes `out` for the longest possible row times
    the rows, and `WORD_SLACK` bytes more), -3 if `prog` is not as `program` makes it. A batch is formatted a piece at a time by a
    writer, so that its text is never all in memory at once."""
    n = min(stop, ints.shape[1])
    nops = prog.shape[0]
    if len(vocab) < voff[len(voff) - 1] + WORD_SLACK:
        return -2  # not made by `vocabulary`: its words' copies would read past its end
    if prog.shape[1] < 5:
        return -3  # not made by `program`: no column of words written after a step
    p = 0
    width = fixed.shape[1]
    flat = fixed.reshape(fixed.size)  # (C-contiguous: a view)
    # the date and time of the last second written (`OP_RFC3339`): where, and how long
    last_sec, last_at, last_len = np.int64(-(1 << 62)), 0, 0
    for i in range(max(first, 0), n):
        mark = p
        k = 0
        while k < nops:
            op = prog[k, 0]
            a = prog[k, 1]
            b = prog[k, 2]
            c = prog[k, 3]
            d = prog[k, 4]
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
                    last_sec = np.int64(-(1 << 62))  # bytes move: the date's place with them
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
                # 8 bytes at a time (`copy8`) within the row, its tail byte by byte
                to = np.uint64(p)
                at = np.uint64(i * width + a)
                done = np.uint64(0)
                while done + np.uint64(8) <= np.uint64(b):
                    copy8(out, to + done, flat, at + done)
                    done += np.uint64(8)
                while done < np.uint64(b):
                    out[to + done] = flat[at + done]
                    done += np.uint64(1)
                p += b
            elif op == OP_RFC3339:
                # rows come in bursts within a second: its "YYYY-MM-DDTHH:MM:SS." copied from
                # where it was last written (a fifth of a flood's row formatting was dates)
                ns = ints[a, i]
                sec = ns // 1000000000
                if sec == last_sec:
                    u, v = np.uint64(p), np.uint64(last_at)
                    for j in range(last_len):
                        out[u + np.uint64(j)] = out[v + np.uint64(j)]
                    p = _put_padded(out, p + last_len, ns - sec * 1000000000, 9)
                    out[p] = 90  # Z
                    p += 1
                else:
                    start = p
                    p = _put_rfc3339(out, p, ns)
                    last_sec, last_at, last_len = sec, start, p - start - 10
            if d >= 0:
                p = _put_word(out, p, vocab, voff, d)
    return p


# -- text columns of fixed width, for Arrow -------------------------------------------------------
# The Python API and the Parquet writer hand Arrow one string column at a time. Addresses are
# written per batch into rows of a fixed width (on the records thread, while the capture is
# still read), and cut into Arrow's offsets and bytes once at the end: a numpy boolean mask over
# the whole matrix cost ten times this loop (10 ms against 1 ms on 200,000 connections).

ADDRESS_WIDTH = 40
"""Bytes of a row of `address_rows`: the longest address text is 39 (eight full hextets)."""


@kernel("i8[:] i8[:] u1[:,:] u1[:] -> i8", nogil=True)
def address_rows(hi: Any, lo: Any, out: Any, lengths: Any) -> int:
    """Address i (its two halves) into row i of `out` (`ADDRESS_WIDTH` wide), its length into
    `lengths[i]`; the rows written."""
    n = len(hi)
    for i in range(n):
        lengths[i] = _put_addr(out[i], 0, hi[i], lo[i], False)
    return n


@kernel("u1[:,:] i8[:] i4[:] u1[:] -> i8", nogil=True)
def compact_rows(rows: Any, lengths: Any, offsets: Any, body: Any) -> int:
    """Row i's first `lengths[i]` bytes end to end into `body`, with Arrow's offsets
    (`offsets[0]` is 0); the bytes written (the caller sizes `body` for them all)."""
    n = rows.shape[0]
    p = 0
    offsets[0] = 0
    for i in range(n):
        k = lengths[i]
        for j in range(k):
            body[p + j] = rows[i, j]
        p += k
        offsets[i + 1] = p
    return p
