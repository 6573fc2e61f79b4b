"""Filter fields on HTTP/2 frames of cleartext streams (``http2``, ``http2.type``,
``http2.streamid``, ``http2.flags``, ``http2.flags.end_stream``, ``http2.flags.ack.ping``,
``http2.goaway.last_stream_id``, ``http2.goaway.error``, ``http2.rst_stream.error``), as
tshark 4.0 shows them.

The frames come from `tcpwhy.decode.http2.find_frames`: a stream is HTTP/2 when its first
payload is the client connection preface, on any port. tshark decides by port (it needs
``-d tcp.port==N,http2`` for a port its dissector does not register); on a stream both call
HTTP/2 the fields agree. A field is on the frame carrying its HTTP/2 frame's last byte, one
occurrence per HTTP/2 frame in it, in stream order; ``http2`` is also on the frame that
completes the client preface. ``http2.flags.end_stream`` is there on DATA and HEADERS
frames only, ``http2.flags.ack.ping`` on PING frames only, as in tshark. On the rows of an
ICMP error table every HTTP/2 field is absent.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tcpwhy.decode import http2 as h2
from tcpwhy.filter.fields import BOOL, FIELDS, PROTO, UINT, Extract, Field, Occ, Rows
from tcpwhy.filter.tls_fields import _occs, _PerRow, _unless_icmp

if TYPE_CHECKING:
    from tcpwhy.filter.context import FilterContext


class _TableH2:
    def __init__(self, frames: h2.Frames, n: int) -> None:
        self.frames = frames
        self.n = n
        self.per_row: dict[str, _PerRow] = {}


_CACHE: weakref.WeakKeyDictionary[Any, _TableH2] = weakref.WeakKeyDictionary()


def table_h2(ctx: FilterContext) -> _TableH2:
    got = _CACHE.get(ctx)
    if got is None:
        st = ctx.streams
        got = _CACHE[ctx] = _TableH2(
            h2.find_frames(ctx.table, st["stream"], st["dir"]), len(ctx.table)
        )
    return got


def _per_row(th: _TableH2, key: str, keep: npt.NDArray[np.bool_], values: Any) -> _PerRow:
    """The kept frames' values by the row that carries them (frames of one row keep their
    walk order: a row carries bytes of one direction only)."""
    got = th.per_row.get(key)
    if got is None:
        sel = np.flatnonzero(keep)
        order = sel[np.argsort(th.frames.row[sel], kind="stable")]
        rows = th.frames.row[order]
        count = np.bincount(rows, minlength=th.n).astype(np.int64)
        first = np.zeros(th.n, np.int64)
        if th.n:
            first[1:] = np.cumsum(count)[:-1]
        vals = np.asarray(values, np.int64)[order]
        got = th.per_row[key] = _PerRow(first, count, vals)
    return got


def _bools(occs: list[Occ]) -> list[Occ]:
    return [Occ(o.present, np.asarray(o.values) != 0) for o in occs]


def _field(what: str) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        th = table_h2(ctx)
        f = th.frames
        frame = f.ftype >= 0
        if what == "proto":
            p = _per_row(th, what, np.ones(len(f), bool), f.ftype)
            return [Occ(p.count[rows] > 0, None)]
        if what == "type":
            return _occs(_per_row(th, what, frame, f.ftype), rows, False)
        if what == "streamid":
            return _occs(_per_row(th, what, frame, f.sid), rows, False)
        if what == "flags":
            return _occs(_per_row(th, what, frame, f.flags), rows, False)
        if what == "end_stream":
            keep = (f.ftype == h2.DATA) | (f.ftype == h2.HEADERS)
            return _bools(_occs(_per_row(th, what, keep, f.flags & h2.END_STREAM), rows, False))
        if what == "ack_ping":
            keep = f.ftype == h2.PING
            return _bools(_occs(_per_row(th, what, keep, f.flags & h2.ACK), rows, False))
        if what == "last_sid":
            return _occs(_per_row(th, what, f.last_sid >= 0, f.last_sid), rows, False)
        if what == "goaway_error":
            keep = (f.ftype == h2.GOAWAY) & (f.error >= 0)
            return _occs(_per_row(th, what, keep, f.error), rows, False)
        keep = (f.ftype == h2.RST_STREAM) & (f.error >= 0)
        return _occs(_per_row(th, what, keep, f.error), rows, False)

    return ex


_COST = 20
for _name, _ftype, _what, _bits in (
    ("http2", PROTO, "proto", 32),
    ("http2.type", UINT, "type", 8),
    ("http2.streamid", UINT, "streamid", 32),
    ("http2.flags", UINT, "flags", 8),
    ("http2.flags.end_stream", BOOL, "end_stream", 8),
    ("http2.flags.ack.ping", BOOL, "ack_ping", 8),
    ("http2.goaway.last_stream_id", UINT, "last_sid", 32),
    ("http2.goaway.error", UINT, "goaway_error", 32),
    ("http2.rst_stream.error", UINT, "rst_error", 32),
):
    FIELDS[_name] = Field(
        _name, _ftype, _unless_icmp(_field(_what)), _bits, frozenset({"streams"}), _COST
    )
