"""The fields a filter can name: their Wireshark type and how to read them from the table.

A field yields, for a set of candidate rows, a list of occurrences: each a
presence mask and a value array over those rows. Multi-valued fields
(``ip.addr``, ``tcp.port``) have several occurrences, which is how Wireshark
4.0's "any"/"all" comparison semantics are evaluated. Values keep a type per
field kind:

  UINT, FRAMENUM  int64 arrays
  BOOL            bool arrays
  IPV4, ETHER     uint64 arrays (address as an integer)
  IPV6            (n, 2) uint64 arrays (high, low halves)
  RELTIME         int64 nanoseconds (exact, as Wireshark's nstime)
  BYTES, STRING   `ByteValues`: payload-backed or Python bytes objects
  NONE, PROTO     existence only

Fields that need per-packet state (streams, analysis, HTTP) say so in `needs`,
so the context computes that state only for filters that use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import ACK, AE, CWR, ECE, FILE_ROW, FIN, PSH, RST, SYN, URG
from tcpwhy.decode.table import TUNNEL_NONE as _NO_TUNNEL
from tcpwhy.tcp import ANALYSIS_FLAGS
from tcpwhy.tcp.seq import ack_shown, next_seq, seq_offset

if TYPE_CHECKING:
    from tcpwhy.filter.context import FilterContext

Rows = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

UINT, FRAMENUM, BOOL, IPV4, IPV6, ETHER, RELTIME, BYTES, STRING, NONE, PROTO = (
    "uint",
    "framenum",
    "bool",
    "ipv4",
    "ipv6",
    "ether",
    "reltime",
    "bytes",
    "string",
    "none",
    "proto",
)
ABSTIME = "abstime"  # int64 nanoseconds since the epoch (frame.time)


def type_name(ftype: str, bits: int = 32) -> str:
    """Wireshark's name of a field type, as its error messages print it."""
    if ftype == UINT:
        n = bits // 8
        return f"Unsigned integer ({n} byte{'s' if n > 1 else ''})"
    return {
        FRAMENUM: "Frame number",
        BOOL: "Boolean",
        IPV4: "IPv4 address",
        IPV6: "IPv6 address",
        ETHER: "Ethernet or other MAC address",
        RELTIME: "Time offset",
        BYTES: "Sequence of bytes",
        STRING: "Character string",
        NONE: "Label",
        PROTO: "Protocol",
        ABSTIME: "Date and time",
    }[ftype]


class ByteValues:
    """Byte-string values of candidate rows; payload-backed ones are read from the table lazily.

    Payload bytes are attacker data: they are only compared and searched, never decoded
    as anything but bytes.
    """

    def __init__(
        self,
        objs: list[bytes] | None = None,
        *,
        data: npt.NDArray[np.uint8] | None = None,
        off: npt.NDArray[np.int64] | None = None,
        cap: npt.NDArray[np.int64] | None = None,
    ) -> None:
        self._objs = objs
        self.data = data
        self.off = off
        self.cap = cap

    @property
    def backed(self) -> bool:
        return self.data is not None

    def __len__(self) -> int:
        if self._objs is not None:
            return len(self._objs)
        assert self.off is not None
        return int(self.off.shape[0])

    def objs(self) -> list[bytes]:
        if self._objs is None:
            assert self.data is not None and self.off is not None and self.cap is not None
            d = self.data
            self._objs = [
                d[o : o + c].tobytes()
                for o, c in zip(self.off.tolist(), self.cap.tolist(), strict=True)
            ]
        return self._objs


@dataclass
class Occ:
    present: Mask | None  # None: present on every candidate row
    values: Any
    # the protocol layer it belongs to (``ip.src#2``): an int or a per-row array; None is 1
    layer: Any = None


Extract = Callable[["FilterContext", Rows], list[Occ]]


@dataclass(frozen=True)
class Field:
    name: str
    ftype: str
    extract: Extract
    bits: int = 32
    needs: frozenset[str] = frozenset()
    cost: int = 1
    # a protocol whose bytes tcpwhy can give (slices, len()): one Occ of bytes per item
    proto_bytes: Extract | None = None


FIELDS: dict[str, Field] = {}


def _add(
    name: str, ftype: str, extract: Extract, bits: int = 32, needs: str = "", cost: int = 1
) -> None:
    FIELDS[name] = Field(name, ftype, extract, bits, frozenset(needs.split()), cost)


def _col(col: str, dtype: Any = np.int64) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        return [Occ(None, ctx.table[col][rows].astype(dtype))]

    return ex


def _v4(hi: Any, lo: Any) -> tuple[Mask, npt.NDArray[np.uint64]]:
    ok = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
    return ok, lo & np.uint64(0xFFFFFFFF)


def _ip_occs(ctx: FilterContext, rows: Rows, which: tuple[str, ...], v6: bool) -> list[Occ]:
    """Outer (tunnel) address first, then the inner one, as Wireshark lists its IP layers."""
    t = ctx.table
    occs = []
    tunneled = t["tunnel"][rows] != _NO_TUNNEL
    inner_layer = _inner_layer(ctx, rows, v6)
    for side in which:
        for prefix, extra in (("outer_", tunneled), ("", None)):
            hi = t[f"{prefix}{side}_hi"][rows]
            lo = t[f"{prefix}{side}_lo"][rows]
            is4, a4 = _v4(hi, lo)
            if prefix == "":
                is4 = t["ip_version"][rows] == 4
            present = (~is4 if v6 else is4) if extra is None else (extra & (~is4 if v6 else is4))
            if prefix == "outer_" and not present.any():
                continue
            layer = 1 if prefix else inner_layer
            if v6:
                occs.append(Occ(present, np.stack([hi, lo], axis=1).astype(np.uint64), layer))
            else:
                occs.append(Occ(present, a4, layer))
    # Wireshark shows src then dst per layer; order does not change any/all results
    return occs


def _inner_layer(ctx: FilterContext, rows: Rows, v6: bool) -> npt.NDArray[np.int64]:
    """Layer number of the inner IP header: 2 under an outer header of the same family."""
    t = ctx.table
    outer4, _ = _v4(t["outer_src_hi"][rows], t["outer_src_lo"][rows])
    same = (t["tunnel"][rows] != _NO_TUNNEL) & (~outer4 if v6 else outer4)
    return 1 + same.astype(np.int64)


def _ip(which: tuple[str, ...], v6: bool) -> Extract:
    return lambda ctx, rows: _ip_occs(ctx, rows, which, v6)


def _ip_version(v: int) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        t = ctx.table
        present = t["ip_version"][rows] == v
        # a tunnel's outer IP layer (Teredo, IP-in-IP, GRE) is in the frame too
        outer4, _ = _v4(t["outer_src_hi"][rows], t["outer_src_lo"][rows])
        outer = (t["tunnel"][rows] != _NO_TUNNEL) & (outer4 if v == 4 else ~outer4)
        return [Occ(outer, None, 1), Occ(present, None, _inner_layer(ctx, rows, v == 6))]

    return ex


def _ttl(v: int) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        t = ctx.table
        present = t["ip_version"][rows] == v
        return [Occ(present, t["ip_ttl"][rows].astype(np.int64), _inner_layer(ctx, rows, v == 6))]

    return ex


def _inner_ip_col(ctx: FilterContext, rows: Rows, col: str) -> list[Occ]:
    t = ctx.table
    present = t["ip_version"][rows] == 4
    return [Occ(present, t[col][rows].astype(np.int64), _inner_layer(ctx, rows, False))]


_LINKTYPE_ETHERNET = 1  # pcap's LINKTYPE_ETHERNET (EN10MB)


def _eth(which: tuple[str, ...]) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        t = ctx.table
        # an Ethernet capture has the header even with all-zero addresses (loopback)
        has = (t["eth_src"][rows] != 0) | (t["eth_dst"][rows] != 0)
        if "linktype" in t.cols:
            has |= t["linktype"][rows] == _LINKTYPE_ETHERNET
        return [Occ(has, t[f"eth_{w}"][rows].astype(np.uint64)) for w in which]

    return ex


def _always(ctx: FilterContext, rows: Rows) -> list[Occ]:
    return [Occ(None, None)]


def _flag(bit: int) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        return [Occ(None, (ctx.table["flags"][rows] & bit) != 0)]

    return ex


def _stream_col(col: str) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        return [Occ(None, ctx.streams[col][rows].astype(np.int64))]

    return ex


def _optional(col: str) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        v = ctx.table[col][rows].astype(np.int64)
        return [Occ(v >= 0, v)]

    return ex


def _payload(ctx: FilterContext, rows: Rows) -> list[Occ]:
    t = ctx.table
    off = t["payload_off"][rows]
    if len(off) and int(off.max()) >= FILE_ROW:  # bytes left in the capture file: read them
        data, start, cap = t.gather(rows)
        return [Occ(cap > 0, ByteValues(data=data, off=start, cap=cap))]
    cap = t["payload_cap"][rows].astype(np.int64)
    vals = ByteValues(data=t.data, off=off.astype(np.int64), cap=cap)
    return [Occ(cap > 0, vals)]


def _time_relative(ctx: FilterContext, rows: Rows) -> list[Occ]:
    return [Occ(None, ctx.table["ts_ns"][rows].astype(np.int64) - ctx.first_ts_ns)]


def _analysis_flag(name: str) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        return [Occ(np.asarray(ctx.analysis.flags[name])[rows].astype(bool), None)]

    return ex


def _analysis_any(ctx: FilterContext, rows: Rows) -> list[Occ]:
    m = np.zeros(len(rows), bool)
    for arr in ctx.analysis.flags.values():
        m |= np.asarray(arr)[rows].astype(bool)
    return [Occ(m, None)]


def _analysis_time(attr: str) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        v = np.asarray(getattr(ctx.analysis, attr), np.float64)[rows]
        ok = ~np.isnan(v)
        ns = np.zeros(len(rows), np.int64)
        ns[ok] = np.round(v[ok] * 1e9).astype(np.int64)
        return [Occ(ok, ns)]

    return ex


def _dup_ack_num(ctx: FilterContext, rows: Rows) -> list[Occ]:
    v = np.asarray(ctx.analysis.dup_ack_num)[rows].astype(np.int64)
    return [Occ(v > 0, v)]


def _http_attr(attr: str) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        present, values = ctx.http_field(attr, rows)
        return [Occ(present, values)]

    return ex


def _http_proto(ctx: FilterContext, rows: Rows) -> list[Occ]:
    return [Occ(ctx.http_rows()[rows], None)]


# frame
_add("frame", PROTO, _always)
_add("frame.number", UINT, _col("frame"))  # FT_UINT32 in Wireshark 4.0
_add("frame.len", UINT, _col("frame_len"))
_add("frame.cap_len", UINT, _col("cap_len"))
_add("frame.time_relative", RELTIME, _time_relative)
_add("frame.time", ABSTIME, _col("ts_ns"))
_add("frame.time_epoch", RELTIME, _col("ts_ns"))  # a time offset from the epoch in Wireshark 4.0
# link
_add("eth", PROTO, lambda ctx, rows: [_eth(("src",))(ctx, rows)[0]])
_add("eth.src", ETHER, _eth(("src",)), 48)
_add("eth.dst", ETHER, _eth(("dst",)), 48)
_add("eth.addr", ETHER, _eth(("src", "dst")), 48)


def _vlan(ctx: FilterContext, rows: Rows) -> list[Occ]:
    return [Occ(ctx.table["vlan"][rows] >= 0, None)]


_add("vlan", PROTO, _vlan)
_add("vlan.id", UINT, _optional("vlan"), 16)
# network
_add("ip", PROTO, _ip_version(4))
_add("ip.src", IPV4, _ip(("src",), False))
_add("ip.dst", IPV4, _ip(("dst",), False))
_add("ip.addr", IPV4, _ip(("src", "dst"), False))
_add("ip.ttl", UINT, _ttl(4), 8)
_add("ip.id", UINT, lambda ctx, rows: _inner_ip_col(ctx, rows, "ip_id"), 16)
_add("ipv6", PROTO, _ip_version(6))
_add("ipv6.src", IPV6, _ip(("src",), True))
_add("ipv6.dst", IPV6, _ip(("dst",), True))
_add("ipv6.addr", IPV6, _ip(("src", "dst"), True))
_add("ipv6.hlim", UINT, _ttl(6), 8)
# tcp
_add("tcp", PROTO, _always)
_add("tcp.srcport", UINT, _col("sport"), 16)
_add("tcp.dstport", UINT, _col("dport"), 16)
_add(
    "tcp.port",
    UINT,
    lambda ctx, rows: [_col("sport")(ctx, rows)[0], _col("dport")(ctx, rows)[0]],
    16,
)
_add("tcp.stream", UINT, _stream_col("stream"), 32, "streams", 3)
_add("tcp.seq", UINT, _stream_col("rel_seq"), 32, "streams", 3)


def _ack_shown(ctx: FilterContext, rows: Rows) -> list[Occ]:
    """tshark 4.0's ``tcp.ack``: relative with the ACK flag, the raw field without it."""
    raw = ctx.table["ack"][rows].astype(np.int64)
    rel = ctx.streams["rel_ack"][rows].astype(np.int64)
    return [Occ(None, ack_shown(raw, rel, ctx.table["flags"][rows] & ACK))]


def _ack_nonzero(ctx: FilterContext, rows: Rows) -> list[Occ]:
    """tshark's expert item ``tcp.ack.nonzero``: an acknowledgment number without ACK."""
    t = ctx.table
    return [Occ(((t["flags"][rows] & ACK) == 0) & (t["ack"][rows] != 0), None)]


_add("tcp.ack", UINT, _ack_shown, 32, "streams", 3)
_add("tcp.ack.nonzero", NONE, _ack_nonzero)
_add("tcp.seq_raw", UINT, _col("seq"))
_add("tcp.ack_raw", UINT, _col("ack"))
_add("tcp.len", UINT, _col("payload_len"))
_add("tcp.hdr_len", UINT, _col("doff"), 8)
_add("tcp.window_size", UINT, _stream_col("win_scaled"), 32, "streams", 3)
_add("tcp.window_size_value", UINT, _col("win"), 16)
_add("tcp.urgent_pointer", UINT, _col("urp"), 16)
_add("tcp.flags", UINT, _col("flags"), 16)
for _name, _bit in (
    ("fin", FIN),
    ("syn", SYN),
    ("reset", RST),
    ("push", PSH),
    ("ack", ACK),
    ("urg", URG),
    ("ece", ECE),
    ("cwr", CWR),
    ("ae", AE),  # Accurate ECN, as tshark 4.0 names the bit
    ("ns", AE),  # and as Wireshark 3 named it (ECN nonce); tshark 4.0 has no tcp.flags.ns
):
    _add(f"tcp.flags.{_name}", BOOL, _flag(_bit))
_add("tcp.options.mss_val", UINT, _optional("opt_mss"), 16)
_add("tcp.options.wscale.shift", UINT, _optional("opt_ws"), 8)


def _next_seq(ctx: FilterContext, rows: Rows) -> list[Occ]:
    """tshark's ``tcp.nxtseq``, relative, on every segment."""
    t = ctx.table
    rel = ctx.streams["rel_seq"][rows].astype(np.int64)
    plen = t["payload_len"][rows].astype(np.int64)
    return [Occ(None, next_seq(rel, plen, t["flags"][rows] & (SYN | FIN)))]


def _option_present(col: str, least: int = 0) -> Extract:
    """A TCP option (tshark's protocol ``tcp.options.mss`` and its kin) is in the header:
    its column is at least `least` (a flag column: set)."""

    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        return [Occ(ctx.table[col][rows] >= least, None)]

    return ex


def _timestamp(col: str) -> Extract:
    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        t = ctx.table
        return [Occ(t["opt_ts"][rows].astype(np.bool_), t[col][rows].astype(np.int64))]

    return ex


def _sack_count(ctx: FilterContext, rows: Rows) -> list[Occ]:
    n = ctx.table["sack_n"][rows].astype(np.int64)
    return [Occ(n > 0, n)]


def _sack_edges(col: str) -> Extract:
    """Each SACK block's edge, relative as tshark shows them: to the base of the sequence
    numbers they acknowledge, the one ``tcp.ack`` is relative to (one value per block)."""

    def ex(ctx: FilterContext, rows: Rows) -> list[Occ]:
        t = ctx.table
        n = t["sack_n"][rows]
        base = t["ack"][rows].astype(np.int64) - ctx.streams["rel_ack"][rows].astype(np.int64)
        edges = seq_offset(t[col][rows].astype(np.int64), base[:, None])
        return [Occ(n > i, edges[:, i]) for i in range(edges.shape[1])]

    return ex


_add("tcp.nxtseq", UINT, _next_seq, 32, "streams", 3)
_add("tcp.options.mss", PROTO, _option_present("opt_mss"))
_add("tcp.options.wscale", PROTO, _option_present("opt_ws"))
_add("tcp.options.sack_perm", PROTO, _option_present("opt_sack_perm", 1))
_add("tcp.options.timestamp", PROTO, _option_present("opt_ts", 1))
_add("tcp.options.timestamp.tsval", UINT, _timestamp("opt_tsval"))
_add("tcp.options.timestamp.tsecr", UINT, _timestamp("opt_tsecr"))
_add("tcp.options.sack", PROTO, _option_present("sack_n", 1))
_add("tcp.options.sack.count", UINT, _sack_count, 8)
_add("tcp.options.sack_le", UINT, _sack_edges("sack_le"), 32, "streams", 3)
_add("tcp.options.sack_re", UINT, _sack_edges("sack_re"), 32, "streams", 3)
_add("tcp.payload", BYTES, _payload, cost=10)
_add("tcp.segment_data", BYTES, _payload, cost=10)
# analysis
for _flagname in ANALYSIS_FLAGS:
    _add(f"tcp.analysis.{_flagname}", NONE, _analysis_flag(_flagname), 32, "streams analysis", 5)
_add("tcp.analysis.flags", NONE, _analysis_any, 32, "streams analysis", 5)
_add("tcp.analysis.duplicate_ack_num", UINT, _dup_ack_num, 32, "streams analysis", 5)
_add("tcp.analysis.ack_rtt", RELTIME, _analysis_time("ack_rtt"), 32, "streams analysis", 5)
_add("tcp.analysis.initial_rtt", RELTIME, _analysis_time("initial_rtt"), 32, "streams analysis", 5)
_add("tcp.time_delta", RELTIME, _analysis_time("time_delta"), 32, "streams analysis", 5)
# http (no reassembly: see tcpwhy.filter.http)
_add("http", PROTO, _http_proto, 32, "streams http", 20)
_add("http.request", NONE, _http_attr("request"), 32, "http", 20)
_add("http.response", NONE, _http_attr("response"), 32, "http", 20)
_add("http.request.method", STRING, _http_attr("method"), 32, "http", 20)
_add("http.request.uri", STRING, _http_attr("uri"), 32, "http", 20)
_add("http.request.version", STRING, _http_attr("version"), 32, "http", 20)
_add("http.response.code", UINT, _http_attr("code"), 16, "http", 20)
_add("http.response.phrase", STRING, _http_attr("phrase"), 32, "http", 20)
_add("http.host", STRING, _http_attr("host"), 32, "http", 20)
_add("http.connection", STRING, _http_attr("connection"), 32, "http", 20)
_add("http.user_agent", STRING, _http_attr("user_agent"), 32, "http", 20)
_add("http.content_type", STRING, _http_attr("content_type"), 32, "http", 20)

# In this order (each module registers fields when imported; not sorted on purpose):
# ICMP errors about TCP: the icmp/icmpv6 fields, and how every field above reads them;
# the TLS record layer, without decryption (see tcpwhy.filter.tls_fields); HTTP/2 frames of
# cleartext streams (see tcpwhy.filter.http2_fields)
from tcpwhy.filter import icmp_fields as _icmp_fields  # noqa: E402,F401,I001
from tcpwhy.filter import tls_fields as _tls_fields  # noqa: E402,F401
from tcpwhy.filter import http2_fields as _http2_fields  # noqa: E402,F401
