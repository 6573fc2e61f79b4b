"""Type-checks a parsed filter and turns it into a tree of vectorised tests over row sets.

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
import ipaddress
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.filter.context import FilterContext
from tcpwhy.filter.fields import (
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
from tcpwhy.filter.syntax import (
    STRING as STRING_TOKEN,
)
from tcpwhy.filter.syntax import (
    Entity,
    Exists,
    FilterError,
    InSet,
    Logic,
    Node,
    Not,
    Relation,
    Token,
)

_SEARCH_CHUNK = 1 << 24
_MAX_OFFSET = (
    1 << 31
)  # slice bounds beyond any captured frame  # payload bytes gathered per joined search

# ---------------------------------------------------------------- literals


def _err(src: str, tok: Token, msg: str) -> FilterError:
    return FilterError(msg, src, tok.pos, tok.length)


_INT_RE = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")


def parse_int(text: str) -> int | None:
    if not _INT_RE.fullmatch(text):
        return None
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body[:2] in ("0x", "0X"):
        return sign * int(body[2:], 16)
    if body[:2] in ("0b", "0B"):
        return sign * int(body[2:], 2)
    if len(body) > 1 and body[0] == "0":
        return sign * int(body[1:], 8)
    return sign * int(body)


_HEX_SEP_RE = re.compile(r"[0-9A-Fa-f]{2}([:.\-][0-9A-Fa-f]{2})*")


def parse_bytes(text: str) -> bytes | None:
    if re.fullmatch(r"(0[xX])?[0-9A-Fa-f]{1,2}", text):
        return bytes([int(text[-2:].removeprefix("x").removeprefix("X"), 16)])
    if _HEX_SEP_RE.fullmatch(text):
        return bytes.fromhex(re.sub(r"[:.\-]", "", text))
    return None


def parse_ether(text: str) -> int | None:
    t = text
    if re.fullmatch(r"[0-9A-Fa-f]{2}([:\-][0-9A-Fa-f]{2}){5}", t):
        return int(re.sub(r"[:\-]", "", t), 16)
    if re.fullmatch(r"[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}", t):
        return int(t.replace(".", ""), 16)
    if re.fullmatch(r"[0-9A-Fa-f]{12}", t):
        return int(t, 16)
    return None


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


def _max_for(f: Field) -> int:
    return (1 << f.bits) - 1


def convert(src: str, f: Field, ftype: str, ent: Entity) -> Any:
    """The literal `ent` as a value of `ftype` (the field's type, or BYTES after a slice)."""
    tok = ent.tok
    if ent.is_field:
        raise AssertionError("field passed as literal")
    is_str = tok.kind == STRING_TOKEN
    if is_str:
        raw = tok.value
        assert isinstance(raw, bytes)
        if ftype in (BYTES, STRING):
            return raw
        shown = raw.decode("utf-8", "replace")
        raise _err(
            src, tok, f'{type_name(ftype, f.bits)} cannot be converted from a string ("{shown}").'
        )
    text = tok.text
    if ftype in (UINT, FRAMENUM):
        v = parse_int(text)
        if v is None:
            raise _err(src, tok, f'"{text}" is not a valid number.')
        if v > _max_for(f) if ftype == UINT else v > 0xFFFFFFFF:
            raise _err(src, tok, f'"{text}" too big for this field, maximum {_max_for(f)}.')
        return v
    if ftype == BOOL:
        if text in ("True", "TRUE", "true"):
            return True
        if text in ("False", "FALSE", "false"):
            return False
        v = parse_int(text)
        if v is None:
            raise _err(src, tok, f'"{text}" is not a valid boolean.')
        return v != 0
    if ftype == IPV4:
        addr, _, bits = text.partition("/")
        try:
            if addr.count(".") != 3:
                raise ValueError(addr)
            a = int(ipaddress.IPv4Address(addr))
        except ValueError:
            raise _err(src, tok, f'"{text}" is not a valid hostname or IPv4 address.') from None
        n = 32
        if bits:
            nb = parse_int(bits)
            if nb is None or nb < 0:
                raise _err(src, tok, f'"{text}" is not a valid hostname or IPv4 address.')
            if nb > 32:
                raise _err(
                    src, tok, f"Netmask bits in a CIDR IPv4 address should be <= 32, not {nb}"
                )
            n = nb
        mask = (0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF
        return Addr4(a & mask, mask)
    if ftype == IPV6:
        addr, _, bits = text.partition("/")
        try:
            a = int(ipaddress.IPv6Address(addr))
        except ValueError:
            raise _err(src, tok, f'"{text}" is not a valid hostname or IPv6 address.') from None
        n = 128
        if bits:
            nb = parse_int(bits)
            if nb is None or nb < 0:
                raise _err(src, tok, f'"{text}" is not a valid hostname or IPv6 address.')
            if nb > 128:
                raise _err(src, tok, f"Prefix in a CIDR IPv6 address should be <= 128, not {nb}")
            n = nb
        m = ((1 << 128) - 1) ^ ((1 << (128 - n)) - 1)
        a &= m
        return Addr6(a >> 64, a & 0xFFFFFFFFFFFFFFFF, m >> 64, m & 0xFFFFFFFFFFFFFFFF)
    if ftype == ETHER:
        e = parse_ether(text)
        if e is None:
            raise _err(src, tok, f'"{text}" is not a valid Ethernet address.')
        return e
    if ftype == RELTIME:
        try:
            d = Decimal(text)
        except InvalidOperation:
            raise _err(src, tok, f'"{text}" is not a valid time.') from None
        if not d.is_finite():
            raise _err(src, tok, f'"{text}" is not a valid time.')
        return int((d * 1_000_000_000).to_integral_value())
    if ftype == BYTES:
        b = parse_bytes(text)
        if b is None:
            raise _err(src, tok, f'"{text}" is not a valid byte string.')
        return b
    if ftype == STRING:
        return text.encode()
    raise _err(src, tok, f"{f.name} (type={type_name(ftype, f.bits)}) cannot be compared.")


# ---------------------------------------------------------------- slices


def parse_slice(src: str, tok: Token) -> list[tuple[int, int | None]]:
    """Ranges of a slice as (start, length or None for "to the end")."""
    text = str(tok.value)
    out: list[tuple[int, int | None]] = []
    pos = tok.pos
    for part in text.split(","):
        lead = len(part) - len(part.lstrip())
        p = part.strip()
        ptok = Token("slice", p, pos + lead)
        pos += len(part) + 1
        m = re.fullmatch(r"(-?\w*)(?::(\w*))?", p)
        if m and (m.group(1) or m.group(2)):
            start_s, len_s = m.group(1), m.group(2)
            start = parse_int(start_s) if start_s else 0
            if start is None:
                raise _err(src, ptok, f'"{start_s}" is not a valid number.')
            if ":" not in p:
                out.append((start, 1))
                continue
            if not len_s:
                out.append((start, None))
                continue
            n = parse_int(len_s)
            if n is None or n < 0:
                raise _err(src, ptok, f'"{p}" is not a valid range.')
            out.append((start, n))
            continue
        m = re.fullmatch(r"(-?\d+)-(-?\d+)", p)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            out.append((a, b - a + 1 if b >= a else 0))
            continue
        raise _err(src, ptok, f'"{p}" is not a valid range.')
    for start, n in out:
        if abs(start) > _MAX_OFFSET or (n or 0) > _MAX_OFFSET:
            raise _err(src, tok, f'"{text}" is not a valid range.')
    return out


def _cut(b: bytes, ranges: list[tuple[int, int | None]]) -> bytes:
    parts = []
    for start, n in ranges:
        s = start if start >= 0 else max(len(b) + start, 0)
        parts.append(b[s:] if n is None else b[s : s + n])
    return b"".join(parts)


def _to_bytes(values: Any, ftype: str) -> ByteValues:
    """Byte form of non-byte values, for slicing addresses as Wireshark does."""
    if isinstance(values, ByteValues):
        return values
    if ftype == IPV4:
        return ByteValues([int(v).to_bytes(4, "big") for v in values.tolist()])
    if ftype == ETHER:
        return ByteValues([int(v).to_bytes(6, "big") for v in values.tolist()])
    if ftype == IPV6:
        return ByteValues(
            [((int(h) << 64) | int(lo)).to_bytes(16, "big") for h, lo in values.tolist()]
        )
    raise AssertionError(ftype)


def apply_slice(values: Any, ftype: str, ranges: list[tuple[int, int | None]]) -> ByteValues:
    bv = _to_bytes(values, ftype)
    if bv.backed and len(ranges) == 1 and ranges[0][0] >= 0 and ranges[0][1] is not None:
        # fixed window of payload bytes: gathered as one matrix, no per-row work
        start, n = ranges[0][0], ranges[0][1]
        assert bv.data is not None and bv.off is not None and bv.cap is not None
        lens = np.clip(bv.cap - start, 0, n)
        k = np.arange(n)
        idx = bv.off[:, None] + start + np.minimum(k[None, :], np.maximum(lens[:, None] - 1, 0))
        if bv.data.size:
            mat = bv.data[np.minimum(idx, bv.data.size - 1)]
        else:
            mat = np.zeros((len(bv), n), np.uint8)
        return _Window(mat, lens)
    return ByteValues([_cut(b, ranges) for b in bv.objs()])


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


# ---------------------------------------------------------------- value tests


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


def _objs_test(v: ByteValues, fn: Any) -> Mask:
    objs = v.objs()
    return np.fromiter((fn(x) for x in objs), bool, count=len(objs))


def _bytes_cmp(op: str, v: ByteValues, lit: Any) -> Mask:
    if op == "contains":
        if isinstance(lit, bytes) and v.backed:
            return _contains_backed(v, lit)
        return _objs_test(v, lambda x: lit in x)
    if op == "matches":
        return _objs_test(v, lambda x: lit.search(x) is not None)
    if (
        isinstance(v, _Window)
        and op in ("any_eq", "all_ne", "any_ne", "all_eq")
        and isinstance(lit, bytes)
    ):
        n = v.mat.shape[1]
        if len(lit) == n:
            eq = (v.lens == n) & np.all(v.mat == np.frombuffer(lit, np.uint8), axis=1)
        else:
            eq = np.zeros(len(v), bool)
        return eq if op in ("any_eq", "all_eq") else ~eq
    other = lit.objs() if isinstance(lit, ByteValues) else None
    objs = v.objs()
    fn = _PY_OPS[op]
    if other is not None:
        return np.fromiter(
            (fn(a, b) for a, b in zip(objs, other, strict=True)), bool, count=len(objs)
        )
    return np.fromiter((fn(a, lit) for a in objs), bool, count=len(objs))


_PY_OPS: dict[str, Any] = {
    "any_eq": lambda a, b: a == b,
    "all_eq": lambda a, b: a == b,
    "all_ne": lambda a, b: a != b,
    "any_ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}
_NP_OPS: dict[str, Any] = {
    "any_eq": np.equal,
    "all_eq": np.equal,
    "all_ne": np.not_equal,
    "any_ne": np.not_equal,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
}


def _ip6_cmp(op: str, v: Any, lit: Any) -> Mask:
    hi, lo = v[:, 0], v[:, 1]
    if isinstance(lit, Addr6):
        lhi, llo = np.uint64(lit.hi), np.uint64(lit.lo)
        if op in ("any_eq", "all_eq", "all_ne", "any_ne"):
            eq = ((hi & np.uint64(lit.mhi)) == lhi) & ((lo & np.uint64(lit.mlo)) == llo)
            return eq if op in ("any_eq", "all_eq") else ~eq
    else:
        lhi, llo = lit[:, 0], lit[:, 1]
    eq = (hi == lhi) & (lo == llo)
    lt = (hi < lhi) | ((hi == lhi) & (lo < llo))
    return {
        "any_eq": eq,
        "all_eq": eq,
        "all_ne": ~eq,
        "any_ne": ~eq,
        "lt": lt,
        "le": lt | eq,
        "gt": ~(lt | eq),
        "ge": ~lt,
    }[op]


def value_test(op: str, ftype: str, v: Any, lit: Any) -> Mask:
    """`v OP lit` elementwise; `lit` is a converted literal or another field's values."""
    if ftype in (BYTES, STRING):
        return _bytes_cmp(op, v, lit)
    if ftype == IPV6:
        return _ip6_cmp(op, v, lit)
    if ftype == IPV4 and isinstance(lit, Addr4):
        if op in ("any_eq", "all_eq", "all_ne", "any_ne"):
            eq = (v & np.uint64(lit.mask)) == np.uint64(lit.value)
            return eq if op in ("any_eq", "all_eq") else ~eq
        lit = np.uint64(lit.value)
    if op == "bitand":
        return (v.astype(np.int64) & int(lit)) != 0
    if ftype in (IPV4, ETHER):
        lit = lit if isinstance(lit, np.ndarray) else np.uint64(lit)
    elif not isinstance(lit, np.ndarray):
        lit = np.int64(int(lit))
    return np.asarray(_NP_OPS[op](v, lit), bool)


# ---------------------------------------------------------------- test nodes


@dataclass
class Test:
    cost: int = 1
    needs: frozenset[str] = frozenset()

    def run(self, ctx: FilterContext, rows: Rows) -> Mask:
        raise NotImplementedError


@dataclass
class AndTest(Test):
    items: list[Test] = field(default_factory=list)

    def run(self, ctx: FilterContext, rows: Rows) -> Mask:
        keep = np.ones(len(rows), bool)
        for t in self.items:
            live = np.flatnonzero(keep)
            if live.size == 0:
                break
            keep[live] = t.run(ctx, rows[live])
        return keep


@dataclass
class OrTest(Test):
    items: list[Test] = field(default_factory=list)

    def run(self, ctx: FilterContext, rows: Rows) -> Mask:
        hit = np.zeros(len(rows), bool)
        for t in self.items:
            live = np.flatnonzero(~hit)
            if live.size == 0:
                break
            hit[live] = t.run(ctx, rows[live])
        return hit


@dataclass
class NotTest(Test):
    item: Test | None = None

    def run(self, ctx: FilterContext, rows: Rows) -> Mask:
        assert self.item is not None
        return ~self.item.run(ctx, rows)


@dataclass
class Operand:
    """A field, possibly sliced, as seen by a test."""

    f: Field
    ranges: list[tuple[int, int | None]] | None = None

    @property
    def ftype(self) -> str:
        return BYTES if self.ranges is not None else self.f.ftype

    def occs(self, ctx: FilterContext, rows: Rows) -> list[Occ]:
        occs = self.f.extract(ctx, rows)
        if self.ranges is None:
            return occs
        return [Occ(o.present, apply_slice(o.values, self.f.ftype, self.ranges)) for o in occs]


def _present(o: Occ, n: int) -> Mask:
    return np.ones(n, bool) if o.present is None else o.present


@dataclass
class ExistsTest(Test):
    operand: Operand | None = None

    def run(self, ctx: FilterContext, rows: Rows) -> Mask:
        assert self.operand is not None
        out = np.zeros(len(rows), bool)
        for o in self.operand.f.extract(ctx, rows):
            out |= _present(o, len(rows))
        return out


def _quantify(op: str, pairs: list[tuple[Mask, Mask]], n: int) -> Mask:
    """Wireshark 4.0: `!=` and `===` hold for all occurrences (and need one); the rest for any."""
    if op in ("all_ne", "all_eq"):
        anyp = np.zeros(n, bool)
        allok = np.ones(n, bool)
        for present, ok in pairs:
            anyp |= present
            allok &= ~present | ok
        return anyp & allok
    out = np.zeros(n, bool)
    for present, ok in pairs:
        out |= present & ok
    return out


@dataclass
class CompareTest(Test):
    op: str = ""
    lhs: Operand | None = None
    literals: list[Any] = field(default_factory=list)  # several only for `in`
    ranges: list[tuple[Any, Any]] = field(default_factory=list)  # `in` ranges lo..hi
    rhs: Operand | None = None  # field-to-field comparison

    def run(self, ctx: FilterContext, rows: Rows) -> Mask:
        assert self.lhs is not None
        n = len(rows)
        ftype = self.lhs.ftype
        pairs: list[tuple[Mask, Mask]] = []
        lhs_occs = self.lhs.occs(ctx, rows)
        if self.rhs is not None:
            rhs_occs = self.rhs.occs(ctx, rows)
            for a in lhs_occs:
                for b in rhs_occs:
                    p = _present(a, n) & _present(b, n)
                    pairs.append((p, value_test(self.op, ftype, a.values, b.values)))
            return _quantify(self.op, pairs, n)
        for o in lhs_occs:
            present = _present(o, n)
            live = np.flatnonzero(present)
            ok = np.zeros(n, bool)
            if live.size:
                vals = _take(o.values, live, n)
                sub = np.zeros(live.size, bool)
                for lit in self.literals:
                    sub |= value_test(self.op, ftype, vals, lit)
                for lo, hi in self.ranges:
                    sub |= value_test("ge", ftype, vals, lo) & value_test("le", ftype, vals, hi)
                ok[live] = sub
            pairs.append((present, ok))
        return _quantify(self.op, pairs, n)


def _take(values: Any, live: npt.NDArray[np.int64], n: int) -> Any:
    """Values of the present rows only, so byte tests never touch absent ones."""
    if live.size == n:
        return values
    if isinstance(values, _Window):
        return _Window(values.mat[live], values.lens[live])
    if isinstance(values, ByteValues):
        if values.backed:
            assert values.off is not None and values.cap is not None
            return ByteValues(data=values.data, off=values.off[live], cap=values.cap[live])
        objs = values.objs()
        return ByteValues([objs[i] for i in live.tolist()])
    return values[live]


# ---------------------------------------------------------------- compile

_CMP_ALLOWED = {
    "contains": (BYTES, STRING),
    "matches": (BYTES, STRING),
    "bitand": (UINT,),
}
_OP_WORDS = {"contains": "contains", "matches": "matches", "bitand": "bitwise and"}


class Compiler:
    def __init__(self, src: str) -> None:
        self.src = src

    def field_of(self, ent: Entity) -> Operand:
        f = FIELDS[ent.name]
        ranges = None
        if ent.slice_tok is not None:
            if f.ftype not in (BYTES, STRING, IPV4, IPV6, ETHER):
                raise _err(
                    self.src,
                    ent.tok,
                    f'"{f.name}" is a {type_name(f.ftype, f.bits)} and cannot be sliced into a sequence of bytes.',
                )
            ranges = parse_slice(self.src, ent.slice_tok)
        return Operand(f, ranges)

    def compile(self, node: Node) -> Test:
        if isinstance(node, Logic):
            items = [self.compile(n) for n in node.items]
            items.sort(key=lambda t: t.cost)  # stable: equal costs keep the written order
            cost = sum(t.cost for t in items)
            needs = frozenset().union(*(t.needs for t in items))
            if node.op == "and":
                return AndTest(cost, needs, items)
            return OrTest(cost, needs, items)
        if isinstance(node, Not):
            inner = self.compile(node.item)
            return NotTest(inner.cost, inner.needs, inner)
        if isinstance(node, Exists):
            opnd = self.field_of(node.ent)
            return ExistsTest(opnd.f.cost, opnd.f.needs, opnd)
        if isinstance(node, Relation):
            return self.relation(node)
        if isinstance(node, InSet):
            return self.in_set(node)
        raise AssertionError(node)

    def _check_comparable(self, opnd: Operand, ent: Entity, op: str, op_text: str) -> None:
        ftype = opnd.ftype
        allowed = _CMP_ALLOWED.get(op)
        if ftype in (NONE, PROTO) or (allowed is not None and ftype not in allowed):
            what = _OP_WORDS.get(op, f'"{op_text}"')
            raise _err(
                self.src,
                ent.tok,
                f"{opnd.f.name} (type={type_name(ftype, opnd.f.bits)}) cannot participate in {what} comparison.",
            )

    def relation(self, node: Relation) -> Test:
        lhs = self.field_of(node.lhs)
        self._check_comparable(lhs, node.lhs, node.op, node.op_tok.text)
        cost = lhs.f.cost + (30 if node.op in ("contains", "matches") else 0)
        needs = lhs.f.needs
        if node.rhs.is_field:
            rhs = self.field_of(node.rhs)
            if rhs.ftype != lhs.ftype and not {rhs.ftype, lhs.ftype} <= {BYTES, STRING}:
                raise _err(
                    self.src,
                    node.rhs.tok,
                    f"{node.rhs.name} and {node.lhs.name} are not of compatible types.",
                )
            if lhs.ftype in (BYTES, STRING, IPV6) and node.op in ("contains", "matches", "bitand"):
                raise _err(self.src, node.rhs.tok, f"{node.rhs.name} cannot be used here.")
            return CompareTest(cost + rhs.f.cost, needs | rhs.f.needs, node.op, lhs, rhs=rhs)
        ftype = lhs.ftype
        if node.op == "matches":
            lit: Any = self.regex(node.rhs)
        else:
            target = BYTES if (node.op == "contains" and ftype == BYTES) else ftype
            lit = convert(self.src, lhs.f, target, node.rhs)
        return CompareTest(cost, needs, node.op, lhs, [lit])

    def regex(self, ent: Entity) -> re.Pattern[bytes]:
        pat = ent.tok.value if ent.tok.kind == STRING_TOKEN else ent.tok.text.encode()
        assert isinstance(pat, bytes)
        try:
            # Wireshark's `matches` is case-insensitive by default; (?-i) turns that off
            return re.compile(pat, re.IGNORECASE)
        except re.error as exc:
            raise FilterError(f"Regex compilation error: {exc.msg}.") from None

    def in_set(self, node: InSet) -> Test:
        lhs = self.field_of(node.lhs)
        self._check_comparable(lhs, node.lhs, "any_eq", "in")
        lits: list[Any] = []
        ranges: list[tuple[Any, Any]] = []
        for lo, hi in node.items:
            if lo.is_field or (hi is not None and hi.is_field):
                bad = lo if lo.is_field else hi
                assert bad is not None
                raise _err(self.src, bad.tok, f"{bad.name} cannot be used in a set.")
            vlo = convert(self.src, lhs.f, lhs.ftype, lo)
            if hi is None:
                lits.append(vlo)
            else:
                vhi = convert(self.src, lhs.f, lhs.ftype, hi)
                ranges.append((_plain(vlo), _plain(vhi)))
        return CompareTest(lhs.f.cost + len(node.items), lhs.f.needs, "any_eq", lhs, lits, ranges)


def _plain(v: Any) -> Any:
    """Range ends compare as plain addresses (a CIDR suffix on a range end is ignored)."""
    if isinstance(v, Addr4):
        return Addr4(v.value, 0xFFFFFFFF).value
    if isinstance(v, Addr6):
        return np.array([[v.hi, v.lo]], np.uint64)
    return v
