"""Filter fields on ICMP errors about TCP (the rows of a table's `icmp`), as tshark sees them.

tshark dissects the segment an ICMP or ICMPv6 error quotes with its ordinary IP
and TCP dissectors, so one frame holds two IP layers (the error's own, then the
quoted one) and a TCP layer: ``ip.src`` has two values, ``tcp.port`` the quoted
ports, ``tcp.stream`` the connection's stream. What it leaves out in an error
packet, and so do we: ``tcp.len`` and ``tcp.seq_raw`` (the quoted ``tcp.seq`` is
the raw number), the analysis flags, payload and HTTP fields; header fields
the quote cut off (an 8-byte quote ends after the sequence number).

New fields: ``icmp``, ``icmp.type``, ``icmp.code``, ``icmp.mtu`` (next-hop MTU of a
fragmentation-needed error), ``icmpv6`` and ``icmpv6.type``, ``icmpv6.code``,
``icmpv6.mtu`` (packet too big). On TCP rows they are absent.

Every field registered before this module is imported is wrapped: on a TCP table
it runs as before; on an ICMP table (one with the ICMP column group) it runs
the rules above. A filter is evaluated on the ICMP rows with a `FilterContext`
over the ICMP table whose `streams` hold, per row, `stream`, and the quoted raw
numbers as `rel_seq`, `rel_ack` and `win_scaled` (`icmp_streams`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import too_big_rows
from tcpwhy.filter.fields import (
    BYTES,
    FIELDS,
    PROTO,
    STRING,
    UINT,
    ByteValues,
    Extract,
    Field,
    Occ,
    Rows,
    _v4,
)

if TYPE_CHECKING:
    from tcpwhy.decode.table import PacketTable
    from tcpwhy.filter.context import FilterContext

_LAYERED = "layer" in {f.name for f in dataclasses.fields(Occ)}


def _occ(present: Any, values: Any, layer: int = 1) -> Occ:
    """An occurrence in protocol layer `layer` (``ip.src#2`` is the quoted header's)."""
    if _LAYERED and layer != 1:
        occ: Occ = cast(Any, Occ)(present, values, layer)
        return occ
    return Occ(present, values)


def is_icmp_table(t: PacketTable) -> bool:
    return "icmp_type" in t.cols


def icmp_streams(t: PacketTable, stream: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[Any]]:
    """`FilterContext.streams` for an ICMP table: the stream of each row (from
    `StreamTracker.icmp_out`) and the quoted header's own numbers."""
    return {
        "stream": np.asarray(stream, np.int64),
        "rel_seq": t["seq"].astype(np.int64),
        "rel_ack": t["ack"].astype(np.int64),
        "win_scaled": t["win"].astype(np.int64),
    }


def _absent(ctx: FilterContext, rows: Rows) -> list[Occ]:
    """Absent on every row (values of the right length all the same: some comparisons
    evaluate them before looking at presence)."""
    n = len(rows)
    return [Occ(np.zeros(n, bool), np.zeros(n, np.int64))]


def _absent_bytes(ctx: FilterContext, rows: Rows) -> list[Occ]:
    return [Occ(np.zeros(len(rows), bool), ByteValues([b""] * len(rows)))]


def _whole_header(base: Extract) -> Extract:
    """A TCP header field: present where the quote holds the whole header."""

    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        whole = ctx.table["doff"][rows] > 0
        out = []
        for o in base(ctx, rows):
            p = whole if o.present is None else (o.present & whole)
            out.append(dataclasses.replace(o, present=p))
        return out

    return ex


def _version(ctx: FilterContext, rows: Rows, v6: bool) -> npt.NDArray[np.bool_]:
    return ctx.table["ip_version"][rows] == (6 if v6 else 4)


def _ip_proto(v6: bool) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        m = _version(ctx, rows, v6)
        return [_occ(m, None, 1), _occ(m, None, 2)]

    return ex


def _ip_addr(which: tuple[str, ...], v6: bool) -> Extract:
    """The error's own address (layer 1) and the quoted one (layer 2), per side."""

    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        t = ctx.table
        m = _version(ctx, rows, v6)
        occs = []
        for prefix, layer in (("icmp_", 1), ("", 2)):
            for side in which:
                hi = t[f"{prefix}{side}_hi"][rows]
                lo = t[f"{prefix}{side}_lo"][rows]
                if v6:
                    occs.append(_occ(m, np.stack([hi, lo], axis=1).astype(np.uint64), layer))
                else:
                    occs.append(_occ(m, _v4(hi, lo)[1], layer))
        return occs

    return ex


def _ttl(v6: bool) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        t = ctx.table
        m = _version(ctx, rows, v6)
        return [
            _occ(m, t["icmp_ttl"][rows].astype(np.int64), 1),
            _occ(m, t["ip_ttl"][rows].astype(np.int64), 2),
        ]

    return ex


def _icmp_col(col: str, v6: bool, mtu: bool = False) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        t = ctx.table
        if not is_icmp_table(t):
            return _absent(ctx, rows)
        m = _version(ctx, rows, v6)
        if col == "":
            return [Occ(m, None)]
        if mtu:  # only fragmentation needed (3/4) and packet too big (2) carry one
            ty, code = t["icmp_type"][rows], t["icmp_code"][rows]
            m = m & too_big_rows(6 if v6 else 4, ty, code)
        return [Occ(m, t[col][rows].astype(np.int64))]

    return ex


_ABSENT_PREFIXES = ("tcp.analysis.", "http")
_ABSENT = {
    "tcp.len",
    "tcp.seq_raw",
    "tcp.nxtseq",
    "tcp.payload",
    "tcp.segment_data",
    "tcp.time_delta",
}
_HEADER = {
    "tcp.stream",
    "tcp.ack",
    "tcp.ack_raw",
    "tcp.ack.nonzero",
    "tcp.hdr_len",
    "tcp.window_size",
    "tcp.window_size_value",
    "tcp.urgent_pointer",
    "tcp.flags",
    "tcp.completeness",
}
_OVERRIDES: dict[str, Extract] = {
    "ip": _ip_proto(False),
    "ipv6": _ip_proto(True),
    "ip.src": _ip_addr(("src",), False),
    "ip.dst": _ip_addr(("dst",), False),
    "ip.addr": _ip_addr(("src", "dst"), False),
    "ipv6.src": _ip_addr(("src",), True),
    "ipv6.dst": _ip_addr(("dst",), True),
    "ipv6.addr": _ip_addr(("src", "dst"), True),
    "ip.ttl": _ttl(False),
    "ipv6.hlim": _ttl(True),
}


def _on_icmp(name: str, ftype: str, base: Extract) -> Extract | None:
    """How field `name` reads an ICMP table (None: as on a TCP table)."""
    if name in _OVERRIDES:
        return _OVERRIDES[name]
    if name in _ABSENT or name.startswith(_ABSENT_PREFIXES):
        return _absent_bytes if ftype in (BYTES, STRING) else _absent
    if name in _HEADER or name.startswith("tcp.flags."):
        return _whole_header(base)
    return None


def _wrap(f: Field) -> Field:
    icmp = _on_icmp(f.name, f.ftype, f.extract)
    if icmp is None:
        return f
    base = f.extract

    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        return icmp(ctx, rows) if is_icmp_table(ctx.table) else base(ctx, rows)

    return dataclasses.replace(f, extract=ex)


for _name in list(FIELDS):
    FIELDS[_name] = _wrap(FIELDS[_name])

for _name, _ftype, _ex, _bits in (
    ("icmp", PROTO, _icmp_col("", False), 32),
    ("icmp.type", UINT, _icmp_col("icmp_type", False), 8),
    ("icmp.code", UINT, _icmp_col("icmp_code", False), 8),
    ("icmp.mtu", UINT, _icmp_col("icmp_mtu", False, mtu=True), 16),
    ("icmpv6", PROTO, _icmp_col("", True), 32),
    ("icmpv6.type", UINT, _icmp_col("icmp_type", True), 8),
    ("icmpv6.code", UINT, _icmp_col("icmp_code", True), 8),
    ("icmpv6.mtu", UINT, _icmp_col("icmp_mtu", True, mtu=True), 32),
):
    FIELDS[_name] = Field(_name, _ftype, _ex, _bits)
