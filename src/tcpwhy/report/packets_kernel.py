"""A compiled row writer for `tcpwhy packets`: the packet list written from the table's columns.

Why it exists: building each row in Python (a row object, an f-string, the Info text
piece by piece) cost about twelve microseconds a packet, several times what decoding,
stream tracking and analysis cost together. Here one call writes as many rows as fit a
buffer, in the table, CSV or JSON-lines format, byte for byte what the per-row writer in
`tcpwhy.report.packets` prints (tests/test_packets_compiled.py holds the two together).

The vocabulary ``vocab[voff[w]:voff[w + 1]]`` holds the static words: the TCP flag names
(words 0-8, in `FLAG_NAMES` order), the Info prefix of each analysis flag (words 9-23, by
bit) and the JSON string of each flag's name (words 24-38). ``pfx_order`` lists the
analysis bits in the order Wireshark's Info prefixes read.

Times are printed from their exact binary value as CPython does (``_round_scaled`` of the
`conns` writer); JSON's ``repr(round(t, 9))`` is the nanosecond count itself while a
double resolves nanoseconds (relative times below 2**22 s), else the call returns -1 and
the caller writes those rows in Python.
"""

from __future__ import annotations

from typing import Any

from tcpwhy.native import kernel, njit
from tcpwhy.report.conns_kernel import _put_addr, _put_fixed, _put_uint, _round_scaled

FMT_TABLE, FMT_CSV, FMT_JSONL = 0, 1, 2
ROW_MAX = 4096  # bytes one row can take at most (all options, flags and analysis prefixes)
W_FLAG, W_PREFIX, W_NAME = 0, 9, 24
A_RETRANS, A_FAST_RETRANS, A_SPURIOUS, A_DUP_ACK = 1, 2, 4, 64
_ACK, _URG = 16, 32
_TIME_MAX_NS = 1 << 52  # |relative time| up to which a double resolves nanoseconds (2**22 s)


@njit(cache=True)
def _put_word(out: Any, p: int, vocab: Any, voff: Any, w: int) -> int:
    a = voff[w]
    b = voff[w + 1]
    for k in range(b - a):
        out[p + k] = vocab[a + k]
    return p + b - a


@njit(cache=True)
def _put_lit(out: Any, p: int, text: Any) -> int:
    for k in range(len(text)):
        out[p + k] = text[k]
    return p + len(text)


@njit(cache=True)
def _put_int(out: Any, p: int, v: int) -> int:
    if v < 0:
        out[p] = 45
        return _put_uint(out, p + 1, -v)
    return _put_uint(out, p, v)


@njit(cache=True)
def _align_right(out: Any, start: int, p: int, width: int) -> int:
    """Right-align the field written at out[start:p] to `width` characters."""
    n = p - start
    if n >= width:
        return p
    shift = width - n
    for k in range(n - 1, -1, -1):
        out[start + shift + k] = out[start + k]
    for k in range(shift):
        out[start + k] = 32
    return start + width


@njit(cache=True)
def _pad_left(out: Any, start: int, p: int, width: int) -> int:
    while p - start < width:
        out[p] = 32
        p += 1
    return p


@njit(cache=True)
def _put_json_time(out: Any, p: int, ns: int) -> int:
    """repr(ns / 1e9): the decimal without trailing zeros, scientific below 1e-4."""
    if ns < 0:
        out[p] = 45
        p += 1
        ns = -ns
    if ns == 0:
        out[p] = 48
        out[p + 1] = 46
        out[p + 2] = 48
        return p + 3
    if ns >= 100000:
        p = _put_uint(out, p, ns // 1000000000)
        out[p] = 46
        p += 1
        f = ns % 1000000000
        if f == 0:
            out[p] = 48
            return p + 1
        width = 9
        while f % 10 == 0:
            f //= 10
            width -= 1
        for k in range(width - 1, -1, -1):
            out[p + k] = 48 + f % 10
            f //= 10
        return p + width
    # below 1e-4 s: d.ddde-0X
    digits = 0
    t = ns
    while t > 0:
        digits += 1
        t //= 10
    exp = digits - 1 - 9
    while ns % 10 == 0:
        ns //= 10
        digits -= 1
    start = p
    p = _put_uint(out, p + 1, ns)  # leave room for the point after the first digit
    out[start] = out[start + 1]
    if digits > 1:
        out[start + 1] = 46
    else:
        p = start + 1
    out[p] = 101
    out[p + 1] = 45
    p += 2
    e = -exp
    if e < 10:
        out[p] = 48
        p += 1
    return _put_uint(out, p, e)


@njit(cache=True)
def _put_epoch(out: Any, p: int, ns: int, digits: int) -> int:
    """Epoch seconds with `digits` decimals (6 or 9: the capture's resolution), truncated."""
    if ns < 0:
        out[p] = 45
        p += 1
        ns = -ns
    p = _put_uint(out, p, ns // 1000000000)
    out[p] = 46
    f = ns % 1000000000
    for _ in range(9 - digits):
        f //= 10
    for k in range(digits, 0, -1):
        out[p + k] = 48 + f % 10
        f //= 10
    return p + 1 + digits


@njit(cache=True)
def _put_info(
    out: Any,
    p: int,
    i: int,
    sport: Any,
    dport: Any,
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
    bits: Any,
    dup_frame: Any,
    dup_num: Any,
    pfx_order: Any,
    vocab: Any,
    voff: Any,
) -> int:
    """Wireshark's Info column of TCP row i (see `tcpwhy.report.packets.info_text`)."""
    b = bits[i]
    if b != 0:
        if b & (A_SPURIOUS | A_FAST_RETRANS):
            b &= ~A_RETRANS
        for k in pfx_order:
            if b & (1 << k):
                if (1 << k) == A_DUP_ACK:
                    p = _put_lit(out, p, b"[TCP Dup ACK ")
                    p = _put_int(out, p, dup_frame[i])
                    out[p] = 35
                    p = _put_int(out, p + 1, dup_num[i])
                    p = _put_lit(out, p, b"] ")
                else:
                    p = _put_word(out, p, vocab, voff, W_PREFIX + k)
    p = _put_uint(out, p, sport[i])
    p = _put_lit(out, p, b" \xe2\x86\x92 ")
    p = _put_uint(out, p, dport[i])
    out[p] = 32
    out[p + 1] = 91
    p += 2
    f = flags[i]
    if f & 0x1FF:
        first = True
        for k in range(9):
            if f & (1 << k):
                if not first:
                    out[p] = 44
                    out[p + 1] = 32
                    p += 2
                first = False
                p = _put_word(out, p, vocab, voff, W_FLAG + k)
    else:
        p = _put_lit(out, p, b"<None>")
    p = _put_lit(out, p, b"] Seq=")
    p = _put_uint(out, p, seq[i])
    if f & _ACK:
        p = _put_lit(out, p, b" Ack=")
        p = _put_uint(out, p, ack[i])
    p = _put_lit(out, p, b" Win=")
    p = _put_int(out, p, win[i])
    if f & _URG:
        p = _put_lit(out, p, b" Urg=")
        p = _put_uint(out, p, urp[i])
    p = _put_lit(out, p, b" Len=")
    p = _put_uint(out, p, plen[i])
    order = opt_order[i]
    while order:
        code = order & 7
        order >>= 3
        if code == 1:
            p = _put_lit(out, p, b" MSS=")
            p = _put_int(out, p, opt_mss[i])
        elif code == 2:
            p = _put_lit(out, p, b" WS=")
            p = _put_uint(out, p, 1 << min(opt_ws[i], 14))
        elif code == 3:
            p = _put_lit(out, p, b" SACK_PERM")
        elif code == 4:
            p = _put_lit(out, p, b" TSval=")
            p = _put_uint(out, p, tsval[i])
            p = _put_lit(out, p, b" TSecr=")
            p = _put_uint(out, p, tsecr[i])
        elif code == 5:
            base = sack_base[i]
            for j in range(min(sack_n[i], sack_le.shape[1])):
                p = _put_lit(out, p, b" SLE=")
                p = _put_uint(out, p, (sack_le[i, j] - base) & 0xFFFFFFFF)
                p = _put_lit(out, p, b" SRE=")
                p = _put_uint(out, p, (sack_re[i, j] - base) & 0xFFFFFFFF)
    return p


@kernel(
    "i8 i8 i8[:] i8 u8[:] i8[:] i8[:] i8[:] u8[:] u8[:] u8[:] u8[:] u2[:] u2[:] u4[:] u2[:] u4[:] "
    "u4[:] i8[:] u2[:] u4[:] u4[:] i4[:] i1[:] u4[:] u4[:] u1[:] u4[:,:] u4[:,:] i8[:] i8[:] "
    "u4[:] i8[:] i8[:] i8[:] u1[:] i8[:] u1[:] i8[:] -> i8"
)
def format_packets(
    fmt: int,
    ts_digits: int,
    rows: Any,
    start: int,
    frame: Any,
    rel_ns: Any,
    time_bits: Any,
    ts_ns: Any,
    src_hi: Any,
    src_lo: Any,
    dst_hi: Any,
    dst_lo: Any,
    sport: Any,
    dport: Any,
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
    where row ``start + j`` ends. Returns the number of rows written, or -1 when a row's
    relative time is beyond what this writer prints exactly. ``time_bits`` holds the bits of
    ``rel_ns / 1e9`` as a double, which the table and CSV print to six decimals."""
    p = 0
    cap = out.shape[0]
    j = start
    while j < rows.shape[0] and p + ROW_MAX <= cap:
        i = rows[j]
        ns = rel_ns[i]
        if ns >= _TIME_MAX_NS or ns <= -_TIME_MAX_NS:
            return -1
        if fmt == FMT_JSONL:
            p = _put_lit(out, p, b'{"frame": ')
            p = _put_uint(out, p, frame[i])
            p = _put_lit(out, p, b', "time": ')
            p = _put_json_time(out, p, ns)
            if ts_digits >= 0:
                p = _put_lit(out, p, b', "ts": ')
                p = _put_epoch(out, p, ts_ns[i], ts_digits)
            p = _put_lit(out, p, b', "src": "')
            p = _put_addr(out, p, src_hi[i], src_lo[i], False)
            p = _put_lit(out, p, b'", "dst": "')
            p = _put_addr(out, p, dst_hi[i], dst_lo[i], False)
            p = _put_lit(out, p, b'", "sport": ')
            p = _put_uint(out, p, sport[i])
            p = _put_lit(out, p, b', "dport": ')
            p = _put_uint(out, p, dport[i])
            p = _put_lit(out, p, b', "length": ')
            p = _put_uint(out, p, frame_len[i])
            p = _put_lit(out, p, b', "flags": [')
            f = flags[i]
            first = True
            for k in range(9):
                if f & (1 << k):
                    if not first:
                        out[p] = 44
                        out[p + 1] = 32
                        p += 2
                    first = False
                    out[p] = 34
                    p = _put_word(out, p + 1, vocab, voff, W_FLAG + k)
                    out[p] = 34
                    p += 1
            p = _put_lit(out, p, b'], "seq": ')
            p = _put_uint(out, p, seq[i])
            p = _put_lit(out, p, b', "ack": ')
            p = _put_uint(out, p, ack[i] if f & _ACK else 0)
            p = _put_lit(out, p, b', "len": ')
            p = _put_uint(out, p, plen[i])
            p = _put_lit(out, p, b', "win": ')
            p = _put_int(out, p, win[i])
            p = _put_lit(out, p, b', "stream": ')
            p = _put_int(out, p, stream[i])
            p = _put_lit(out, p, b', "analysis": [')
            b = bits[i]
            first = True
            for k in range(32):
                if b & (1 << k):
                    if not first:
                        out[p] = 44
                        out[p + 1] = 32
                        p += 2
                    first = False
                    p = _put_word(out, p, vocab, voff, W_NAME + k)
            p = _put_lit(out, p, b'], "info": "')
        else:
            s = p
            p = _put_uint(out, p, frame[i])
            if fmt == FMT_TABLE:
                p = _align_right(out, s, p, 7)
                out[p] = 32
                p += 1
            else:
                out[p] = 44
                p += 1
            s = p
            neg, n6, ok = _round_scaled(time_bits[i], 6)
            if not ok:
                return -1
            p = _put_fixed(out, p, neg, n6, 6)
            if fmt == FMT_TABLE:
                p = _align_right(out, s, p, 12)
                out[p] = 32
                p += 1
                s = p
                p = _put_addr(out, p, src_hi[i], src_lo[i], False)
                p = _align_right(out, s, p, 15)
                p = _put_lit(out, p, b" \xe2\x86\x92 ")
                s = p
                p = _put_addr(out, p, dst_hi[i], dst_lo[i], False)
                p = _pad_left(out, s, p, 15)
                out[p] = 32
                p += 1
                s = p
                p = _put_uint(out, p, frame_len[i])
                p = _align_right(out, s, p, 5)
                out[p] = 32
                p += 1
            else:
                out[p] = 44
                p = _put_addr(out, p + 1, src_hi[i], src_lo[i], False)
                out[p] = 44
                p = _put_addr(out, p + 1, dst_hi[i], dst_lo[i], False)
                out[p] = 44
                p = _put_uint(out, p + 1, frame_len[i])
                out[p] = 44
                p += 1
        s = p
        p = _put_info(
            out, p, i, sport, dport, flags, seq, ack, win, urp, plen, opt_order, opt_mss,
            opt_ws, tsval, tsecr, sack_n, sack_le, sack_re, sack_base, bits, dup_frame,
            dup_num, pfx_order, vocab, voff,
        )  # fmt: skip
        if fmt == FMT_CSV:
            p = _csv_quote(out, s, p)
        elif fmt == FMT_JSONL:
            p = _put_lit(out, p, b'"}')
        out[p] = 10
        p += 1
        ends[j - start] = p
        j += 1
    return j - start


@njit(cache=True)
def _csv_quote(out: Any, s: int, p: int) -> int:
    """Quote out[s:p] as csv.writer does when it holds a comma or a quote (quotes doubled)."""
    need = False
    quotes = 0
    for k in range(s, p):
        c = out[k]
        if c == 44 or c == 10 or c == 13:
            need = True
        elif c == 34:
            need = True
            quotes += 1
    if not need:
        return p
    q = p + quotes + 1  # new end, before the closing quote
    out[q] = 34
    w = q - 1
    for k in range(p - 1, s - 1, -1):
        out[w] = out[k]
        w -= 1
        if out[k] == 34:
            out[w] = 34
            w -= 1
    out[s] = 34
    return q + 1
