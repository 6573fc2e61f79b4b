"""Type-checks a parsed filter as tshark 4.0 does and turns it into vectorised tests.

The checks follow tshark 4.0's semantic pass (epan/dfilter/semcheck.c): a
literal takes the type of the field on the left, arithmetic takes the type of
its first operand, a slice is a byte string, and each failure is reported with
tshark's message at the same place. Evaluation follows tshark's filter engine
(dfvm.c), over whole columns instead of one frame at a time:

* an expression yields, per row, the list of its values (a field has one value
  per occurrence; ``a + b`` the sum of every pair of values) and whether it was
  *reached*: a field that is absent, or a function that has nothing to return,
  makes the whole relation false before any comparison, as tshark's jumps do;
* a comparison holds for *any* pair of values (``==``, ``!==``, ``<``…,
  ``contains``, ``matches``), or for *all* pairs (``!=``, ``===``, and any
  operator after ``all``); a pair whose comparison is an error (an unsigned
  value against a negative one) counts for neither;
* arithmetic is tshark's 32-bit integer arithmetic: an overflow or a division
  by zero drops that value, and a subtraction below zero or a unary minus gives
  a signed value; ``&`` on byte strings keeps the shorter length;
* an arithmetic expression alone is true when some value is not zero
  (``tcp.flags & 0x02``), a slice alone when some value is not empty.

Each test takes the candidate rows (indices into the table) and returns a
boolean array over them. `and` hands each operand only the rows its cheaper
siblings kept, and `or` only the rows still unmatched, so expensive tests
(payload searches, HTTP parsing, sequence analysis) see as few rows as
possible; operands are ordered by an estimated cost, which is safe because
tests have no side effects. Literals are converted once, at compile time, to
the field's value type; nothing from the filter text is ever executed.
"""

from __future__ import annotations

import bisect
import calendar
import functools
import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from tcpwhy.filter import syntax as S
from tcpwhy.filter.context import FilterContext
from tcpwhy.filter.fields import (
    ABSTIME,
    BOOL,
    BYTES,
    ETHER,
    FIELDS,
    FRAMENUM,
    IPV4,
    IPV6,
    NONE,
    PROTO,
    RELTIME,
    STRING,
    UINT,
    ByteValues,
    Field,
    Mask,
    Occ,
    Rows,
    type_name,
)
from tcpwhy.filter.pcre import FilterRegexError, compile_pattern
from tcpwhy.filter.syntax import FilterError

_SEARCH_CHUNK = 1 << 24  # payload bytes gathered per joined search

FUNCTIONS = frozenset({"lower", "upper", "len", "count", "string", "max", "min", "abs"})

FOREIGN_PROTOCOLS = frozenset(
    [
        "a11",
        "a21",
        "a615a",
        "aaf",
        "acf",
        "adb",
        "bfd",
        "c1222",
        "c15",
        "dc",
        "dcc",
        "e100",
        "e164",
        "e212",
        "fc",
        "fc00",
        "fefd",
        "ff",
    ]
)
"""Wireshark protocol names that look like byte or number literals: tshark reads ``ff`` in
``tcp.payload[0] == ff`` as the protocol FF (never in a TCP frame), not the byte 0xff, so
tcpwhy does too."""


@functools.cache
def wireshark_fields() -> frozenset[str]:
    """The names of Wireshark's fields and protocols for what a TCP capture's table holds
    (frame, link, IP, TCP, ICMP, TLS, HTTP), from ``tshark -G fields``
    (data/wireshark-fields.txt, made by tests/data/filters/generate.py)."""
    from importlib import resources

    text = (resources.files("tcpwhy") / "data" / "wireshark-fields.txt").read_text()
    return frozenset(ln for ln in text.splitlines() if ln and not ln.startswith("#"))


HTTP_PROTO = "http"
"""The one protocol whose bytes tcpwhy has: an HTTP segment's payload."""

# ---------------------------------------------------------------- types

INTS = frozenset({UINT, FRAMENUM, BOOL})
_ALL_TYPES = frozenset(
    {UINT, FRAMENUM, BOOL, IPV4, IPV6, ETHER, RELTIME, ABSTIME, BYTES, STRING, PROTO}
)
CAN: dict[str, frozenset[str]] = {
    "eq": _ALL_TYPES,
    "cmp": _ALL_TYPES,
    "contains": frozenset({BYTES, STRING, ETHER, PROTO}),
    "matches": frozenset({BYTES, STRING, ETHER, PROTO}),
    "&": frozenset({UINT, FRAMENUM, IPV4, IPV6, ETHER, BYTES}),
    "+": frozenset({UINT, FRAMENUM, RELTIME}),
    "-": frozenset({UINT, FRAMENUM, RELTIME}),
    "*": frozenset({UINT, FRAMENUM}),
    "/": frozenset({UINT, FRAMENUM}),
    "%": frozenset({UINT, FRAMENUM}),
    "neg": frozenset({UINT, FRAMENUM, RELTIME}),
    "slice": frozenset({BYTES, STRING, ETHER, IPV4, IPV6, PROTO}),
    "negative": frozenset({UINT, FRAMENUM, BOOL, RELTIME}),
    "string": frozenset({UINT, FRAMENUM, IPV4, IPV6, ETHER}),
}
_BYTES_TYPES = frozenset({ETHER, BYTES, IPV6})
"""Types tshark compares as bytes without converting them (is_bytes_type)."""
_WIRE_SIZE = {IPV4: 4, IPV6: 16, ETHER: 6, FRAMENUM: 4, BOOL: 0, RELTIME: 0, ABSTIME: 0, NONE: 0}


def ft_name(ftype: str, bits: int = 32) -> str:
    """tshark's internal name of a type (FT_UINT16…), as some of its messages print it."""
    if ftype == UINT:
        return f"FT_UINT{bits}"
    return {
        FRAMENUM: "FT_FRAMENUM",
        BOOL: "FT_BOOLEAN",
        IPV4: "FT_IPv4",
        IPV6: "FT_IPv6",
        ETHER: "FT_ETHER",
        RELTIME: "FT_RELATIVE_TIME",
        ABSTIME: "FT_ABSOLUTE_TIME",
        BYTES: "FT_BYTES",
        STRING: "FT_STRING",
        NONE: "FT_NONE",
        PROTO: "FT_PROTOCOL",
    }[ftype]


def compatible(a: str, b: str) -> bool:
    """tshark's compatible_ftypes."""
    if a in (UINT, FRAMENUM):
        return b in (UINT, FRAMENUM, BOOL)
    if a in (ETHER, BYTES):
        return b in (ETHER, BYTES)
    return a == b


@dataclass(frozen=True)
class Typ:
    """A compile-time type: the field type and, for integers, the field's width in bits."""

    ftype: str
    bits: int = 32

    @property
    def name(self) -> str:
        return type_name(self.ftype, self.bits)


T_BYTES = Typ(BYTES)
T_STRING = Typ(STRING)
T_U32 = Typ(UINT, 32)

# ---------------------------------------------------------------- values


@dataclass
class Ints:
    """Integer values and whether each has a signed type (tshark's FT_INT32 results)."""

    v: Any  # int64 array or int
    s: Any = False  # bool array or bool


@dataclass(frozen=True)
class Addr4:
    value: int
    mask: int


@dataclass(frozen=True)
class Addr6:
    hi: int
    lo: int
    mhi: int
    mlo: int


def _ints(x: Any) -> Ints:
    return x if isinstance(x, Ints) else Ints(x, False)


# ---------------------------------------------------------------- literals

_INT_RE = re.compile(r"(0[xX][0-9a-fA-F]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")


def parse_int(text: str) -> int | None:
    """C's strtoul(text, 0) on the whole text (with 0b for binary), or None."""
    if not _INT_RE.fullmatch(text):
        return None
    if text[:2] in ("0x", "0X"):
        return int(text[2:], 16)
    if text[:2] in ("0b", "0B"):
        return int(text[2:], 2)
    if len(text) > 1 and text[0] == "0":
        return int(text[1:], 8)
    if len(text) > 20:
        # above 2**64 (no leading zero), which every caller refuses by the text; Python
        # refuses to convert thousands of decimal digits at all
        return 1 << 64
    return int(text)


def hex_str_to_bytes(text: str) -> bytes | None:
    """Wireshark's hex_str_to_bytes without forced separators: hex digits in pairs (or alone
    before a separator or the end), optionally separated by punctuation."""
    out = bytearray()
    i, n = 0, len(text)
    hexd = "0123456789abcdefABCDEF"
    punct = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    while i < n:
        p = text[i]
        q = text[i + 1] if i + 1 < n else ""
        if p in hexd and q and q in hexd:
            out.append(int(p + q, 16))
            nxt = i + 2
            if nxt < n and text[nxt] in punct:
                nxt += 1
            i = nxt
        elif p in hexd and q and q in punct:
            out.append(int(p, 16))
            i += 2
        elif p in hexd and not q:
            out.append(int(p, 16))
            i += 1
        else:
            return None
    return bytes(out)


def parse_bytes(text: str) -> bytes | None:
    s = text[1:] if text.startswith(":") else text
    m = re.fullmatch(r"0[xX]([0-9A-Fa-f]{1,2})", s)
    if m:
        return bytes([int(m.group(1), 16)])
    if not s:
        return None
    return hex_str_to_bytes(s)


_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?"
)
_LEGACY_RE = re.compile(
    r"([A-Za-z]{3}) +(\d{1,2}), +(\d{4}) +(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?( UTC)?"
)


def parse_abs_time(text: str) -> int | None:
    """Nanoseconds since the epoch of an ISO 8601 or "Sep 26, 2004 23:18:04.95" date; local
    time unless it says UTC (or an offset), as tshark."""
    m = _ISO_RE.fullmatch(text)
    tz: int | None = None
    if m:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        hh, mm, ss = int(m.group(4) or 0), int(m.group(5) or 0), int(m.group(6) or 0)
        frac = m.group(7) or ""
        zone = m.group(8)
        if zone == "Z":
            tz = 0
        elif zone:
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            tz = sign * (int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60)
    else:
        m = _LEGACY_RE.fullmatch(text)
        if m is None or m.group(1).lower() not in _MONTHS:
            return None
        y, mo, d = int(m.group(3)), _MONTHS[m.group(1).lower()], int(m.group(2))
        hh, mm, ss = int(m.group(4)), int(m.group(5)), int(m.group(6))
        frac = m.group(7) or ""
        tz = 0 if m.group(8) else None
    if not (1 <= mo <= 12 and 1 <= d <= 31 and hh < 24 and mm < 60 and ss < 61):
        return None
    fields = (y, mo, d, hh, mm, ss, 0, 0, -1)
    try:
        if tz is None:
            secs = int(time.mktime(fields))
        else:
            secs = calendar.timegm(fields) - tz
    except (OverflowError, ValueError):
        return None
    ns = int((frac + "000000000")[:9]) if frac else 0
    return secs * 1_000_000_000 + ns


_ABS_EXAMPLE = 'Example: "Nov 12, 1999 08:55:44.123" or "2011-07-04 12:34:56"'


class Converter:
    """Literals to values of a type, with tshark's messages (fvalue_from_literal and friends)."""

    def __init__(self, src: str) -> None:
        self.src = src

    def fail(self, node: S.Node, message: str) -> FilterError:
        return FilterError(message, self.src, node.pos, node.length)

    def convert(
        self, lit: S.Literal, t: Typ, *, partial: bool = False, fld: Field | None = None
    ) -> Any:
        if lit.kind == S.STRING:
            raw = lit.value
            assert isinstance(raw, bytes)
            return self.from_string(lit, raw, t, fld)
        if lit.kind == S.CHARCONST:
            assert isinstance(lit.value, int)
            return self.from_charconst(lit, lit.value, t)
        return self.from_literal(lit, lit.text, t, partial, fld)

    def from_string(self, lit: S.Literal, raw: bytes, t: Typ, fld: Field | None) -> Any:
        if t.ftype in (BYTES, STRING, PROTO):
            return raw
        text = raw.decode("utf-8", "replace")
        if t.ftype == ABSTIME:
            v = parse_abs_time(text)
            if v is None:
                raise self.fail(lit, f'"{text}" is not a valid absolute time. {_ABS_EXAMPLE}')
            return v
        if t.ftype == BOOL and fld is not None:
            return self.bool_name(lit, text, fld)
        raise self.fail(lit, f'{t.name} cannot be converted from a string ("{text}").')

    def from_charconst(self, lit: S.Literal, v: int, t: Typ) -> Any:
        if t.ftype in (UINT, FRAMENUM, BOOL):
            if t.ftype == BOOL:
                return Ints(int(v != 0))
            return Ints(v & 0xFFFFFFFF)
        if t.ftype in (BYTES, STRING, PROTO):
            return bytes([v & 0xFF])
        raise self.fail(lit, f"{t.name} cannot be converted from a character constant.")

    def bool_name(self, lit: S.Literal, text: str, fld: Field) -> Ints:
        # tcp.flags.* name their values "Set" and "Not set"
        if text.lower() == "set":
            return Ints(1)
        if text.lower() == "not set":
            return Ints(0)
        raise self.fail(lit, f'"{text}" cannot be found among the possible values for {fld.name}.')

    def from_literal(
        self, lit: S.Literal, text: str, t: Typ, partial: bool, fld: Field | None
    ) -> Any:
        ft = t.ftype
        if ft in (UINT, FRAMENUM):
            v = parse_int(text)
            if v is None:
                raise self.fail(lit, f'"{text}" is not a valid number.')
            if v > 0xFFFFFFFFFFFFFFFF:
                raise self.fail(lit, f'"{text}" causes an integer overflow.')
            top = (1 << t.bits) - 1 if ft == UINT else 0xFFFFFFFF
            if v > top:
                raise self.fail(lit, f'"{text}" too big for this field, maximum {top}.')
            return Ints(v)
        if ft == BOOL:
            if text in ("True", "TRUE"):
                return Ints(1)
            if text in ("False", "FALSE"):
                return Ints(0)
            v = parse_int(text)
            if v is not None and v <= 0xFFFFFFFFFFFFFFFF:
                return Ints(int(v != 0))
            if fld is not None:
                return self.bool_name(lit, text, fld)
            raise self.fail(lit, f'"{text}" is not a valid number.')
        if ft == IPV4:
            return self.ipv4(lit, text)
        if ft == IPV6:
            return self.ipv6(lit, text)
        if ft == ETHER:
            b = parse_bytes(text)
            if partial and b:
                return b
            if b is None or len(b) != 6:
                raise self.fail(lit, f'"{text}" is not a valid Ethernet address.')
            return int.from_bytes(b, "big")
        if ft == RELTIME:
            if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
                raise self.fail(lit, f'"{text}" is not a valid time.')
            return int((Decimal(text) * 1_000_000_000).to_integral_value())
        if ft == ABSTIME:
            v = parse_abs_time(text)
            if v is None:
                raise self.fail(lit, f'"{text}" is not a valid absolute time. {_ABS_EXAMPLE}')
            return v
        if ft in (BYTES, PROTO):
            b = parse_bytes(text)
            if b is None:
                shown = text[1:] if text.startswith(":") else text
                raise self.fail(lit, f'"{shown}" is not a valid byte string.')
            return b
        if ft == STRING:
            return text.encode()
        raise self.fail(lit, f"{t.name} cannot be converted from a literal.")

    def ipv4(self, lit: S.Literal, text: str) -> Addr4:
        addr, slash, bits = text.partition("/")
        try:
            if addr.count(".") != 3:
                raise ValueError(addr)
            a = int(ipaddress.IPv4Address(addr))
        except ValueError:
            raise self.fail(lit, f'"{addr}" is not a valid hostname or IPv4 address.') from None
        n = 32
        if slash:
            nb = parse_int(bits) if bits.isdigit() else None
            if nb is None:
                raise self.fail(lit, f'"{text}" is not a valid hostname or IPv4 address.')
            if nb > 32:
                raise self.fail(
                    lit, f"Netmask bits in a CIDR IPv4 address should be <= 32, not {nb}"
                )
            n = nb
        mask = (0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF
        return Addr4(a & mask, mask)

    def ipv6(self, lit: S.Literal, text: str) -> Addr6:
        addr, slash, bits = text.partition("/")
        try:
            if "%" in addr:
                raise ValueError(addr)
            a = int(ipaddress.IPv6Address(addr))
        except ValueError:
            raise self.fail(lit, f'"{addr}" is not a valid hostname or IPv6 address.') from None
        n = 128
        if slash:
            if not bits.isdigit():
                raise self.fail(lit, f'"{text}" is not a valid hostname or IPv6 address.')
            n = int(bits)
            if n > 128:
                raise self.fail(lit, f"Prefix in a CIDR IPv6 address should be <= 128, not {n}")
        m = ((1 << 128) - 1) ^ ((1 << (128 - n)) - 1)
        a &= m
        return Addr6(a >> 64, a & 0xFFFFFFFFFFFFFFFF, m >> 64, m & 0xFFFFFFFFFFFFFFFF)


# ---------------------------------------------------------------- byte values


def _to_bytes(values: Any, ftype: str) -> ByteValues:
    """Byte form of non-byte values, for slicing addresses as Wireshark does."""
    if isinstance(values, ByteValues):
        return values
    if ftype == IPV4:
        return ByteValues([int(v).to_bytes(4, "big") for v in np.asarray(values).tolist()])
    if ftype == ETHER:
        return ByteValues([int(v).to_bytes(6, "big") for v in np.asarray(values).tolist()])
    if ftype == IPV6:
        return ByteValues(
            [
                ((int(h) << 64) | int(lo)).to_bytes(16, "big")
                for h, lo in np.asarray(values).tolist()
            ]
        )
    raise AssertionError(ftype)


def _const_bytes(value: Any, ftype: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if ftype == IPV4:
        return int(value.value if isinstance(value, Addr4) else value).to_bytes(4, "big")
    if ftype == ETHER:
        return int(value).to_bytes(6, "big")
    if ftype == IPV6:
        assert isinstance(value, Addr6)
        return ((value.hi << 64) | value.lo).to_bytes(16, "big")
    raise AssertionError(ftype)


def slice_bytes(b: bytes, ranges: list[S.RangeNode]) -> bytes:
    """tshark 4.0's fvalue_slice: the ranges' bytes joined, up to the first one out of range."""
    out = []
    n = len(b)
    for r in ranges:
        start = r.start
        if start < 0:
            start += n
            if start < 0:
                break
        if r.ending == S.TO_END:
            length = n - start
            if length <= 0:
                break
        elif r.ending == S.LENGTH:
            length = r.n
            if start + length > n:
                break
        else:
            end = r.n
            if end < 0:
                end += n
                if end < start:
                    break
            elif end >= n:
                break
            length = end - start + 1
        out.append(b[start : start + length])
    return b"".join(out)


class _Window(ByteValues):
    """A fixed-offset window of payload bytes, compared to literals as a matrix."""

    def __init__(self, mat: npt.NDArray[np.uint8], lens: npt.NDArray[np.int64]) -> None:
        super().__init__(None)
        self.mat = mat
        self.lens = lens

    def __len__(self) -> int:
        return int(self.lens.shape[0])

    def objs(self) -> list[bytes]:
        if self._objs is None:
            self._objs = [self.mat[i, : self.lens[i]].tobytes() for i in range(len(self.lens))]
        return self._objs


def apply_slice(values: Any, ftype: str, ranges: list[S.RangeNode]) -> ByteValues:
    bv = _to_bytes(values, ftype)
    r = ranges[0]
    if bv.backed and len(ranges) == 1 and r.ending == S.LENGTH and r.start >= 0:
        # a fixed window of payload bytes: gathered as one matrix, no per-row work
        start, n = r.start, r.n
        assert bv.data is not None and bv.off is not None and bv.cap is not None
        lens = np.where(bv.cap >= start + n, n, 0).astype(np.int64)
        k = np.arange(n)
        idx = bv.off[:, None] + start + np.minimum(k[None, :], np.maximum(lens[:, None] - 1, 0))
        if bv.data.size:
            mat = bv.data[np.minimum(idx, bv.data.size - 1)]
        else:
            mat = np.zeros((len(bv), n), np.uint8)
        return _Window(mat, lens)
    return ByteValues([slice_bytes(b, ranges) for b in bv.objs()])


def _contains_backed(v: ByteValues, needle: bytes) -> Mask:
    """Rows whose payload contains `needle`: a C-level search over the rows' joined bytes."""
    assert v.data is not None and v.off is not None and v.cap is not None
    out = np.zeros(len(v), bool)
    if not needle:
        return ~out
    idx_all = np.flatnonzero(v.cap >= len(needle))
    if idx_all.size == 0:
        return out
    caps_all = v.cap[idx_all]
    group = np.cumsum(caps_all) // _SEARCH_CHUNK
    bounds = np.flatnonzero(np.diff(group)) + 1
    for idx, caps in zip(np.split(idx_all, bounds), np.split(caps_all, bounds), strict=True):
        starts = np.zeros(len(idx), np.int64)
        np.cumsum(caps[:-1], out=starts[1:])
        total = int(caps.sum())
        gather = np.repeat(v.off[idx] - starts, caps) + np.arange(total)
        buf = v.data[gather].tobytes()
        ends = (starts + caps).tolist()
        pos = buf.find(needle)
        while pos >= 0:
            r = bisect.bisect_right(ends, pos)
            if pos + len(needle) <= ends[r]:
                out[idx[r]] = True
            # a later match starting in row r would cross its end too: resume at the next row
            pos = buf.find(needle, ends[r])
    return out


def _lengths(v: ByteValues) -> npt.NDArray[np.int64]:
    if isinstance(v, _Window):
        return v.lens
    if v.backed:
        assert v.cap is not None
        return v.cap
    return np.fromiter((len(b) for b in v.objs()), np.int64, count=len(v))


def _take(values: Any, live: npt.NDArray[np.int64], n: int) -> Any:
    """Values of some rows only, so byte tests never touch the others."""
    if live.size == n:
        return values
    if isinstance(values, Ints):
        return Ints(_take(values.v, live, n), _take(values.s, live, n))
    if isinstance(values, _Window):
        return _Window(values.mat[live], values.lens[live])
    if isinstance(values, ByteValues):
        if values.backed:
            assert values.off is not None and values.cap is not None
            return ByteValues(data=values.data, off=values.off[live], cap=values.cap[live])
        objs = values.objs()
        return ByteValues([objs[i] for i in live.tolist()])
    if isinstance(values, np.ndarray):
        return values[live]
    return values  # a constant


def _put(dst: Any, live: npt.NDArray[np.int64], src: Any, n: int) -> Any:
    """`dst` with the values of `src` (over `live`) written at `live`."""
    if isinstance(dst, Ints) or isinstance(src, Ints):
        d, s = _ints(dst), _ints(src)
        return Ints(_put(_full(d.v, n), live, s.v, n), _put(_full(d.s, n, bool), live, s.s, n))
    if isinstance(dst, ByteValues) or isinstance(src, ByteValues):
        objs = list(dst.objs()) if isinstance(dst, ByteValues) else [b""] * n
        new = src.objs() if isinstance(src, ByteValues) else [src] * len(live)
        for i, b in zip(live.tolist(), new, strict=True):
            objs[i] = b
        return ByteValues(objs)
    out = np.array(dst, copy=True)
    out[live] = src
    return out


def _full(v: Any, n: int, dtype: Any = np.int64) -> Any:
    if isinstance(v, np.ndarray):
        return v
    return np.full(n, v, dtype)


# ---------------------------------------------------------------- value tests


def _bytes_key(b: bytes) -> tuple[int, bytes]:
    return (len(b), b)


_PY_OPS: dict[str, Any] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}
_NP_OPS: dict[str, Any] = {
    "eq": np.equal,
    "ne": np.not_equal,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
}


def _objs_test(v: ByteValues, fn: Callable[[bytes], bool]) -> Mask:
    objs = v.objs()
    return np.fromiter((fn(x) for x in objs), bool, count=len(objs))


def _bytes_cmp(op: str, ftype: str, v: ByteValues, lit: Any) -> Mask:
    if op == "contains":
        if isinstance(lit, bytes) and v.backed:
            return _contains_backed(v, lit)
        if isinstance(lit, bytes):
            return _objs_test(v, lambda x: lit in x)
        return np.fromiter(
            (b in a for a, b in zip(v.objs(), lit.objs(), strict=True)), bool, count=len(v)
        )
    if op == "matches":
        if v.backed:
            assert v.data is not None and v.off is not None and v.cap is not None
            return lit.search_rows(v.data, v.off, v.cap)
        return _objs_test(v, lit.search)
    if isinstance(v, _Window) and op in ("eq", "ne") and isinstance(lit, bytes):
        n = v.mat.shape[1]
        if len(lit) == n:
            eq = (v.lens == n) & np.all(v.mat == np.frombuffer(lit, np.uint8), axis=1)
        else:
            eq = np.zeros(len(v), bool)
        return eq if op == "eq" else ~eq
    fn = _PY_OPS[op]
    key: Callable[[bytes], Any] = (lambda b: b) if ftype == STRING else _bytes_key
    objs = v.objs()
    if isinstance(lit, ByteValues):
        return np.fromiter(
            (fn(key(a), key(b)) for a, b in zip(objs, lit.objs(), strict=True)),
            bool,
            count=len(objs),
        )
    k = key(lit)
    return np.fromiter((fn(key(a), k) for a in objs), bool, count=len(objs))


def _ip6_cmp(op: str, v: Any, lit: Any) -> Mask:
    hi, lo = v[:, 0], v[:, 1]
    if isinstance(lit, Addr6):
        lhi, llo = np.uint64(lit.hi), np.uint64(lit.lo)
        if op in ("eq", "ne"):
            eq = ((hi & np.uint64(lit.mhi)) == lhi) & ((lo & np.uint64(lit.mlo)) == llo)
            return eq if op == "eq" else ~eq
    else:
        lhi, llo = lit[:, 0], lit[:, 1]
    eq = (hi == lhi) & (lo == llo)
    lt = (hi < lhi) | ((hi == lhi) & (lo < llo))
    return {
        "eq": eq,
        "ne": ~eq,
        "lt": lt,
        "le": lt | eq,
        "gt": ~(lt | eq),
        "ge": ~lt,
    }[op]


def value_test(op: str, ftype: str, v: Any, lit: Any, n: int) -> tuple[Mask, Mask]:
    """`v OP lit` elementwise over n rows: (true, false); a pair that is an error is neither."""
    if ftype in (BYTES, STRING, PROTO):
        t = _bytes_cmp(op, ftype, v, lit)
        return t, ~t
    if ftype == IPV6:
        t = _ip6_cmp(op, v, lit)
        return t, ~t
    if ftype in INTS:
        a, b = _ints(v), _ints(lit)
        av, bv = a.v, b.v
        if ftype == BOOL:
            av, bv = np.asarray(av) != 0, np.asarray(bv) != 0
        t = np.broadcast_to(np.asarray(_NP_OPS[op](av, bv), bool), (n,))
        if (
            a.s is True
            or (isinstance(b.v, int) and b.v >= 0)
            or (isinstance(b.s, bool) and not b.s)
        ):
            return t, ~t
        # an unsigned value compared to a negative one is an error in tshark
        err = np.broadcast_to(~np.asarray(a.s, bool) & (np.asarray(b.v) < 0), (n,))
        return t & ~err, ~t & ~err
    if ftype == IPV4 and isinstance(lit, Addr4):
        if op in ("eq", "ne"):
            eq = (v & np.uint64(lit.mask)) == np.uint64(lit.value)
            return (eq, ~eq) if op == "eq" else (~eq, eq)
        lit = np.uint64(lit.value)
    elif ftype in (IPV4, ETHER) and not isinstance(lit, np.ndarray):
        lit = np.uint64(lit)
    t = np.broadcast_to(np.asarray(_NP_OPS[op](v, lit), bool), (n,))
    return t, ~t


def nonzero(ftype: str, v: Any, n: int) -> Mask:
    if isinstance(v, ByteValues):
        return _objs_test(v, lambda b: any(b))
    if ftype in INTS:
        return np.broadcast_to(np.asarray(_ints(v).v) != 0, (n,))
    if ftype == IPV6:
        return (v[:, 0] != 0) | (v[:, 1] != 0)
    return np.broadcast_to(np.asarray(v) != 0, (n,))


# ---------------------------------------------------------------- arithmetic

_U32 = 0xFFFFFFFF
_I32MAX = (1 << 31) - 1
_I32MIN = -(1 << 31)


def _split(x: Ints, n: int) -> tuple[Any, Any, Any]:
    v = np.broadcast_to(np.asarray(x.v, np.int64), (n,))
    u = v & _U32
    s = (u ^ 0x80000000) - 0x80000000
    sg = np.broadcast_to(np.asarray(x.s, bool), (n,))
    return u, s, sg


def int_arith(op: str, a: Ints, b: Ints | None, n: int) -> tuple[Mask, Ints]:
    """tshark's 32-bit integer arithmetic: (values that did not fail, results)."""
    if (
        op == "&"
        and b is not None
        and a.s is False
        and b.s is False
        and isinstance(b.v, int)
        and b.v >= 0
    ):
        # the common case, an unsigned field and a mask: nothing can fail or turn signed
        r = np.broadcast_to(np.asarray(a.v, np.int64) & b.v, (n,))
        return np.ones(n, bool), Ints(r)
    au, asi, asg = _split(a, n)
    if b is None:  # unary minus: unsigned values become signed
        ok = asg | (au <= _I32MAX)
        r = np.where(asg, np.where(asi == _I32MIN, _I32MIN, -asi), -au)
        return ok, Ints(r, np.ones(n, bool))
    bu, bsi, _ = _split(b, n)
    one = np.int64(1)
    if op == "&":
        ru, rs = au & bu, asi & bsi
        oku = oks = np.ones(n, bool)
        sgu = np.zeros(n, bool)
    elif op == "+":
        ru, rs = au + bu, asi + bsi
        oku, oks = ru <= _U32, (rs >= _I32MIN) & (rs <= _I32MAX)
        sgu = np.zeros(n, bool)
    elif op == "-":
        ru, rs = au - bu, asi - bsi
        neg = bu > au
        oku = ~neg | ((au <= _I32MAX) & (bu <= _I32MAX))
        oks = (rs >= _I32MIN) & (rs <= _I32MAX)
        sgu = neg
    elif op == "*":
        prod = au.astype(np.uint64) * bu.astype(np.uint64)
        oku = prod <= np.uint64(_U32)
        ru = (prod & np.uint64(_U32)).astype(np.int64)
        rs = asi * bsi
        oks = (rs >= _I32MIN) & (rs <= _I32MAX)
        sgu = np.zeros(n, bool)
    else:  # / and %
        bsafe_u = np.where(bu == 0, one, bu)
        bsafe_s = np.where(bsi == 0, one, bsi)
        oku = bu != 0
        oks = (bsi != 0) & ~((asi == _I32MIN) & (bsi == -1))
        q = (np.abs(asi) // np.abs(bsafe_s)) * np.sign(asi) * np.sign(bsafe_s)
        if op == "/":
            ru, rs = au // bsafe_u, q
        else:
            ru, rs = au % bsafe_u, asi - bsafe_s * q
        sgu = np.zeros(n, bool)
    ok = np.where(asg, oks, oku)
    r = np.where(asg, rs, ru)
    return ok, Ints(r, asg | sgu)


def arith_values(op: str, ftype: str, a: Any, b: Any, n: int) -> tuple[Mask, Any]:
    """`a op b` (b None: unary minus) for one pair of value arrays over n rows."""
    if ftype in INTS:
        return int_arith(op, _ints(a), None if b is None else _ints(b), n)
    ok = np.ones(n, bool)
    if ftype in (RELTIME, ABSTIME):
        av = np.broadcast_to(np.asarray(a, np.int64), (n,))
        if b is None:
            return ok, -av
        bv = np.broadcast_to(np.asarray(b, np.int64), (n,))
        return ok, av + bv if op == "+" else av - bv
    assert op == "&"
    if ftype == IPV4:
        mask = b.value if isinstance(b, Addr4) else b
        return ok, np.broadcast_to(np.asarray(a, np.uint64) & np.asarray(mask, np.uint64), (n,))
    if ftype == ETHER:
        return ok, np.broadcast_to(np.asarray(a, np.uint64) & np.asarray(b, np.uint64), (n,))
    if ftype == IPV6:
        bb = np.array([[b.hi, b.lo]], np.uint64) if isinstance(b, Addr6) else b
        return ok, np.asarray(a, np.uint64) & bb
    # byte strings: the shorter length
    objs = a.objs()
    other = b.objs() if isinstance(b, ByteValues) else [b] * len(objs)
    return ok, ByteValues(
        [bytes(x & y for x, y in zip(p, q, strict=False)) for p, q in zip(objs, other, strict=True)]
    )


# ---------------------------------------------------------------- expressions


@dataclass
class VSet:
    """An expression over candidate rows: where it was reached, and its values."""

    reached: Mask
    occs: list[Occ]


def _present(o: Occ, n: int) -> Mask:
    return np.ones(n, bool) if o.present is None else o.present


@dataclass
class Expr:
    t: Typ
    cost: int = 1
    needs: frozenset[str] = frozenset()

    def compute(self, ctx: FilterContext, rows: Rows) -> VSet:
        raise NotImplementedError


@dataclass
class Const(Expr):
    value: Any = None

    def compute(self, ctx: FilterContext, rows: Rows) -> VSet:
        return VSet(np.ones(len(rows), bool), [Occ(None, self.value)])


def _in_layers(layer: Any, top: Any, ranges: list[S.RangeNode]) -> Any:
    """tshark's drange_contains_layer: whether layer number `layer` is in `ranges`."""
    out: Any = False
    for r in ranges:
        lower = r.start + top + 1 if r.start < 0 else r.start
        if r.ending == S.LENGTH:
            upper = lower + r.n - 1
        elif r.ending == S.END:
            upper = r.n
        else:
            upper = 1 << 40
        out = out | ((layer >= lower) & (layer <= upper))
    return out


@dataclass
class FieldExpr(Expr):
    f: Field | None = None
    layers: list[S.RangeNode] | None = None
    as_bytes: bool = False  # an HTTP message's bytes rather than the protocol's presence

    def occs(self, ctx: FilterContext, rows: Rows) -> list[Occ]:
        assert self.f is not None
        n = len(rows)
        if self.as_bytes and self.f.proto_bytes is not None:
            return self.f.proto_bytes(ctx, rows)  # the protocol's own items and their bytes
        if self.as_bytes:
            # the protocol's bytes: the payload of the segments where the field is present
            present = np.zeros(n, bool)
            for o in self.f.extract(ctx, rows):
                present |= _present(o, n)
            if not present.any():
                return [Occ(present, ByteValues([b""] * n))]
            t = ctx.table
            cap = t["payload_cap"][rows].astype(np.int64)
            vals = ByteValues(data=t.data, off=t["payload_off"][rows].astype(np.int64), cap=cap)
            return [Occ(present & (cap > 0), vals)]
        occs = self.f.extract(ctx, rows)
        if self.t.ftype in INTS:
            occs = [Occ(o.present, Ints(o.values), o.layer) for o in occs]
        if self.layers is not None:
            layers = [
                np.broadcast_to(np.asarray(1 if o.layer is None else o.layer), (n,)) for o in occs
            ]
            top = np.zeros(n, np.int64)
            for o, lay in zip(occs, layers, strict=True):
                top = np.maximum(top, np.where(_present(o, n), lay, 0))
            occs = [
                Occ(
                    _present(o, n) & np.broadcast_to(_in_layers(lay, top, self.layers), (n,)),
                    o.values,
                    o.layer,
                )
                for o, lay in zip(occs, layers, strict=True)
            ]
        return occs

    def compute(self, ctx: FilterContext, rows: Rows) -> VSet:
        n = len(rows)
        occs = self.occs(ctx, rows)
        reached = np.zeros(n, bool)
        for o in occs:
            reached |= _present(o, n)
        return VSet(reached, occs)


@dataclass
class RefExpr(Expr):
    """``${field}``: the field's value in the packet selected in Wireshark's GUI; a command
    line has no selected packet, so it has no value and a relation with it is false."""

    def compute(self, ctx: FilterContext, rows: Rows) -> VSet:
        return VSet(np.zeros(len(rows), bool), [])


@dataclass
class ToBytes(Expr):
    inner: Expr | None = None

    def compute(self, ctx: FilterContext, rows: Rows) -> VSet:
        assert self.inner is not None
        v = self.inner.compute(ctx, rows)
        ft = self.inner.t.ftype
        return VSet(
            v.reached,
            [
                Occ(
                    o.present,
                    o.values if ft in (BYTES, STRING, PROTO) else _to_bytes(o.values, ft),
                    o.layer,
                )
                for o in v.occs
            ],
        )


@dataclass
class SliceExpr(Expr):
    inner: Expr | None = None
    ranges: list[S.RangeNode] = field(default_factory=list)

    def compute(self, ctx: FilterContext, rows: Rows) -> VSet:
        assert self.inner is not None
        v = self.inner.compute(ctx, rows)
        ft = self.inner.t.ftype
        return VSet(
            v.reached, [Occ(o.present, apply_slice(o.values, ft, self.ranges)) for o in v.occs]
        )


@dataclass
class ArithExpr(Expr):
    op: str = ""
    a: Expr | None = None
    b: Expr | None = None  # None: unary minus

    def compute(self, ctx: FilterContext, rows: Rows) -> VSet:
        assert self.a is not None
        n = len(rows)
        va = self.a.compute(ctx, rows)
        ft = self.t.ftype
        if self.b is None:
            out = []
            for o in va.occs:
                ok, vals = arith_values("neg", ft, o.values, None, n)
                out.append(Occ(_present(o, n) & ok, vals))
            return VSet(va.reached, out)
        vb = self.b.compute(ctx, rows)
        out = []
        for oa in va.occs:
            for ob in vb.occs:
                p = _present(oa, n) & _present(ob, n)
                live = np.flatnonzero(p)
                if isinstance(oa.values, ByteValues) and live.size < n:
                    ok, vals = arith_values(
                        self.op, ft, _take(oa.values, live, n), _take(ob.values, live, n), live.size
                    )
                    full = np.zeros(n, bool)
                    full[live] = ok
                    out.append(Occ(full, _put(ByteValues([b""] * n), live, vals, n)))
                    continue
                ok, vals = arith_values(self.op, ft, oa.values, ob.values, n)
                out.append(Occ(p & ok, vals))
        return VSet(va.reached & vb.reached, out)


def _ipv6_text(h: int, lo: int) -> bytes:
    return str(ipaddress.IPv6Address((h << 64) | lo)).encode()


@dataclass
class CallExpr(Expr):
    name: str = ""
    args: list[Expr] = field(default_factory=list)

    def compute(self, ctx: FilterContext, rows: Rows) -> VSet:
        n = len(rows)
        vals = [a.compute(ctx, rows) for a in self.args]
        name = self.name
        first = vals[0]
        ft = self.args[0].t.ftype
        has = np.zeros(n, bool)
        for o in first.occs:
            has |= _present(o, n)
        if name == "len":
            out = []
            for o in first.occs:
                if isinstance(o.values, ByteValues):
                    lens = _lengths(o.values)
                else:
                    size = self.args[0].t.bits // 8 if ft == UINT else _WIRE_SIZE.get(ft, 0)
                    lens = np.full(n, size, np.int64)
                out.append(Occ(o.present, Ints(lens)))
            return VSet(first.reached, out)
        if name == "count":
            count = np.zeros(n, np.int64)
            for o in first.occs:
                count += _present(o, n)
            return VSet(count > 0, [Occ(None, Ints(count))])
        if name in ("upper", "lower"):
            conv: Callable[[bytes], bytes] = bytes.upper if name == "upper" else bytes.lower
            out = [
                Occ(o.present, ByteValues([conv(b) for b in o.values.objs()])) for o in first.occs
            ]
            return VSet(has, out)
        if name == "string":
            out = [Occ(o.present, ByteValues(_strings(ft, o.values, n))) for o in first.occs]
            return VSet(has, out)
        if name == "abs":
            out = []
            for o in first.occs:
                if ft in INTS:
                    iv = _ints(o.values)
                    ok, neg = int_arith("neg", iv, None, n)
                    use = np.asarray(iv.s, bool) & (np.asarray(iv.v) < 0)
                    out.append(
                        Occ(
                            _present(o, n) & (ok | ~use),
                            Ints(np.where(use, neg.v, iv.v), np.where(use, neg.s, iv.s)),
                        )
                    )
                else:
                    # tshark's nstime is negative only from -1 s down: its test looks at the seconds
                    v = np.asarray(o.values, np.int64)
                    out.append(Occ(o.present, np.where(v <= -1_000_000_000, -v, v)))
            return VSet(has, out)
        # max / min: the first of the greatest (least) values of all arguments
        op = "gt" if name == "max" else "lt"
        cur: Any = None
        cur_p = np.zeros(n, bool)
        t = self.t.ftype
        for arg in vals:
            for o in arg.occs:
                p = _present(o, n)
                if cur is None:
                    cur, cur_p = o.values, p.copy()
                    continue
                better, _ = value_test(op, t, o.values, cur, n)
                take = p & (~cur_p | better)
                cur = _select(take, o.values, cur, n)
                cur_p |= p
        if cur is None:
            return VSet(np.zeros(n, bool), [])
        return VSet(cur_p, [Occ(cur_p, cur)])


def _select(mask: Mask, a: Any, b: Any, n: int) -> Any:
    if isinstance(a, ByteValues) or isinstance(b, ByteValues):
        ao = a.objs() if isinstance(a, ByteValues) else [a] * n
        bo = b.objs() if isinstance(b, ByteValues) else [b] * n
        return ByteValues([x if m else y for m, x, y in zip(mask.tolist(), ao, bo, strict=True)])
    if isinstance(a, Ints) or isinstance(b, Ints):
        ia, ib = _ints(a), _ints(b)
        return Ints(np.where(mask, ia.v, ib.v), np.where(mask, ia.s, ib.s))
    if np.ndim(a) == 2 or np.ndim(b) == 2:
        return np.where(mask[:, None], a, b)
    return np.where(mask, a, b)


def _strings(ft: str, values: Any, n: int) -> list[bytes]:
    if ft in INTS:
        return [
            str(int(x) & _U32).encode()
            for x in np.broadcast_to(np.asarray(_ints(values).v), (n,)).tolist()
        ]
    if ft == IPV4:
        return [str(ipaddress.IPv4Address(int(x))).encode() for x in np.asarray(values).tolist()]
    if ft == ETHER:
        return [
            ":".join(f"{b:02x}" for b in int(x).to_bytes(6, "big")).encode()
            for x in np.asarray(values).tolist()
        ]
    return [_ipv6_text(int(h), int(lo)) for h, lo in np.asarray(values).tolist()]


# ---------------------------------------------------------------- tests


@dataclass
class Test:
    cost: int = 1
    needs: frozenset[str] = frozenset()

    def run(self, ctx: FilterContext, rows: Rows) -> Mask:
        raise NotImplementedError


@dataclass
class _ChainTest(Test):
    """`and` / `or`: each item runs only on the rows whose outcome is still open, the rows
    where no earlier item gave the deciding value (false for `and`, true for `or`)."""

    items: list[Test] = field(default_factory=list)
    DECIDES: ClassVar[bool]

    def run(self, ctx: FilterContext, rows: Rows) -> Mask:
        out = np.full(len(rows), not self.DECIDES)
        for t in self.items:
            live = np.flatnonzero(out != self.DECIDES)
            if live.size == 0:
                break
            out[live] = t.run(ctx, rows[live])
        return out


class AndTest(_ChainTest):
    DECIDES = False


class OrTest(_ChainTest):
    DECIDES = True


@dataclass
class NotTest(Test):
    item: Test | None = None

    def run(self, ctx: FilterContext, rows: Rows) -> Mask:
        assert self.item is not None
        return ~self.item.run(ctx, rows)


@dataclass
class ExistsTest(Test):
    expr: Expr | None = None

    def run(self, ctx: FilterContext, rows: Rows) -> Mask:
        assert self.expr is not None
        return self.expr.compute(ctx, rows).reached


@dataclass
class NotZeroTest(Test):
    """An arithmetic expression alone (some value not zero) or a slice alone (some value not
    empty)."""

    expr: Expr | None = None
    slice_length: bool = False

    def run(self, ctx: FilterContext, rows: Rows) -> Mask:
        assert self.expr is not None
        n = len(rows)
        v = self.expr.compute(ctx, rows)
        out = np.zeros(n, bool)
        for o in v.occs:
            if not isinstance(o.values, ByteValues):
                out |= _present(o, n) & nonzero(self.expr.t.ftype, o.values, n)
                continue
            p = _present(o, n) & v.reached
            live = np.flatnonzero(p)
            if live.size == 0:
                continue
            vals = _take(o.values, live, n)
            if self.slice_length:
                out[live] |= _lengths(vals) > 0
            else:
                out[live] |= nonzero(self.expr.t.ftype, vals, live.size)
        return out & v.reached


def _and(a: Mask | None, b: Mask | None) -> Mask | None:
    if a is None:
        return b
    return a if b is None else a & b


def _is_bytes(values: Any) -> bool:
    if isinstance(values, tuple):
        return any(isinstance(v, ByteValues) for v in values)
    return isinstance(values, ByteValues)


def _test(op: str, ftype: str, av: Any, bv: Any, n: int) -> tuple[Mask, Mask]:
    if op == "in_range":
        lo, hi = bv
        t1, f1 = value_test("ge", ftype, av, lo, n)
        t2, f2 = value_test("le", ftype, av, hi, n)
        return t1 & t2, f1 | f2
    return value_test(op, ftype, av, bv, n)


def _pairs(op: str, ftype: str, how: str, lhs: VSet, rhs: VSet, n: int) -> Mask:
    """The relation over every pair of values, for any or all pairs."""
    acc = np.zeros(n, bool) if how == "any" else np.ones(n, bool)
    for a in lhs.occs:
        for b in rhs.occs:
            p = _and(a.present, b.present)
            if _is_bytes(a.values) or _is_bytes(b.values):
                # per-row work: only on the rows where both values are present
                live = np.arange(n) if p is None else np.flatnonzero(p)
                if live.size == 0:
                    continue
                bv = (
                    tuple(_take(x, live, n) for x in b.values)
                    if isinstance(b.values, tuple)
                    else _take(b.values, live, n)
                )
                t, f = _test(op, ftype, _take(a.values, live, n), bv, live.size)
                if live.size == n:
                    acc = acc | t if how == "any" else acc & ~f
                elif how == "any":
                    acc[live] |= t
                else:
                    acc[live] &= ~f
                continue
            t, f = _test(op, ftype, a.values, b.values, n)
            if how == "any":
                acc |= t if p is None else p & t
            else:
                acc &= ~f if p is None else ~(p & f)
    return acc


@dataclass
class RelTest(Test):
    op: str = ""  # eq ne lt le gt ge contains matches
    how: str = "any"
    ftype: str = ""  # the type the values are compared as
    lhs: Expr | None = None
    rhs: Expr | None = None

    def run(self, ctx: FilterContext, rows: Rows) -> Mask:
        assert self.lhs is not None and self.rhs is not None
        rhs = self.rhs

        def match(sub: Rows, lv: VSet) -> Mask:
            rv = rhs.compute(ctx, sub)
            return _pairs(self.op, self.ftype, self.how, lv, rv, len(sub)) & rv.reached

        return _where_reached(self.lhs.compute(ctx, rows), rows, match, isinstance(rhs, Const))


@dataclass
class InTest(Test):
    how: str = "any"
    ftype: str = ""
    lhs: Expr | None = None
    items: list[tuple[Expr, Expr | None]] = field(default_factory=list)

    def run(self, ctx: FilterContext, rows: Rows) -> Mask:
        assert self.lhs is not None
        consts = all(
            isinstance(lo, Const) and isinstance(hi, (Const, type(None))) for lo, hi in self.items
        )
        return _where_reached(
            self.lhs.compute(ctx, rows), rows, lambda sub, lv: self.match(ctx, sub, lv), consts
        )

    def match(self, ctx: FilterContext, rows: Rows, lv: VSet) -> Mask:
        """Rows where some element matches (an element that is absent matches nothing)."""
        m = len(rows)
        hit = np.zeros(m, bool)
        consts: list[Any] = []
        for lo, hi in self.items:
            if hi is None and isinstance(lo, Const):
                consts.append(lo.value)
                continue
            lov = lo.compute(ctx, rows)
            if hi is None:
                hit |= lov.reached & _pairs("eq", self.ftype, self.how, lv, lov, m)
                continue
            hiv = hi.compute(ctx, rows)
            if not lov.occs or not hiv.occs:
                continue
            bounds = VSet(
                lov.reached & hiv.reached, [Occ(None, (lov.occs[0].values, hiv.occs[0].values))]
            )
            hit |= bounds.reached & _pairs("in_range", self.ftype, self.how, lv, bounds, m)
        if consts and self.how == "any" and self.ftype in INTS and self.ftype != BOOL:
            # plain numbers: one pass over each value of the field
            values = np.array([_ints(c).v for c in consts], np.int64)
            for o in lv.occs:
                hit |= np.isin(np.asarray(_ints(o.values).v), values) & _present(o, m)
        else:
            for c in consts:
                hit |= _pairs(
                    "eq", self.ftype, self.how, lv, VSet(np.ones(m, bool), [Occ(None, c)]), m
                )
        return hit


def _where_reached(
    lv: VSet, rows: Rows, match: Callable[[Rows, VSet], Mask], constant: bool
) -> Mask:
    """`match` of the right side against the left side's values `lv`, false where the left
    side was not reached. A constant right side is matched over all the rows at once; one
    with fields is evaluated only on the rows where the left side was reached."""
    if constant:
        return lv.reached & match(rows, lv)
    n = len(rows)
    live = np.flatnonzero(lv.reached)
    out = np.zeros(n, bool)
    if live.size == 0:
        return out
    if live.size < n:
        lv = _subset(lv, live, n)
    out[live] = match(rows[live], lv)
    return out


def _subset(v: VSet, live: npt.NDArray[np.int64], n: int) -> VSet:
    return VSet(
        v.reached[live],
        [
            Occ(None if o.present is None else o.present[live], _take(o.values, live, n), o.layer)
            for o in v.occs
        ],
    )


# ---------------------------------------------------------------- compile


def _is_constant(node: S.Node) -> bool:
    return isinstance(node, S.Literal)


def _leftmost(node: S.Node) -> S.Node:
    while isinstance(node, S.Arith):
        node = node.a
    return node


_EQ_OPS = {
    "any_eq": ("eq", "any"),
    "all_eq": ("eq", "all"),
    "all_ne": ("ne", "all"),
    "any_ne": ("ne", "any"),
}
_ORDER_OPS = {"lt", "le", "gt", "ge"}


def _worded(fld: Field | None, of_function: str, of_field: str) -> str:
    """tshark's message for a relation whose left side is a function (no `fld`) or a field:
    it words the two apart."""
    return of_function if fld is None else of_field


class Compiler:
    def __init__(self, src: str) -> None:
        self.src = src
        self.conv = Converter(src)

    def fail(self, node: S.Node, message: str) -> FilterError:
        if isinstance(node, S.Slice):
            return FilterError(message)  # tshark's slices have no place in the text
        return FilterError(message, self.src, node.pos, node.length)

    def not_a_field(self, node: S.Node, message: str) -> FilterError:
        """tshark's `message` for a name that is no field, unless the name is a field of
        Wireshark's that tcpwhy does not have: then that, so that the user does not look
        for a typing error in a name Wireshark takes."""
        name = S.display(node)
        if isinstance(node, S.Literal) and name in wireshark_fields() and name not in FIELDS:
            message = (
                f"{name} is a Wireshark field that tcpwhy does not compute "
                "(docs/filters.md lists the fields it has)."
            )
        return self.fail(node, message)

    # -- tests

    def compile(self, node: S.Node) -> Test:
        if isinstance(node, S.Empty):
            return AndTest()  # the empty conjunction: true on every row
        if isinstance(node, S.Logic):
            items = [self.compile(n) for n in node.items]
            items.sort(key=lambda t: t.cost)  # stable: equal costs keep the written order
            cost = sum(t.cost for t in items)
            needs = frozenset().union(*(t.needs for t in items))
            if node.op == "and":
                return AndTest(cost, needs, items)
            return OrTest(cost, needs, items)
        if isinstance(node, S.Not):
            inner = self.compile(node.item)
            return NotTest(inner.cost, inner.needs, inner)
        if isinstance(node, S.Relation):
            return self.relation(node)
        if isinstance(node, S.InSet):
            return self.in_set(node)
        if isinstance(node, S.Bare):
            return self.bare(node.value)
        raise AssertionError(node)

    def bare(self, v: S.Node) -> Test:
        if isinstance(v, S.Arith):
            e, _t = self.arith(v, None)
            return NotZeroTest(e.cost, e.needs, e)
        if isinstance(v, S.Slice):
            e = self.slice(v, None)
            return NotZeroTest(e.cost, e.needs, e, slice_length=True)
        if isinstance(v, S.FieldRef):
            if v.reference:
                f = self.field_of(v)
                raise self.fail(
                    v,
                    f"{v.name} <{ft_name(f.ftype, f.bits)}> is neither a field nor a protocol name.",
                )
            e = self.field_expr(v, value=False)
            return ExistsTest(e.cost, e.needs, e)
        if isinstance(v, S.Call):
            raise self.fail(v, "You cannot test whether a function is present.")
        if isinstance(v, S.Literal) and v.kind == S.UNPARSED and v.text in FOREIGN_PROTOCOLS:
            never = RefExpr(Typ(PROTO))
            return ExistsTest(1, frozenset(), never)
        raise self.not_a_field(v, f"{S.display(v)} is neither a field nor a protocol name.")

    def relation(self, node: S.Relation) -> Test:
        op = node.op
        if op == "matches":
            return self.matches(node)
        if op == "contains":
            lhs = node.lhs
            if not isinstance(lhs, (S.FieldRef, S.Call, S.Slice)):
                raise self.not_a_field(
                    lhs,
                    f"Left side of {node.text} expression must be a field or function, not {S.display(lhs)}.",
                )
            le, re_, dom = self.check_relation(node, "contains", lhs, node.rhs, partial=True)
            return self.rel("contains", node.how or "any", dom, le, re_)
        if op in _EQ_OPS:
            base, how = _EQ_OPS[op]
            can = "eq"
        else:
            base, how, can = op, "any", "cmp"
        if node.how:
            how = node.how
        le, re_, dom = self.check_relation(node, can, node.lhs, node.rhs, partial=False)
        return self.rel(base, how, dom, le, re_)

    def rel(self, op: str, how: str, dom: str, le: Expr, re_: Expr) -> Test:
        cost = le.cost + re_.cost + (30 if op in ("contains", "matches") else 0)
        return RelTest(cost, le.needs | re_.needs, op, how, dom, le, re_)

    def matches(self, node: S.Relation) -> Test:
        rhs = node.rhs
        if not (isinstance(rhs, S.Literal) and rhs.kind == S.STRING):
            raise self.fail(rhs, "Matches requires a double quoted string on the right side.")
        pat = rhs.value
        assert isinstance(pat, bytes)
        try:
            # Wireshark's `matches` is case-insensitive by default; (?-i) turns that off
            rx = compile_pattern(pat)
        except FilterRegexError as exc:
            raise FilterError(f"Regex compilation error: {exc}.") from None
        lhs = node.lhs
        if not isinstance(lhs, (S.FieldRef, S.Call, S.Slice)):
            raise self.not_a_field(
                lhs,
                f"Left side of {node.text} expression must be a field or function, not {S.display(lhs)}.",
            )
        le, _re, dom = self.check_relation(node, "matches", lhs, None, partial=True)
        return self.rel("matches", node.how or "any", dom, le, Const(T_BYTES, 0, frozenset(), rx))

    # -- the checks of tshark's semcheck.c

    def check_relation(
        self, node: S.Node, can: str, lhs: S.Node, rhs: S.Node | None, partial: bool
    ) -> tuple[Expr, Expr, str]:
        """LHS and RHS expressions of a relation and the type their values compare as."""
        if isinstance(lhs, S.FieldRef):
            le = self.field_expr(lhs)
            return self.lhs_typed(node, can, lhs, le, rhs, partial, self.field_of(lhs))
        if isinstance(lhs, S.Slice):
            le = self.slice(lhs, None)
            return self.lhs_slice(node, le, rhs, partial)
        if isinstance(lhs, S.Call):
            le = self.call(lhs, None)
            return self.lhs_typed(node, can, lhs, le, rhs, partial, None)
        if isinstance(lhs, S.Arith):
            le, _t = self.arith(lhs, None)
            ent = _leftmost(lhs)
            if isinstance(ent, S.Slice):
                _l, re_, dom = self.lhs_slice(node, self.slice(ent, None), rhs, partial)
            elif isinstance(ent, S.Call):
                _l, re_, dom = self.lhs_typed(
                    node, can, ent, self.call(ent, None), rhs, partial, None
                )
            else:
                assert isinstance(ent, S.FieldRef)
                _l, re_, dom = self.lhs_typed(
                    node, can, ent, self.field_expr(ent), rhs, partial, self.field_of(ent)
                )
            if dom == BYTES and le.t.ftype != BYTES:
                le = ToBytes(T_BYTES, le.cost, le.needs, le)
            return le, re_, dom
        raise self.not_a_field(
            lhs,
            f'Left side of "{S.display(node)}" expression must be a field or function, not {S.display(lhs)}.',
        )

    def lhs_typed(
        self,
        node: S.Node,
        can: str,
        lhs: S.Node,
        le: Expr,
        rhs: S.Node | None,
        partial: bool,
        fld: Field | None,
    ) -> tuple[Expr, Expr, str]:
        """check_relation_LHS_FIELD (and _FUNCTION, when `fld` is None)."""
        t1 = le.t
        name = S.display(lhs)
        if t1.ftype not in CAN[can]:
            raise self.fail(
                lhs,
                _worded(
                    fld,
                    f"Function {name} (type={t1.name}) cannot participate in {S.display(node)} comparison.",
                    f"{name} (type={t1.name}) cannot participate in {S.display(node)} comparison.",
                ),
            )
        dom = t1.ftype
        if rhs is None:  # matches: the pattern is checked already
            if dom in (ETHER, PROTO):
                le = ToBytes(T_BYTES, le.cost, le.needs, le)
            return le, le, BYTES if dom in (ETHER, PROTO) else dom
        if isinstance(rhs, S.Literal):
            if rhs.kind == S.UNPARSED and rhs.text in FOREIGN_PROTOCOLS:
                if t1.ftype != PROTO:
                    raise self.fail(rhs, f"{name} and {rhs.text} are not of compatible types.")
                return le, RefExpr(Typ(PROTO)), BYTES
            target = t1
            value = self.conv.convert(rhs, target, partial=partial, fld=fld)
            if can == "contains" and t1.ftype in (ETHER, PROTO):
                le = ToBytes(T_BYTES, le.cost, le.needs, le)
                value = value if isinstance(value, bytes) else _const_bytes(value, t1.ftype)
                dom = BYTES
            return le, Const(t1, 0, frozenset(), value), dom
        if isinstance(rhs, S.Slice):
            re_ = self.slice(rhs, t1.ftype)
            if t1.ftype not in _BYTES_TYPES | {STRING, PROTO} and t1.ftype not in CAN["slice"]:
                raise self.fail(
                    lhs,
                    _worded(
                        fld,
                        f'Function "{name}" is a {t1.name} and cannot be converted into a sequence of bytes.',
                        f'"{name}" is a {t1.name} and cannot be converted into a sequence of bytes.',
                    ),
                )
            return ToBytes(T_BYTES, le.cost, le.needs, le), re_, BYTES
        # an expression on the right (a field, a function's value, arithmetic): tshark checks
        # that the two types are compatible, then that the right one takes part in `can`,
        # and words each refusal after what the right side is
        if isinstance(rhs, S.FieldRef):
            r = self.field_of(rhs)
            re_ = self.field_expr(rhs)
            t2 = r.ftype
            incompatible = _worded(
                fld,
                f"Function {name} and {S.display(rhs)} are not of compatible types.",
                f"{name} and {S.display(rhs)} are not of compatible types.",
            )
            cannot = f"{S.display(rhs)} (type={type_name(r.ftype, r.bits)}) cannot participate in specified comparison."
        elif isinstance(rhs, S.Call):
            re_ = self.call(rhs, t1)
            t2 = re_.t.ftype
            incompatible = _worded(
                fld,
                f"Return values of function {name} (type={t1.name}) and function {name} (type={re_.t.name}) are not of compatible types.",
                f"{name} (type={t1.name}) and return value of {rhs.name}() (type={re_.t.name}) are not of compatible types.",
            )
            cannot = _worded(
                fld,
                f"Return value of {rhs.name} (type={re_.t.name}) cannot participate in specified comparison.",
                f"return value of {rhs.name}() (type={re_.t.name}) cannot participate in specified comparison.",
            )
        elif isinstance(rhs, S.Arith):
            re_, t = self.arith(rhs, t1)
            t2 = t.ftype
            incompatible = f"{name} and {S.display(rhs)} are not of compatible types."
            cannot = f"{S.display(rhs)} (type={t.name}) cannot participate in specified comparison."
        else:
            raise AssertionError(rhs)
        if not compatible(t1.ftype, t2):
            raise self.fail(rhs, incompatible)
        if t2 not in CAN[can]:
            raise self.fail(rhs, cannot)
        return self.same_domain(le, re_, can)

    def same_domain(self, le: Expr, re_: Expr, can: str) -> tuple[Expr, Expr, str]:
        """Values of two compatible expressions, as one type (bytes when either is bytes)."""
        a, b = le.t.ftype, re_.t.ftype
        if can in ("contains", "matches") and (a in (ETHER, PROTO) or b in (ETHER, PROTO)):
            return self.both_bytes(le, re_)
        if a != b and BYTES in (a, b):
            return self.both_bytes(le, re_)
        return le, re_, a

    def both_bytes(self, le: Expr, re_: Expr) -> tuple[Expr, Expr, str]:
        if le.t.ftype != BYTES:
            le = ToBytes(T_BYTES, le.cost, le.needs, le)
        if re_.t.ftype != BYTES:
            re_ = ToBytes(T_BYTES, re_.cost, re_.needs, re_)
        return le, re_, BYTES

    def check_bytes(self, node: S.Node, ftype: str, what: str) -> None:
        """Refuse, in tshark's words, to compare with a slice a value of type `ftype` that
        cannot be converted into bytes; `what` names the value and its type as tshark does."""
        if ftype not in _BYTES_TYPES and ftype not in CAN["slice"]:
            raise self.fail(node, f"{what} and cannot be converted into a sequence of bytes.")

    def lhs_slice(
        self, node: S.Node, le: Expr, rhs: S.Node | None, partial: bool
    ) -> tuple[Expr, Expr, str]:
        """check_relation_LHS_SLICE."""
        if rhs is None:
            return le, le, BYTES
        if isinstance(rhs, S.FieldRef):
            r = self.field_of(rhs)
            re_ = self.field_expr(rhs)
            self.check_bytes(rhs, r.ftype, f'"{S.display(rhs)}" is a {type_name(r.ftype, r.bits)}')
            return self.both_bytes(le, re_)
        if isinstance(rhs, S.Literal):
            if rhs.kind == S.UNPARSED and rhs.text in FOREIGN_PROTOCOLS:
                return le, RefExpr(Typ(PROTO)), BYTES
            value = self.conv.convert(rhs, T_BYTES, partial=partial)
            return le, Const(T_BYTES, 0, frozenset(), value), BYTES
        if isinstance(rhs, S.Slice):
            return le, self.slice(rhs, BYTES), BYTES
        if isinstance(rhs, S.Call):
            re_ = self.call(rhs, T_BYTES)
            t2 = re_.t
            self.check_bytes(rhs, t2.ftype, f'Return value of function "{rhs.name}" is a {t2.name}')
            return self.both_bytes(le, re_)
        if isinstance(rhs, S.Arith):
            re_, t2 = self.arith(rhs, T_BYTES)
            if not compatible(BYTES, t2.ftype):
                raise self.fail(
                    rhs, f"{S.display(node)} and {S.display(rhs)} are not of compatible types."
                )
            return self.both_bytes(le, re_)
        raise AssertionError(rhs)

    def in_set(self, node: S.InSet) -> Test:
        lhs = node.lhs
        if not isinstance(lhs, S.FieldRef) or lhs.reference:
            raise self.fail(lhs, "Only a field may be tested for membership in a set.")
        le = self.field_expr(lhs)
        fld = self.field_of(lhs)
        dom = le.t.ftype
        items: list[tuple[Expr, Expr | None]] = []
        cost = le.cost
        needs = le.needs
        for lo, hi in node.items:
            if isinstance(lo, S.Slice):
                raise self.fail(lo, "A slice may not appear inside a set.")
            if hi is None:
                _l, e, dom = self.lhs_typed(node, "eq", lhs, le, lo, False, fld)
                items.append((e, None))
            else:
                _l, e1, dom = self.lhs_typed(node, "cmp", lhs, le, lo, False, fld)
                _l, e2, dom = self.lhs_typed(node, "cmp", lhs, le, hi, False, fld)
                items.append((_plain(e1), _plain(e2)))
            cost += 1
            for item in items[-1]:
                if item is not None:
                    needs = needs | item.needs
        return InTest(cost, needs, node.how or "any", dom, le, items)

    # -- values

    def field_of(self, ref: S.FieldRef) -> Field:
        return FIELDS[ref.name]

    def field_expr(self, ref: S.FieldRef, value: bool = True) -> Expr:
        f = self.field_of(ref)
        t = Typ(f.ftype, f.bits)
        if ref.reference:
            return RefExpr(t)
        as_bytes = False
        if value and f.ftype == PROTO:
            if f.name != HTTP_PROTO and f.proto_bytes is None:
                raise self.fail(
                    ref,
                    f"tcpwhy keeps no header bytes, so the protocol {f.name} has no value to compare or slice (only its presence).",
                )
            as_bytes = True
        return FieldExpr(t, f.cost, f.needs, f, ref.layers, as_bytes)

    def slice(self, node: S.Slice, lhs_type: Typ | str | None) -> Expr:
        """check_slice_sanity, and the slice's expression."""
        ent = node.entity
        inner: Expr
        if isinstance(ent, S.FieldRef):
            f = self.field_of(ent)
            if f.ftype not in CAN["slice"]:
                raise self.fail(
                    ent,
                    f'"{f.name}" is a {type_name(f.ftype, f.bits)} and cannot be sliced into a sequence of bytes.',
                )
            inner = self.field_expr(ent)
        elif isinstance(ent, S.Call):
            inner = self.call(ent, None)
            if inner.t.ftype not in CAN["slice"]:
                raise self.fail(
                    ent,
                    f'Return value of function "{ent.name}" is a {inner.t.name} and cannot be converted into a sequence of bytes.',
                )
        elif isinstance(ent, S.Slice):
            inner = self.slice(ent, lhs_type)
        else:
            raise self.fail(ent, f"Range is not supported for entity {S.display(ent)}")
        return SliceExpr(T_BYTES, inner.cost, inner.needs, inner, node.ranges)

    def arith(self, node: S.Node, lhs_type: Typ | None) -> tuple[Expr, Typ]:
        """check_arithmetic_expr: the expression and its type (its first operand's)."""
        if not isinstance(node, S.Arith):
            return self.arith_entity(node, lhs_type)
        if lhs_type is None and _is_constant(node.a):
            raise self.fail(node.a, "Constant arithmetic expression on the LHS is invalid.")
        if node.b is None:
            e, t = self.arith_entity(node.a, lhs_type)
            if t.ftype not in CAN["neg"]:
                raise self.fail(node.a, f"{ft_name(t.ftype, t.bits)} cannot -.")
            if isinstance(e, Const):
                ok, v = arith_values("neg", t.ftype, e.value, None, 1)
                if not ok[0]:
                    raise self.fail(
                        node.a, f"{S.display(node.a)}: {_ints(e.value).v} overflows gint32"
                    )
                value = Ints(int(v.v[0]), bool(v.s[0])) if isinstance(v, Ints) else int(v[0])
                return Const(t, 0, frozenset(), value), t
            return ArithExpr(t, e.cost, e.needs, "neg", e, None), t
        e1, t1 = self.arith(node.a, lhs_type)
        op = node.op
        if t1.ftype not in CAN[op]:
            raise self.fail(node.a, f"{ft_name(t1.ftype, t1.bits)} cannot {node.text}.")
        e2, t2 = self.arith(node.b, t1)
        if t2.ftype not in CAN[op]:
            raise self.fail(node.b, f"{ft_name(t2.ftype, t2.bits)} cannot {node.text}.")
        if not compatible(t1.ftype, t2.ftype):
            raise self.fail(
                node.b, f"{S.display(node.a)} and {S.display(node.b)} are not type compatible."
            )
        if t1.ftype == BYTES or t2.ftype == BYTES:
            if e1.t.ftype != BYTES:
                e1 = ToBytes(T_BYTES, e1.cost, e1.needs, e1)
            if e2.t.ftype != BYTES and not isinstance(e2, Const):
                e2 = ToBytes(T_BYTES, e2.cost, e2.needs, e2)
            t1 = T_BYTES if t1.ftype == ETHER and t2.ftype == BYTES else t1
        return ArithExpr(t1, e1.cost + e2.cost, e1.needs | e2.needs, op, e1, e2), t1

    def arith_entity(self, node: S.Node, lhs_type: Typ | None) -> tuple[Expr, Typ]:
        if isinstance(node, S.Literal) and node.kind in (S.UNPARSED, S.LITERAL):
            if lhs_type is None:
                raise self.fail(node, "Constant arithmetic expression on the LHS is invalid.")
            if node.kind == S.UNPARSED and node.text in FOREIGN_PROTOCOLS:
                return RefExpr(Typ(PROTO)), Typ(PROTO)
            value = self.conv.convert(node, lhs_type)
            return Const(lhs_type, 0, frozenset(), value), lhs_type
        if isinstance(node, S.FieldRef):
            f = self.field_of(node)
            return self.field_expr(node), Typ(f.ftype, f.bits)
        if isinstance(node, S.Call):
            e = self.call(node, lhs_type)
            return e, e.t
        if isinstance(node, S.Slice):
            return self.slice(node, lhs_type), T_BYTES
        raise self.fail(node, f"{S.display(node)} is not a valid arithmetic operand.")

    def call(self, node: S.Call, lhs_type: Typ | None) -> Expr:
        """check_function: the call's expression (its type is the return type)."""
        name = node.name
        nargs = len(node.args)
        if nargs < 1:
            raise self.fail(node, f"Function {name} needs at least 1 arguments.")
        if name not in ("max", "min") and nargs > 1:
            raise self.fail(node, f"Function {name} can only accept 1 arguments.")
        arg = node.args[0]
        if name in ("lower", "upper"):
            if not (
                isinstance(arg, S.FieldRef)
                and not arg.reference
                and self.field_of(arg).ftype == STRING
            ):
                raise self.fail(
                    arg, f"Only string type fields can be used as parameter for {name}()"
                )
            e = self.field_expr(arg)
            return CallExpr(T_STRING, e.cost + 1, e.needs, name, [e])
        if name in ("len", "count"):
            if not (isinstance(arg, S.FieldRef) and not arg.reference):
                raise self.fail(arg, f"Only fields can be used as parameter for {name}()")
            e = self.field_expr(arg, value=name == "len")
            return CallExpr(T_U32, e.cost + 1, e.needs, name, [e])
        if name == "string":
            if not (isinstance(arg, S.FieldRef) and not arg.reference):
                raise self.fail(arg, f"Only fields can be used as parameter for {name}()")
            f = self.field_of(arg)
            if f.ftype not in CAN["string"]:
                raise self.fail(arg, f'String conversion for field "{f.name}" is not supported')
            e = self.field_expr(arg)
            return CallExpr(T_STRING, e.cost + 1, e.needs, name, [e])
        if name == "abs":
            e, t = self.abs_arg(arg, lhs_type, name)
            return CallExpr(t, e.cost + 1, e.needs, name, [e])
        # max, min
        t_run = lhs_type
        args: list[Expr] = []
        for a in node.args:
            got = self.argument(a, t_run)
            if got is None:
                raise self.fail(a, f"Argument '{S.display(a)}' is not valid for {name}()")
            e, ta = got
            if t_run is None:
                t_run = ta
            if ta != t_run:
                raise self.fail(
                    a,
                    f"Arguments to '{name}' must have the same type (expected {ft_name(t_run.ftype, t_run.bits)}, got {ft_name(ta.ftype, ta.bits)})",
                )
            if ta.ftype not in CAN["cmp"]:
                raise self.fail(a, f"Argument '{S.display(a)}' to '{name}' cannot be ordered")
            args.append(e)
        assert t_run is not None
        return CallExpr(
            t_run,
            sum(e.cost for e in args) + 1,
            frozenset().union(*(e.needs for e in args)),
            name,
            args,
        )

    def argument(self, arg: S.Node, t: Typ | None) -> tuple[Expr, Typ] | None:
        """A function argument's expression and type: a literal takes the type `t` (None:
        there is none to take, and neither is a node that cannot be an argument)."""
        if isinstance(arg, S.Arith):
            return self.arith(arg, t)
        if isinstance(arg, S.Literal) and arg.kind in (S.UNPARSED, S.LITERAL):
            return None if t is None else (Const(t, 0, frozenset(), self.conv.convert(arg, t)), t)
        if isinstance(arg, (S.Call, S.FieldRef)):
            e = self.call(arg, t) if isinstance(arg, S.Call) else self.field_expr(arg)
            return e, e.t
        return None

    def abs_arg(self, arg: S.Node, lhs_type: Typ | None, name: str) -> tuple[Expr, Typ]:
        got = self.argument(arg, lhs_type)
        if got is None:
            if isinstance(arg, S.Literal) and arg.kind in (S.UNPARSED, S.LITERAL):
                raise self.fail(arg, "Need a field or field-like value on the LHS.")
            raise self.fail(arg, f"Type {_node_kind(arg)} is not valid for {name}")
        e, t = got
        if t.ftype == NONE:
            raise self.fail(arg, f"Type {_node_kind(arg)} is not valid for {name}")
        if t.ftype not in CAN["negative"]:
            raise self.fail(arg, f"'{S.display(arg)}' is not a valid argument to '{name}'()")
        return e, t


def _node_kind(node: S.Node) -> str:
    if isinstance(node, S.FieldRef):
        return "REFERENCE" if node.reference else "FIELD"
    if isinstance(node, S.Literal):
        return {S.STRING: "STRING", S.CHARCONST: "CHARCONST"}.get(node.kind, "LITERAL")
    return type(node).__name__.upper()


def _plain(e: Expr) -> Expr:
    """Range ends compare as plain addresses (a CIDR suffix on a range end is ignored)."""
    if isinstance(e, Const):
        v = e.value
        if isinstance(v, Addr4):
            return Const(e.t, e.cost, e.needs, v.value)
        if isinstance(v, Addr6):
            full = 0xFFFFFFFFFFFFFFFF
            return Const(e.t, e.cost, e.needs, Addr6(v.hi, v.lo, full, full))
    return e
