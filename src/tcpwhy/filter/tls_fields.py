"""Filter fields on the TLS record layer (``tls``, ``tls.record.*``, ``tls.handshake.*``,
``tls.alert_message.*``), as tshark 4.0 shows them without keys.

The records come from `tcpwhy.decode.tls.find_records`, so a stream is TLS when its
first payload starts with a TLS handshake record, on any port. tshark decides by port:
443 and the other ports its dissectors register, and whatever ``-d tcp.port==N,tls``
adds; on a stream both call TLS the fields agree. A field is on the frame carrying its
record's last byte (tshark's frame after reassembly), one occurrence per record (or per
handshake message, alert, name) in the frame:

* ``tls.record.content_type`` is absent on a TLS 1.3 application-data record after the
  ServerHello (tshark calls it ``tls.record.opaque_type`` there);
* ``tls.handshake.type`` is the type of each handshake message that starts in a record
  (a TLS 1.2 server packs ServerHello, Certificate and ServerHelloDone into one), for
  handshake records in clear: before their sender's ChangeCipherSpec (an encrypted Finished
  has none), or a TLS 1.3 hello after it (following a HelloRetryRequest); a record not
  captured whole gives its first message's only. The hello fields below are read from the
  same records;
* ``tls.alert_message.level``/``.desc`` are there for alerts sent in clear (TLS 1.2 and
  earlier before the ChangeCipherSpec);
* ``tls.handshake.extensions_server_name`` and ``tls.handshake.extensions_alpn_str``
  are read from hellos captured whole (a hello cut by the snaplen has neither), and so
  is ``tls.handshake.session_id_length`` (one per hello: 32 in every TLS 1.3 hello, for
  middlebox compatibility; a TLS 1.2 server echoes the client's id to resume), and
  ``tls.handshake.extension.type`` (one per extension of each hello, in its order).

Records are walked per table: a command that streams a capture in chunks sees a stream
that spans chunks from the chunk's first segment on. On the rows of an ICMP error
table every TLS field is absent.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import unique_sorted
from tcpwhy.decode import tls as rec
from tcpwhy.decode.table import RST, SYN
from tcpwhy.filter.fields import FIELDS, PROTO, STRING, UINT, ByteValues, Extract, Field, Occ, Rows
from tcpwhy.tcp.seq import seq_add, seq_diff

if TYPE_CHECKING:
    from tcpwhy.filter.context import FilterContext

I64 = npt.NDArray[np.int64]


@dataclass
class _PerRow:
    """Occurrences of one field by table row: row r has `count[r]` values from `first[r]`."""

    first: I64
    count: I64
    values: Any  # int64 array or list of bytes, in row order


@dataclass
class TableTLS:
    """The TLS records of one table, with tshark's view of each."""

    recs: rec.Records
    n: int
    per_row: dict[str, _PerRow] = field(default_factory=dict)
    hellos: dict[int, rec.Hello | None] | None = None
    calls: _Calls | None = None


@dataclass
class _Calls:
    """Where tshark's TLS dissector runs, per table row: its ``tls`` items and their bytes.

    TCP hands TLS a segment's new bytes when they start at a record boundary (one item
    over them all, whatever records they hold or begin); a segment inside a record that
    began earlier and does not end in it is held for reassembly (no item); the segment
    that completes such a record gives one item over the reassembled record, then one
    over the rest of the segment, if any. A record whose 5-byte header was cut across
    segments is reassembled with the whole next segment (tshark asks for one more
    segment there), so its item runs to that segment's end and no second one follows;
    that segment has its item whether or not it completes the header or the record.
    Ranges are offsets in the direction's byte stream, as `Records.rel`.
    """

    n: I64  # 0, 1 or 2 items
    group: I64  # the row's group (stream * 2 + direction), -1 for rows without items
    rel: I64  # where the row's payload starts
    a1: I64  # first item: [a1, b1)
    b1: I64
    a2: I64  # second item: [a2, b2), the rest of the segment after a reassembled record
    b2: I64


_CACHE: weakref.WeakKeyDictionary[Any, TableTLS] = weakref.WeakKeyDictionary()


def table_tls(ctx: FilterContext) -> TableTLS:
    got = _CACHE.get(ctx)
    if got is None:
        st = ctx.streams
        recs = rec.find_records(ctx.table, st["stream"], st["dir"])
        got = _CACHE[ctx] = TableTLS(recs, len(ctx.table))
    return got


def _hellos(ctx: FilterContext, tt: TableTLS) -> dict[int, rec.Hello | None]:
    """The parsed ClientHello and ServerHello records, by record index (only these few
    records are read in full)."""
    if tt.hellos is None:
        r = tt.recs
        idx = np.flatnonzero((r.ctype == rec.HANDSHAKE) & ((r.hs == 1) | (r.hs == 2)))
        tt.hellos = {}
        for i in idx.tolist():
            raw = rec.record_bytes(ctx.table, r, i)
            tt.hellos[i] = rec.parse_hello(raw) if raw is not None else None
    return tt.hellos


def _opaque(ctx: FilterContext, tt: TableTLS) -> npt.NDArray[np.bool_]:
    """Application-data records tshark dissects after a ServerHello that chose TLS 1.3."""
    r = tt.recs
    out = np.zeros(len(r), bool)
    app = r.ctype == rec.APPLICATION_DATA
    if not app.any():
        return out
    stream = r.group // 2
    nstreams = int(stream.max()) + 1
    sh_row = np.full(nstreams, np.iinfo(np.int64).max, np.int64)
    sh_rel = np.zeros(nstreams, np.int64)
    sh_group = np.full(nstreams, -1, np.int64)
    for i, h in _hellos(ctx, tt).items():
        if int(r.hs[i]) != 2 or h is None:
            continue
        v = h.versions[0] if h.versions else h.legacy_version
        s = int(stream[i])
        if v == 0x0304 and int(r.row[i]) < sh_row[s]:
            sh_row[s], sh_rel[s], sh_group[s] = int(r.row[i]), int(r.rel[i]), int(r.group[i])
    later = (r.row > sh_row[stream]) | (
        (r.row == sh_row[stream]) & (r.group == sh_group[stream]) & (r.rel > sh_rel[stream])
    )
    out[app & later] = True
    return out


def _per_row(tt: TableTLS, key: str, keep: npt.NDArray[np.bool_], values: Any) -> _PerRow:
    """Index the kept records' values by the row that carries them, in frame order."""
    got = tt.per_row.get(key)
    if got is not None:
        return got
    r = tt.recs
    sel = np.flatnonzero(keep)
    order = sel[np.lexsort((r.rel[sel], r.row[sel]))]
    rows = r.row[order]
    count = np.bincount(rows, minlength=tt.n).astype(np.int64)
    first = np.zeros(tt.n, np.int64)
    if tt.n:
        first[1:] = np.cumsum(count)[:-1]
    if isinstance(values, list):
        vals: Any = [values[i] for i in order.tolist()]
    else:
        vals = np.asarray(values, np.int64)[order]
    got = tt.per_row[key] = _PerRow(first, count, vals)
    return got


def _occs(p: _PerRow, rows: Rows, strings: bool) -> list[Occ]:
    c = p.count[rows]
    f = p.first[rows]
    out = []
    for k in range(int(c.max()) if len(rows) else 0):
        present = c > k
        if strings:
            objs = [b""] * len(rows)
            for j in np.flatnonzero(present).tolist():
                objs[j] = p.values[int(f[j]) + k]
            out.append(Occ(present, ByteValues(objs)))
        else:
            idx = np.where(present, f + k, 0)
            v = p.values[idx] if len(p.values) else np.zeros(len(rows), np.int64)
            out.append(Occ(present, np.where(present, v, 0).astype(np.int64)))
    if not out:
        n = len(rows)
        vals = ByteValues([b""] * n) if strings else np.zeros(n, np.int64)
        out.append(Occ(np.zeros(n, bool), vals))
    return out


def _is_icmp(ctx: FilterContext) -> bool:
    return "icmp_type" in ctx.table.cols


def _absent(rows: Rows, strings: bool = False) -> list[Occ]:
    n = len(rows)
    return [Occ(np.zeros(n, bool), ByteValues([b""] * n) if strings else np.zeros(n, np.int64))]


def _unless_icmp(ex: Extract, strings: bool = False) -> Extract:
    """`ex`, but absent on every row of an ICMP error table (its rows carry no stream bytes)."""

    def guarded(ctx: FilterContext, rows: Rows) -> list[Occ]:
        return _absent(rows, strings) if _is_icmp(ctx) else ex(ctx, rows)

    return guarded


def _calls(ctx: FilterContext, tt: TableTLS) -> _Calls:
    """`_Calls` of the table, vectorised over the rows of the TLS streams."""
    if tt.calls is not None:
        return tt.calls
    t = ctx.table
    n = len(t)
    z = np.zeros(n, np.int64)
    out = _Calls(z.copy(), np.full(n, -1, np.int64), z.copy(), z.copy(), z.copy(), z.copy(), z)
    tt.calls = out
    r = tt.recs
    if not len(r):
        return out
    streams = unique_sorted(r.group // 2)
    groups = np.sort(np.concatenate([streams * 2, streams * 2 + 1]))
    groups = groups[groups < len(r.bounds) - 1]
    lens = r.bounds[groups + 1] - r.bounds[groups]
    total = int(lens.sum())
    if not total:
        return out
    shift = np.repeat(r.bounds[groups] - (np.cumsum(lens) - lens), lens)
    rows = r.order[shift + np.arange(total)]
    gid = np.repeat(groups, lens)
    plen = t["payload_len"][rows].astype(np.int64)
    fl = t["flags"][rows].astype(np.int64)
    keep = (plen > 0) & ((fl & RST) == 0)
    rows, gid, plen, fl = rows[keep], gid[keep], plen[keep], fl[keep]
    if not len(rows):
        return out
    s32 = seq_add(t["seq"][rows].astype(np.int64), (fl & SYN) != 0)
    first = np.r_[True, gid[1:] != gid[:-1]]
    base = s32[np.flatnonzero(first)][np.cumsum(first) - 1]
    rel = seq_diff(s32, base)
    ok = rel >= 0  # not before the direction's first segment
    end = rel + plen
    big = np.int64(1) << 33  # above any offset: keys of two groups never mix
    goff = gid * big
    cm = np.maximum.accumulate(np.where(ok, end, 0) + goff)
    prev = np.empty_like(cm)
    prev[0] = goff[0]
    prev[1:] = cm[:-1]
    seen = np.maximum(prev - goff, 0)  # bytes of the direction seen before the row
    new = ok & (end > seen)
    s = np.maximum(rel, seen)
    # the last record starting at or before each row's first new byte
    rkey = r.group * big + r.rel
    ro = np.argsort(rkey, kind="stable")
    rkey, rstart = rkey[ro], r.rel[ro]
    rend = rstart + 5 + r.length[ro]
    k = np.searchsorted(rkey, goff + s, side="right") - 1
    kk = np.maximum(k, 0)
    valid = (k >= 0) & (r.group[ro][kk] == gid)
    p, q = rstart[kk], rend[kk]
    boundary = new & np.where(valid, (p == s) | (q == s), s == 0)
    inside = new & valid & (p < s) & (s < q)
    split = inside & (s < p + 5)  # the header itself was cut: one more segment
    done = inside & ~split & (q <= end)
    done_split = split  # called on one more segment, complete or not
    # tshark's TLS declines bytes that start with four printable characters (text, not a
    # record): a segment's own bytes, or the rest after a reassembled record
    own = np.where(boundary, s, q) - rel
    text = _printable4(t, rows, own)
    boundary &= ~text
    rest = done & (q < end) & ~text
    m = boundary | done | done_split
    rr = rows[m]
    out.n[rr] = np.where(rest[m], 2, 1)
    out.group[rr] = gid[m]
    out.rel[rr] = rel[m]
    out.a1[rr] = np.where(boundary[m], s[m], p[m])
    out.b1[rr] = np.where(done[m], q[m], end[m])
    out.a2[rr] = np.where(done[m], q[m], end[m])
    out.b2[rr] = end[m]
    return out


def _printable4(t: Any, rows: I64, skip: I64) -> npt.NDArray[np.bool_]:
    """Rows whose captured payload after `skip` bytes is longer than 4 bytes and starts
    with four printable ASCII characters."""
    cap = np.minimum(t["payload_cap"][rows], t["payload_len"][rows]).astype(np.int64) - skip
    out = np.zeros(len(rows), bool)
    sel = np.flatnonzero((cap > 4) & (skip >= 0))
    if not len(sel) or not t.data.size:
        return out
    off = t["payload_off"][rows[sel]].astype(np.int64) + skip[sel]
    b = t.data[np.minimum(off[:, None] + np.arange(4)[None, :], t.data.size - 1)]
    out[sel] = ((b >= 0x20) & (b <= 0x7E)).all(axis=1)
    return out


def _stream_bytes(ctx: FilterContext, recs: rec.Records, g: int, a: int, b: int) -> bytes:
    """Bytes [a, b) of direction `g`'s stream (a reassembled record), up to the first byte
    not captured."""
    t = ctx.table
    rows = recs.order[recs.bounds[g] : recs.bounds[g + 1]].tolist()
    buf = bytearray(b - a)
    got = np.zeros(b - a, bool)
    base = -1
    for r in rows:
        L = int(t["payload_len"][r])
        f = int(t["flags"][r])
        if not L or f & RST:
            continue
        s32 = seq_add(int(t["seq"][r]), 1 if f & SYN else 0)
        if base < 0:
            base = s32
        rel = seq_diff(s32, base)
        if rel < 0 or rel >= b or rel + L <= a:
            continue
        c = min(int(t["payload_cap"][r]), L)
        lo, hi = max(a, rel), min(b, rel + c)
        if hi > lo:
            off = int(t["payload_off"][r])
            buf[lo - a : hi - a] = t.data[off + lo - rel : off + hi - rel].tobytes()
            got[lo - a : hi - a] = True
    missing = np.flatnonzero(~got)
    return bytes(buf[: int(missing[0])] if len(missing) else buf)


def _proto_bytes(ctx: FilterContext, rows: Rows) -> list[Occ]:
    """The bytes of each ``tls`` item of the rows (for slices and ``len(tls)``): a
    segment's own bytes, or a record reassembled from the segments that carried it."""
    nr = len(rows)
    tt = table_tls(ctx)
    c = _calls(ctx, tt)
    t = ctx.table
    cap = np.minimum(t["payload_cap"][rows], t["payload_len"][rows]).astype(np.int64)
    occs = []
    for k in (1, 2):
        present = c.n[rows] >= k
        a = (c.a1 if k == 1 else c.a2)[rows]
        b = (c.b1 if k == 1 else c.b2)[rows]
        rel = c.rel[rows]
        own = present & (a >= rel)
        if not (present & ~own).any():
            # every item is the row's own bytes: views into the payloads, nothing copied
            off = t["payload_off"][rows].astype(np.int64) + np.where(own, a - rel, 0)
            n = np.where(own, np.minimum(b - rel, cap) - (a - rel), 0)
            vals = ByteValues(data=t.data, off=off, cap=np.maximum(n, 0))
            occs.append(Occ(present, vals))
            continue
        objs = [b""] * nr
        for j in np.flatnonzero(present).tolist():
            lo, hi, r0 = int(a[j]), int(b[j]), int(rel[j])
            if lo >= r0:  # within the row's own payload
                o = int(t["payload_off"][rows[j]])
                objs[j] = t.data[o + lo - r0 : o + min(hi - r0, int(cap[j]))].tobytes()
            else:
                objs[j] = _stream_bytes(ctx, tt.recs, int(c.group[rows[j]]), lo, hi)
        occs.append(Occ(present, ByteValues(objs)))
    return occs


def _message_types(ctx: FilterContext, r: rec.Records, i: int) -> list[int]:
    """The types of the handshake messages that start in clear record i, in order (a
    TLS 1.2 server packs ServerHello, Certificate and ServerHelloDone into one record);
    its first message's alone when the record was not captured whole."""
    first = int(r.hs[i])
    if int(r.length[i]) < 4 + 4:
        return [first]
    raw = rec.record_bytes(ctx.table, r, i)
    if raw is None:
        return [first]
    out = []
    q = 5
    while q + 4 <= len(raw):
        out.append(raw[q])
        q += 4 + int.from_bytes(raw[q + 1 : q + 4], "big")
    return out or [first]


def _records_field(what: str) -> Extract:
    """A per-record number: one occurrence per record of the frame that shows it."""

    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        tt = table_tls(ctx)
        r = tt.recs
        if what == "proto":
            n = _calls(ctx, tt).n[rows]
            return [Occ(n >= 1, None), Occ(n >= 2, None)]
        if what == "content_type":
            keep = ~_opaque(ctx, tt)
            return _occs(_per_row(tt, what, keep, r.ctype), rows, False)
        if what == "version":
            return _occs(_per_row(tt, what, np.ones(len(r), bool), r.version), rows, False)
        if what == "length":
            return _occs(_per_row(tt, what, np.ones(len(r), bool), r.length), rows, False)
        if what == "handshake_type":
            p = tt.per_row.get(what)
            if p is None:
                keep = (r.ctype == rec.HANDSHAKE) & (r.hs >= 0)
                idx: list[int] = []
                types: list[bytes] = []
                for i in np.flatnonzero(keep).tolist():
                    for ht in _message_types(ctx, r, i):
                        idx.append(i)
                        types.append(bytes([ht]))
                q = _per_row_names(tt, what, np.asarray(idx, np.int64), types)
                vals = np.asarray([v[0] for v in q.values], np.int64)
                p = tt.per_row[what] = _PerRow(q.first, q.count, vals)
            return _occs(p, rows, False)
        keep = (r.ctype == rec.ALERT) & (r.alert >= 0)
        vals = (r.alert >> 8) if what == "alert_level" else (r.alert & 0xFF)
        return _occs(_per_row(tt, what, keep, vals), rows, False)

    return ex


def _hello_items(
    key: str,
    items: Callable[[FilterContext, TableTLS, int, rec.Hello], list[bytes]],
    number: Callable[[bytes], int] | None = None,
) -> Extract:
    """One occurrence per item `items` reads from each parsed hello, in record order: the
    item's bytes, or `number` of them (cached per table under `key`)."""

    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        tt = table_tls(ctx)
        p = tt.per_row.get(key)
        if p is None:
            idx: list[int] = []
            vals: list[bytes] = []
            for i, h in sorted(_hellos(ctx, tt).items()):
                if h is None:
                    continue
                for item in items(ctx, tt, i, h):
                    idx.append(i)
                    vals.append(item)
            # one pseudo-record per item, keeping the carrying record's row and order
            p = _per_row_names(tt, key, np.asarray(idx, np.int64), vals)
            if number is not None:
                nums = np.asarray([number(v) for v in p.values], np.int64)
                p = tt.per_row[key] = _PerRow(p.first, p.count, nums)
        return _occs(p, rows, number is None)

    return ex


def _sni(ctx: FilterContext, tt: TableTLS, i: int, h: rec.Hello) -> list[bytes]:
    """The server name, of a ClientHello only."""
    return [h.sni] if h.sni is not None and int(tt.recs.hs[i]) == 1 else []


def _alpn(ctx: FilterContext, tt: TableTLS, i: int, h: rec.Hello) -> list[bytes]:
    return list(h.alpn)


def _session_id(ctx: FilterContext, tt: TableTLS, i: int, h: rec.Hello) -> list[bytes]:
    """The legacy session id (its length is the field: 0 to 32)."""
    return [h.session_id]


def extension_types(raw: bytes) -> list[int]:
    """The extension types of a ClientHello or ServerHello record, in their order: what
    tshark lists as ``tls.handshake.extension.type`` (bounded by the hello's own lengths;
    a malformed tail ends the list where it stops making sense)."""
    if len(raw) < 9 or raw[5] not in (1, 2):
        return []
    body = raw[9 : 9 + int.from_bytes(raw[6:9], "big")]
    p = 2 + 32  # legacy version, random
    if p >= len(body):
        return []
    p += 1 + body[p]  # session id
    if raw[5] == 1:
        p += 2 + int.from_bytes(body[p : p + 2], "big")  # cipher suites
        if p >= len(body):
            return []
        p += 1 + body[p]  # compression methods
    else:
        p += 2 + 1  # cipher suite, compression method
    if p + 2 > len(body):
        return []  # no extensions
    end = min(len(body), p + 2 + int.from_bytes(body[p : p + 2], "big"))
    p += 2
    out = []
    while p + 4 <= end:
        out.append(int.from_bytes(body[p : p + 2], "big"))
        p += 4 + int.from_bytes(body[p + 2 : p + 4], "big")
    return out


def _extensions(ctx: FilterContext, tt: TableTLS, i: int, h: rec.Hello) -> list[bytes]:
    """The hello's extension types, in its order, as 2-byte items."""
    raw = rec.record_bytes(ctx.table, tt.recs, i)
    return [et.to_bytes(2, "big") for et in extension_types(raw)] if raw is not None else []


def _per_row_names(tt: TableTLS, key: str, recs_idx: I64, names: list[bytes]) -> _PerRow:
    r = tt.recs
    rows = r.row[recs_idx]
    order = np.lexsort((np.arange(len(recs_idx)), r.rel[recs_idx], rows))
    count = (
        np.bincount(rows, minlength=tt.n).astype(np.int64)
        if len(rows)
        else np.zeros(tt.n, np.int64)
    )
    first = np.zeros(tt.n, np.int64)
    if tt.n:
        first[1:] = np.cumsum(count)[:-1]
    got = tt.per_row[key] = _PerRow(first, count, [names[i] for i in order.tolist()])
    return got


_COST = 20
for _name, _ftype, _ex, _bits in (
    ("tls", PROTO, _records_field("proto"), 32),
    ("tls.record.content_type", UINT, _records_field("content_type"), 8),
    ("tls.record.version", UINT, _records_field("version"), 16),
    ("tls.record.length", UINT, _records_field("length"), 16),
    ("tls.handshake.type", UINT, _records_field("handshake_type"), 8),
    ("tls.alert_message.level", UINT, _records_field("alert_level"), 8),
    ("tls.alert_message.desc", UINT, _records_field("alert_desc"), 8),
    ("tls.handshake.extensions_server_name", STRING, _hello_items("sni", _sni), 32),
    ("tls.handshake.extensions_alpn_str", STRING, _hello_items("alpn", _alpn), 32),
    (
        "tls.handshake.session_id_length",
        UINT,
        _hello_items("session_id_length", _session_id, len),
        16,
    ),
    (
        "tls.handshake.extension.type",
        UINT,
        _hello_items("extension_type", _extensions, lambda v: int.from_bytes(v, "big")),
        16,
    ),
):
    FIELDS[_name] = Field(
        _name,
        _ftype,
        _unless_icmp(_ex, _ftype == STRING),
        _bits,
        frozenset({"streams"}),
        _COST,
        _unless_icmp(_proto_bytes, True) if _name == "tls" else None,
    )
