"""A compiled row writer for `tcpwhy packets`: the packet list written from the table's columns.

Why it exists: building each row in Python (a row object, an f-string, the Info text
piece by piece) cost about twelve microseconds a packet, several times what decoding,
stream tracking and analysis cost together. Here one call writes as many rows as fit a
buffer, in the table, CSV or JSON-lines format, byte for byte what the per-row writer in
`tcpwhy.report.packets` prints (tests/test_packets_compiled.py holds the two together).

Everything is in one function with its helpers inlined (``inline="always"``) and every
column value read as int64: a helper call passing two dozen arrays, the reference counts
numba keeps on them, and unsigned-by-signed arithmetic (which numba does in floating
point, through ``fmod``) were what made an earlier version cost 1.4 µs a row. Arrays are
indexed with unsigned integers (`_U`): numba adds a negative-index check to every signed
index, and that check alone kept LLVM from merging the byte stores of a literal into a
few wide ones (a JSON line's keys cost 25 times more). Decimals are written two digits
at a time in unsigned arithmetic, their length found by comparisons. (Splitting numbers
into blocks of four and eight digits was a little faster still, but numba's inlining of
the nested helpers took gigabytes and many minutes to compile.)

The vocabulary ``vocab[voff[w]:voff[w + 1]]`` holds the static words: the TCP flag names
(words 0-8, in `FLAG_NAMES` order), the Info prefix of each analysis flag (words 9-23, by
bit), the JSON string of each flag's name (words 24-38), the start of a JSON line
(word 39), and for each of the 512 combinations of the nine flags, the JSON text from
``, "flags": [`` to ``"seq": `` (words 40-551) and the Info text from `` [`` to
``Seq=`` (words 552-1063). ``pfx_order`` lists the analysis bits in the order
Wireshark's Info prefixes read.

Times are printed from their exact binary value as CPython does: the table's and CSV's
``.6f`` of any relative time below 2**33 s (the `conns` writer's ``_round_scaled``
for six decimals, inlined); JSON's ``repr(round(t, 9))`` is the nanosecond count itself while
a double resolves nanoseconds (below 2**52 ns) and the shortest decimal that reads back as
the same double above that, found exactly in 64-bit integers from the double's integer part
and fraction (`_json_time_big`: a capture spanning months has most of its rows there, and
the two-limb ``_round_scaled`` it called half a dozen times a row was slow). A row beyond
2**33 s stops the call, which then tells the caller to write that one row in Python.
tshark's time formats (``-t``) are printed from integer nanoseconds, truncated to the
capture's precision as tshark does.

`format_packets` releases the GIL (``nogil``): `tcpwhy.report.packets` runs it in a thread of
its own, formatting one chunk on a second core while the next is read and decoded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tcpwhy.decode.table import COLUMNS, ENDPOINT_COLUMNS
from tcpwhy.native import array_types, kernel, njit, tuple_of
from tcpwhy.report.conns_kernel import _put_addr, _put_rfc3339, _round_scaled

FMT_TABLE, FMT_CSV, FMT_JSONL = 0, 1, 2
# the table's and CSV's Time column: Python's .6f of the relative time (the default), or
# tshark's -t texts from `tval`: signed seconds (r, d, dd, e), clock time (a, u), date and
# clock time (ad, ud)
TIME_DEFAULT, TIME_SECONDS, TIME_CLOCK, TIME_DATE = 0, 1, 2, 3
ROW_MAX = 4096  # bytes one row can take at most (all options, flags and analysis prefixes)
W_FLAG, W_PREFIX, W_NAME, W_JSON_HEAD, W_JSON_FLAGS, W_INFO_FLAGS = 0, 9, 24, 39, 40, 552
A_RETRANS, A_FAST_RETRANS, A_SPURIOUS, A_DUP_ACK = 1, 2, 4, 64
_ACK, _URG = 16, 32
_TIME_MAX_NS = 1 << 52  # |relative time| up to which a double resolves nanoseconds (2**22 s)
_MASK52 = (1 << 52) - 1
_U = np.uint64  # the index type: unsigned, so numba adds no negative-index check
_OPTION_COLUMNS = (
    "urp",
    "payload_len",
    "opt_order",
    "opt_mss",
    "opt_ws",
    "opt_tsval",
    "opt_tsecr",
    "sack_n",
    "sack_le",
    "sack_re",
)  # `format_packets`' table columns after the window, as their schema types them
_P10 = np.array([10**k for k in range(20)], np.uint64)
# "00" to "99": two digits per division, half the dependent multiply-shift chain of one
_PAIRS = np.frombuffer("".join(f"{k:02d}" for k in range(100)).encode(), np.uint8).copy()
# each byte value's decimal text, 4 bytes apiece: its length then up to three digits
_OCTETS = np.frombuffer(
    b"".join(bytes([len(str(k))]) + str(k).encode().ljust(3, b" ") for k in range(256)), np.uint8
).copy()


@njit(cache=True, inline="always")
def _copy(out: Any, p: int, vocab: Any, voff: Any, w: int) -> int:
    a = voff[_U(w)]
    n = voff[_U(w + 1)] - a
    for k in range(n):
        out[_U(p + k)] = vocab[_U(a + k)]
    return p + n


@njit(cache=True, inline="always")
def _lit(out: Any, p: int, text: Any) -> int:
    for k in range(len(text)):
        out[_U(p + k)] = text[k]
    return p + len(text)


@njit(cache=True, inline="always")
def _put2(out: Any, q: int, x: Any) -> None:
    """Two digits of x (unsigned, below 100) at out[q:q + 2]."""
    out[_U(q)] = _PAIRS[_U(2) * x]
    out[_U(q + 1)] = _PAIRS[_U(2) * x + _U(1)]


@njit(cache=True, inline="always")
def _ndigits_u(u: Any) -> int:
    """Decimal digits of an unsigned int64, by comparisons (a field's values mostly have
    the same length, so the branches are predicted)."""
    if u < _U(10000):
        if u < _U(100):
            return 1 if u < _U(10) else 2
        return 3 if u < _U(1000) else 4
    if u < _U(100000000):
        if u < _U(1000000):
            return 5 if u < _U(100000) else 6
        return 7 if u < _U(10000000) else 8
    n = 9
    pw = _U(1000000000)
    while n < 19 and u >= pw:
        pw *= _U(10)
        n += 1
    return n


@njit(cache=True, inline="always")
def _uint(out: Any, p: int, v: int) -> int:
    """Decimal digits of a non-negative int64."""
    u = _U(v)
    n = _ndigits_u(u)
    q = p + n
    while u >= _U(100):
        q -= 2
        _put2(out, q, u % _U(100))
        u //= _U(100)
    if u >= _U(10):
        _put2(out, q - 2, u)
    else:
        out[_U(q - 1)] = _U(48) + u
    return p + n


@njit(cache=True, inline="always")
def _ndigits(v: int) -> int:
    n = 1
    pw = 10
    while n < 19 and v >= pw:
        pw *= 10
        n += 1
    return n


@njit(cache=True, inline="always")
def _int(out: Any, p: int, v: int) -> int:
    if v < 0:
        out[_U(p)] = 45
        return _uint(out, p + 1, -v)
    return _uint(out, p, v)


@njit(cache=True, inline="always")
def _padded(out: Any, p: int, v: int, width: int) -> int:
    """v (non-negative, below 10**width) in exactly `width` digits."""
    u = _U(v)
    q = p + width
    k = width
    while k >= 2:
        q -= 2
        _put2(out, q, u % _U(100))
        u //= _U(100)
        k -= 2
    if k == 1:
        out[_U(p)] = _U(48) + u
    return p + width


@njit(cache=True, inline="always")
def _align_right(out: Any, start: int, p: int, width: int) -> int:
    """Right-align the field written at out[start:p] to `width` characters."""
    n = p - start
    if n >= width:
        return p
    shift = width - n
    for k in range(n - 1, -1, -1):
        out[_U(start + shift + k)] = out[_U(start + k)]
    for k in range(shift):
        out[_U(start + k)] = 32
    return start + width


@njit(cache=True, inline="always")
def _addr(out: Any, p: int, hi: int, lo: int) -> int:
    if hi == 0 and ((lo >> 32) & 0xFFFFFFFF) == 0xFFFF:
        for k in range(4):
            o = _U(4) * _U((lo >> (24 - 8 * k)) & 255)
            n = _OCTETS[o]
            out[_U(p)] = _OCTETS[o + _U(1)]
            out[_U(p + 1)] = _OCTETS[o + _U(2)]
            out[_U(p + 2)] = _OCTETS[o + _U(3)]
            out[_U(p + n)] = 46  # the dot after the octet (overwritten by what follows the last)
            p += n + 1
        return p - 1
    return _put_addr(out, p, hi, lo, False)


@njit(cache=True, inline="always")
def _fraction(out: Any, p: int, ns: int, digits: int) -> int:
    """'.' and the first `digits` decimals of `ns` nanoseconds (0 <= ns < 1e9), truncated:
    all nine are written, the row goes on after the wanted ones."""
    if digits <= 0:
        return p
    out[_U(p)] = 46
    _padded(out, p + 1, ns, 9)
    return p + 1 + digits


@njit(cache=True, inline="always")
def _seconds(out: Any, p: int, ns: int, digits: int) -> int:
    """Signed seconds with `digits` decimals, truncated (tshark's relative, delta, epoch)."""
    if ns < 0:
        out[_U(p)] = 45
        p += 1
        ns = -ns
    p = _uint(out, p, ns // 1000000000)
    return _fraction(out, p, ns % 1000000000, digits)


@njit(cache=True, inline="always")
def _clock(out: Any, p: int, ns: int, digits: int, date: bool) -> int:
    """[YYYY-MM-DD ]HH:MM:SS.fff of nanoseconds since the epoch (of the wanted zone)."""
    days = ns // 86400000000000
    rem = ns - days * 86400000000000
    if date:  # days to a civil date (H. Hinnant's algorithm)
        z = days + 719468
        era = z // 146097
        doe = z - era * 146097
        yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
        y = yoe + era * 400
        doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
        mp = (5 * doy + 2) // 153
        d = doy - (153 * mp + 2) // 5 + 1
        m = mp + 3 if mp < 10 else mp - 9
        if m <= 2:
            y += 1
        if y < 0:
            out[_U(p)] = 45
            p += 1
            y = -y
        p = _padded(out, p, y, 4) if y < 10000 else _uint(out, p, y)
        out[_U(p)] = 45
        _put2(out, p + 1, _U(m))
        out[_U(p + 3)] = 45
        _put2(out, p + 4, _U(d))
        out[_U(p + 6)] = 32
        p += 7
    secs = _U(rem // 1000000000)
    _put2(out, p, secs // _U(3600))
    out[_U(p + 2)] = 58
    _put2(out, p + 3, (secs // _U(60)) % _U(60))
    out[_U(p + 5)] = 58
    _put2(out, p + 6, secs % _U(60))
    return _fraction(out, p + 8, rem % 1000000000, digits)


@njit(cache=True, inline="always")
def _fixed6(out: Any, p: int, bits: int) -> int:
    """Python's '.6f' of the double whose bits are given; -1 beyond 2**33."""
    neg, n, ok = _round_scaled(bits, 6)
    if not ok:
        return -1
    if neg:
        out[_U(p)] = 45
        p += 1
    p = _uint(out, p, n // 1000000)
    out[_U(p)] = 46
    return _padded(out, p + 1, n % 1000000, 6)


@njit(cache=True, inline="always")
def _json_time_ns(out: Any, p: int, ns: int) -> int:
    """repr(ns / 1e9): the decimal without trailing zeros, scientific below 1e-4."""
    if ns < 0:
        out[_U(p)] = 45
        p += 1
        ns = -ns
    if ns == 0:
        out[_U(p)] = 48
        out[_U(p + 1)] = 46
        out[_U(p + 2)] = 48
        return p + 3
    if ns >= 100000:
        p = _uint(out, p, ns // 1000000000)
        out[_U(p)] = 46
        f = ns % 1000000000
        if f == 0:
            out[_U(p + 1)] = 48
            return p + 2
        p = _fraction(out, p, f, 9)
        while out[_U(p - 1)] == 48:
            p -= 1
        return p
    # below 1e-4 s: d.ddde-0X
    digits = _ndigits(ns)
    exp = digits - 1 - 9
    while ns % 10 == 0:
        ns //= 10
        digits -= 1
    start = p
    p = _uint(out, p + 1, ns)  # leave room for the point after the first digit
    out[_U(start)] = out[_U(start + 1)]
    if digits > 1:
        out[_U(start + 1)] = 46
    else:
        p = start + 1
    out[_U(p)] = 101
    out[_U(p + 1)] = 45
    p += 2
    e = -exp
    if e < 10:
        out[_U(p)] = 48
        p += 1
    return _uint(out, p, e)


@njit(cache=True, inline="always")
def _round_frac(fr: Any, q: Any, p10: Any, odd: Any) -> Any:
    """fr * p10 / 2**q rounded half to even (all unsigned, the product below 2**64); `odd`:
    the parity the integer part adds (only with p10 == 1: else it is a multiple of ten)."""
    x = fr * p10
    d = x >> q
    rem = x & ((_U(1) << q) - _U(1))
    half = _U(1) << (q - _U(1))
    if rem > half or (rem == half and ((d + odd) & _U(1)) == _U(1)):
        d += _U(1)
    return d


@njit(cache=True, inline="always")
def _reads_back(fr: Any, q: Any, d: Any, p10: Any, pow2: bool, even: bool) -> bool:
    """Whether I + d / p10 reads back (round half to even) as the double I + fr / 2**q, with
    d the nearest such fraction (both unsigned: d * 2**q and fr * p10 stay below 2**64).
    `pow2`: the mantissa is a power of two (the gap below is half as wide), `even`: it is even."""
    a = d << q
    b = fr * p10
    if a >= b:
        twice = _U(2) * (a - b)
    else:
        twice = _U(2) * (b - a)
        if pow2:
            twice *= _U(2)
    return twice < p10 or (twice == p10 and even)


@njit(cache=True, inline="always")
def _split_big(mag: Any) -> Any:
    """(in range, m, q, fr) of a double's magnitude bits, t = m / 2**q and fr the fraction's
    bits, where 2**22 <= t < 2**33 (else in range is False)."""
    ex = (mag >> 52) & 0x7FF
    if ex < 1023 + 22 or ex >= 1023 + 33:
        return False, _U(0), _U(0), _U(0)
    m = _U((mag & _MASK52) | (1 << 52))
    q = _U(1075 - ex)
    return True, m, q, m & ((_U(1) << q) - _U(1))


@njit(cache=True, inline="always")
def _json_time_big(out: Any, p: int, bits: int) -> int:
    """repr(round(t, 9)) for 2**22 <= |t| < 2**33 s: the shortest decimal that reads back as
    the double nearest t's nine-decimal rounding. -1 out of that range.

    There t is m / 2**q with 20 <= q <= 30: its integer part m >> q and its fraction
    fr / 2**q (fr below 2**30), so fr * 10**k for k <= 10 decimals fits 64 bits unsigned
    and every step is a few integer operations."""
    mag = bits & 0x7FFFFFFFFFFFFFFF
    ok, m, q, fr = _split_big(mag)
    if not ok:
        return -1
    p9 = _U(1000000000)
    d9 = _round_frac(fr, q, p9, _U(0))
    if not _reads_back(fr, q, d9, p9, m == _U(1) << _U(52), (m & _U(1)) == _U(0)):
        # round(t, 9) is a neighbouring double
        ok, m, q, fr = _split_big(mag + 1 if (d9 << q) > fr * p9 else mag - 1)
        if not ok:
            return -1
    whole = m >> q
    pow2 = m == (_U(1) << _U(52))
    even = (m & _U(1)) == _U(0)
    # the fewest decimals that read back: reading back at k implies at k + 1 (the same
    # number with a zero more), and 10 always do (17 significant digits): a binary search
    lo = 0
    hi = 10
    while lo < hi:
        mid = (lo + hi) // 2
        p10 = _P10[_U(mid)]
        odd = whole & _U(1) if mid == 0 else _U(0)
        if _reads_back(fr, q, _round_frac(fr, q, p10, odd), p10, pow2, even):
            hi = mid
        else:
            lo = mid + 1
    k = lo
    p10 = _P10[_U(k)]
    d = _round_frac(fr, q, p10, whole & _U(1) if k == 0 else _U(0))
    if d == p10:  # rounded up to the next integer
        whole += _U(1)
        d = _U(0)
    if bits < 0:
        out[_U(p)] = 45
        p += 1
    p = _uint(out, p, whole)
    out[_U(p)] = 46
    if k == 0:
        out[_U(p + 1)] = 48
        return p + 2
    return _padded(out, p + 1, d, k)


@kernel(
    f"i8 i8 i8 i8[:] i8 {array_types(COLUMNS, ('frame',))} i8[:] i8[:] i8[:] i8[:] "
    f"{tuple_of(array_types(COLUMNS, ENDPOINT_COLUMNS))} "
    f"{array_types(COLUMNS, ('frame_len', 'flags', 'seq', 'ack'))} i8[:] "
    f"{array_types(COLUMNS, _OPTION_COLUMNS)} "
    "i8[:] i8[:] u4[:] i8[:] i8[:] i8[:] u1[:] i8[:] u1[:] i8[:] -> i8",
    nogil=True,
)
def format_packets(
    fmt: int,
    tmode: int,
    digits: int,
    rows: Any,
    start: int,
    frame: Any,
    rel_ns: Any,
    time_bits: Any,
    tval: Any,
    ts_ns: Any,
    endpoints: Any,
    frame_len: Any,
    flags: Any,
    seq: Any,
    ack: Any,
    win: Any,
    urp: Any,
    plen: Any,
    opt_order: Any,
    opt_mss: Any,
    opt_ws: Any,
    tsval: Any,
    tsecr: Any,
    sack_n: Any,
    sack_le: Any,
    sack_re: Any,
    sack_base: Any,
    stream: Any,
    bits: Any,
    dup_frame: Any,
    dup_num: Any,
    pfx_order: Any,
    vocab: Any,
    voff: Any,
    out: Any,
    ends: Any,
) -> int:
    """Rows ``rows[start:]`` (table indices) into `out` while they surely fit; ``ends[j]`` is
    where row ``start + j`` ends. Returns the number n of rows written, or -(n + 1) when row
    ``start + n`` has a time this writer does not print (the caller writes it in Python).
    ``time_bits`` holds the bits of ``rel_ns / 1e9`` as a double (the default Time column and
    JSON's ``time``); ``tval`` the nanoseconds a tshark time format prints (`tmode`, with
    `digits` decimals, also those of JSON's ``ts``)."""
    src_hi, src_lo, dst_hi, dst_lo, sport, dport = endpoints
    p = 0
    cap = out.shape[0]
    j = start
    stamp = np.zeros(32, np.uint8)  # utc_time's YYYY-MM-DDTHH:MM:SS. of second `stamp_sec`
    stamp_sec = _U(0)
    n_rows = rows.shape[0]
    while j < n_rows and p + ROW_MAX <= cap:
        i = _U(rows[_U(j)])
        f = np.int64(flags[i])
        b = np.int64(bits[i])
        if fmt == FMT_JSONL:
            p = _copy(out, p, vocab, voff, W_JSON_HEAD)
            p = _uint(out, p, np.int64(frame[i]))
            p = _lit(out, p, b', "time": ')
            ns = rel_ns[i]
            if -_TIME_MAX_NS < ns < _TIME_MAX_NS:
                p = _json_time_ns(out, p, ns)
            else:
                p = _json_time_big(out, p, time_bits[i])
                if p < 0:
                    return -(j - start + 1)
            p = _lit(out, p, b', "ts": ')
            t = ts_ns[i]
            if t >= 1000000000:
                # ts, ts_ns and utc_time share their digits: the seconds and nine decimals
                # are written once, where ts_ns goes, and copied to the other two; the
                # date and clock of utc_time change once a second (`stamp`)
                sec = _U(t) // _U(1000000000)
                nd = _ndigits_u(sec)
                q = p + nd + (digits + 1 if digits > 0 else 0) + 11
                r = _uint(out, q, np.int64(sec))
                r = _padded(out, r, np.int64(_U(t) - sec * _U(1000000000)), 9)
                for k in range(nd):
                    out[_U(p + k)] = out[_U(q + k)]
                p += nd
                if digits > 0:
                    out[_U(p)] = 46
                    for k in range(digits):
                        out[_U(p + 1 + k)] = out[_U(q + nd + k)]
                    p += digits + 1
                p = _lit(out, p, b', "ts_ns": ')
                p = _lit(out, r, b', "utc_time": "')
                if sec != stamp_sec:
                    stamp_sec = sec
                    _put_rfc3339(stamp, 0, t)
                for k in range(20):
                    out[_U(p + k)] = stamp[_U(k)]
                for k in range(9):
                    out[_U(p + 20 + k)] = out[_U(r - 9 + k)]
                out[_U(p + 29)] = 90
                out[_U(p + 30)] = 34
                p += 31
            else:
                p = _seconds(out, p, t, digits)
                p = _lit(out, p, b', "ts_ns": ')
                p = _int(out, p, t)
                p = _lit(out, p, b', "utc_time": "')
                p = _put_rfc3339(out, p, t)
                p = _lit(out, p, b'"')
            p = _lit(out, p, b', "src": "')
            p = _addr(out, p, np.int64(src_hi[i]), np.int64(src_lo[i]))
            p = _lit(out, p, b'", "dst": "')
            p = _addr(out, p, np.int64(dst_hi[i]), np.int64(dst_lo[i]))
            p = _lit(out, p, b'", "sport": ')
            p = _uint(out, p, np.int64(sport[i]))
            p = _lit(out, p, b', "dport": ')
            p = _uint(out, p, np.int64(dport[i]))
            p = _lit(out, p, b', "length": ')
            p = _uint(out, p, np.int64(frame_len[i]))
            p = _copy(out, p, vocab, voff, W_JSON_FLAGS + (f & 0x1FF))
            p = _uint(out, p, np.int64(seq[i]))
            p = _lit(out, p, b', "ack": ')
            p = _uint(out, p, np.int64(ack[i]))  # the raw field without ACK (tshark's tcp.ack)
            p = _lit(out, p, b', "len": ')
            p = _uint(out, p, np.int64(plen[i]))
            p = _lit(out, p, b', "win": ')
            p = _int(out, p, win[i])
            p = _lit(out, p, b', "stream": ')
            p = _int(out, p, stream[i])
            if b == 0:
                p = _lit(out, p, b', "analysis": [], "info": "')
            else:
                p = _lit(out, p, b', "analysis": [')
                first = True
                for k in range(32):
                    if b & (1 << k):
                        if not first:
                            out[_U(p)] = 44
                            out[_U(p + 1)] = 32
                            p += 2
                        first = False
                        p = _copy(out, p, vocab, voff, W_NAME + k)
                p = _lit(out, p, b'], "info": "')
        else:
            s = p
            p = _uint(out, p, np.int64(frame[i]))
            if fmt == FMT_TABLE:
                p = _align_right(out, s, p, 7)
                out[_U(p)] = 32
            else:
                out[_U(p)] = 44
            p += 1
            s = p
            if tmode == TIME_DEFAULT:
                p = _fixed6(out, p, time_bits[i])
                if p < 0:
                    return -(j - start + 1)
            elif tmode == TIME_SECONDS:
                p = _seconds(out, p, tval[i], digits)
            else:
                p = _clock(out, p, tval[i], digits, tmode == TIME_DATE)
            if fmt == FMT_TABLE:
                p = _align_right(out, s, p, 12)
                out[_U(p)] = 32
                p += 1
                s = p
                p = _addr(out, p, np.int64(src_hi[i]), np.int64(src_lo[i]))
                p = _align_right(out, s, p, 15)
                p = _lit(out, p, b" \xe2\x86\x92 ")
                s = p
                p = _addr(out, p, np.int64(dst_hi[i]), np.int64(dst_lo[i]))
                while p - s < 15:
                    out[_U(p)] = 32
                    p += 1
                out[_U(p)] = 32
                p += 1
                s = p
                p = _uint(out, p, np.int64(frame_len[i]))
                p = _align_right(out, s, p, 5)
                out[_U(p)] = 32
                p += 1
            else:
                out[_U(p)] = 44
                p = _addr(out, p + 1, np.int64(src_hi[i]), np.int64(src_lo[i]))
                out[_U(p)] = 44
                p = _addr(out, p + 1, np.int64(dst_hi[i]), np.int64(dst_lo[i]))
                out[_U(p)] = 44
                p = _uint(out, p + 1, np.int64(frame_len[i]))
                out[_U(p)] = 44
                p += 1
        # Wireshark's Info column (see `tcpwhy.report.packets.info_text`)
        s = p
        # CSV quotes the Info text when it holds a comma: without analysis prefixes only the
        # ", " between two flag names can put one there (and nothing a quote)
        quote = fmt == FMT_CSV and b == 0 and (f & 0x1FF) & ((f & 0x1FF) - 1) != 0
        if quote:
            out[_U(p)] = 34
            p += 1
        if b != 0:
            if b & (A_SPURIOUS | A_FAST_RETRANS):
                b &= ~A_RETRANS
            for k in pfx_order:
                if b & (1 << k):
                    if (1 << k) == A_DUP_ACK:
                        p = _lit(out, p, b"[TCP Dup ACK ")
                        p = _int(out, p, dup_frame[i])
                        out[_U(p)] = 35
                        p = _int(out, p + 1, dup_num[i])
                        p = _lit(out, p, b"] ")
                    else:
                        p = _copy(out, p, vocab, voff, W_PREFIX + k)
        p = _uint(out, p, np.int64(sport[i]))
        p = _lit(out, p, b" \xe2\x86\x92 ")
        p = _uint(out, p, np.int64(dport[i]))
        p = _copy(out, p, vocab, voff, W_INFO_FLAGS + (f & 0x1FF))
        p = _uint(out, p, np.int64(seq[i]))
        if f & _ACK:
            p = _lit(out, p, b" Ack=")
            p = _uint(out, p, np.int64(ack[i]))
        p = _lit(out, p, b" Win=")
        p = _int(out, p, win[i])
        if f & _URG:
            p = _lit(out, p, b" Urg=")
            p = _uint(out, p, np.int64(urp[i]))
        p = _lit(out, p, b" Len=")
        p = _uint(out, p, np.int64(plen[i]))
        order = np.int64(opt_order[i])
        while order:
            code = order & 7
            order >>= 3
            if code == 1:
                p = _lit(out, p, b" MSS=")
                p = _int(out, p, np.int64(opt_mss[i]))
            elif code == 2:
                p = _lit(out, p, b" WS=")
                ws = np.int64(opt_ws[i])
                p = _uint(out, p, np.int64(1) << (ws if ws < 14 else np.int64(14)))
            elif code == 3:
                p = _lit(out, p, b" SACK_PERM")
            elif code == 4:
                p = _lit(out, p, b" TSval=")
                p = _uint(out, p, np.int64(tsval[i]))
                p = _lit(out, p, b" TSecr=")
                p = _uint(out, p, np.int64(tsecr[i]))
            elif code == 5:
                base = sack_base[i]
                for e in range(min(np.int64(sack_n[i]), sack_le.shape[1])):
                    p = _lit(out, p, b" SLE=")
                    p = _uint(out, p, (np.int64(sack_le[i, _U(e)]) - base) & 0xFFFFFFFF)
                    p = _lit(out, p, b" SRE=")
                    p = _uint(out, p, (np.int64(sack_re[i, _U(e)]) - base) & 0xFFFFFFFF)
        if quote:
            out[_U(p)] = 34
            p += 1
        elif fmt == FMT_CSV and b != 0:
            p = _csv_quote(out, s, p)
        elif fmt == FMT_JSONL:
            out[_U(p)] = 34
            out[_U(p + 1)] = 125
            p += 2
        out[_U(p)] = 10
        p += 1
        ends[_U(j - start)] = p
        j += 1
    return j - start


@njit(cache=True, inline="always")
def _csv_quote(out: Any, s: int, p: int) -> int:
    """Quote out[s:p] as csv.writer does when it holds a comma or a quote (quotes doubled)."""
    need = False
    quotes = 0
    for k in range(s, p):
        c = out[_U(k)]
        if c == 44 or c == 10 or c == 13:
            need = True
        elif c == 34:
            need = True
            quotes += 1
    if not need:
        return p
    q = p + quotes + 1  # new end, before the closing quote
    out[_U(q)] = 34
    w = q - 1
    for k in range(p - 1, s - 1, -1):
        out[_U(w)] = out[_U(k)]
        w -= 1
        if out[_U(k)] == 34:
            out[_U(w)] = 34
            w -= 1
    out[_U(s)] = 34
    return q + 1
