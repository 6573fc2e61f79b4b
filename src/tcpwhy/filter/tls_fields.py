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
* ``tls.handshake.type`` is the type of a record's first handshake message, for
  handshake records before their sender's ChangeCipherSpec (an encrypted Finished has
  none); a later message packed in the same record is not listed;
* ``tls.alert_message.level``/``.desc`` are there for alerts sent in clear (TLS 1.2 and
  earlier before the ChangeCipherSpec);
* ``tls.handshake.extensions_server_name`` and ``tls.handshake.extensions_alpn_str``
  are read from hellos captured whole (a hello cut by the snaplen has neither), and so
  is ``tls.handshake.session_id_length`` (one per hello: 32 in every TLS 1.3 hello, for
  middlebox compatibility; a TLS 1.2 server echoes the client's id to resume).

Records are walked per table: a command that streams a capture in chunks sees a stream
that spans chunks from the chunk's first segment on. On the rows of an ICMP error
table every TLS field is absent.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tcpwhy.decode import tls as rec
from tcpwhy.filter.fields import FIELDS, PROTO, STRING, UINT, ByteValues, Extract, Field, Occ, Rows

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


def _before_ccs(r: rec.Records) -> npt.NDArray[np.bool_]:
    """Records sent before their sender's first ChangeCipherSpec (records are grouped by
    stream and direction, in stream order within a group)."""
    idx = np.arange(len(r), dtype=np.int64)
    ngroups = int(r.group.max()) + 1 if len(r) else 0
    first = np.full(ngroups, len(r), np.int64)
    ccs = np.flatnonzero(r.ctype == rec.CHANGE_CIPHER_SPEC)
    np.minimum.at(first, r.group[ccs], ccs)
    out: npt.NDArray[np.bool_] = idx < first[r.group] if len(r) else np.zeros(0, bool)
    return out


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


def _records_field(what: str) -> Extract:
    """A per-record number: one occurrence per record of the frame that shows it."""

    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        if _is_icmp(ctx):
            return _absent(rows)
        tt = table_tls(ctx)
        r = tt.recs
        if what == "proto":
            p = _per_row(tt, "all", np.ones(len(r), bool), np.zeros(len(r), np.int64))
            return [Occ(p.count[rows] > 0, None)]
        if what == "content_type":
            keep = ~_opaque(ctx, tt)
            return _occs(_per_row(tt, what, keep, r.ctype), rows, False)
        if what == "version":
            return _occs(_per_row(tt, what, np.ones(len(r), bool), r.version), rows, False)
        if what == "length":
            return _occs(_per_row(tt, what, np.ones(len(r), bool), r.length), rows, False)
        if what == "handshake_type":
            keep = (r.ctype == rec.HANDSHAKE) & (r.hs >= 0) & _before_ccs(r)
            return _occs(_per_row(tt, what, keep, r.hs), rows, False)
        keep = (r.ctype == rec.ALERT) & (r.alert >= 0)
        vals = (r.alert >> 8) if what == "alert_level" else (r.alert & 0xFF)
        return _occs(_per_row(tt, what, keep, vals), rows, False)

    return ex


def _hello_field(what: str) -> Extract:
    """SNI (ClientHello) or ALPN names (either hello): one occurrence per name."""

    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        if _is_icmp(ctx):
            return _absent(rows, True)
        tt = table_tls(ctx)
        p = tt.per_row.get(what)
        if p is None:
            r = tt.recs
            idx: list[int] = []
            vals: list[bytes] = []
            for i, h in sorted(_hellos(ctx, tt).items()):
                if h is None:
                    continue
                if what == "sni":
                    names = [h.sni] if h.sni is not None and int(r.hs[i]) == 1 else []
                else:
                    names = list(h.alpn)
                for name in names:
                    idx.append(i)
                    vals.append(name)
            # one pseudo-record per name, keeping the carrying record's row and order
            sub = np.asarray(idx, np.int64)
            p = _per_row_names(tt, what, sub, vals)
        return _occs(p, rows, True)

    return ex


def _session_id_length() -> Extract:
    """A hello's legacy session id length (0 to 32): one occurrence per hello."""

    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        if _is_icmp(ctx):
            return _absent(rows, False)
        tt = table_tls(ctx)
        p = tt.per_row.get("session_id_length")
        if p is None:
            hellos = [(i, h) for i, h in sorted(_hellos(ctx, tt).items()) if h is not None]
            sub = np.asarray([i for i, _ in hellos], np.int64)
            q = _per_row_names(tt, "session_id_length", sub, [h.session_id for _, h in hellos])
            lengths = np.asarray([len(v) for v in q.values], np.int64)
            p = tt.per_row["session_id_length"] = _PerRow(q.first, q.count, lengths)
        return _occs(p, rows, False)

    return ex


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
    ("tls.handshake.extensions_server_name", STRING, _hello_field("sni"), 32),
    ("tls.handshake.extensions_alpn_str", STRING, _hello_field("alpn"), 32),
    ("tls.handshake.session_id_length", UINT, _session_id_length(), 16),
):
    FIELDS[_name] = Field(_name, _ftype, _ex, _bits, frozenset({"streams"}), _COST)
