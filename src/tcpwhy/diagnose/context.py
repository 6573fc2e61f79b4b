"""Per-connection facts the rules share, computed once per capture.

Rows are grouped by stream (Wireshark's tcp.stream) with one stable argsort;
per-stream counts are numpy reductions, so a rule can pre-select the few
connections worth a closer look without touching every packet in Python.
The `Conn` view of one stream (its rows, sides, states) is built lazily for
the connections a rule selected. Wireshark's per-packet analysis flags
(retransmission, keep-alive, zero window…) come from `tcpwhy.tcp.analysis`,
computed once per capture the first time a rule asks for them.

Orientation differs from `tcpwhy.tcp.connections` on purpose. There the
originator follows Zeek (its likely-server-ports heuristics may flip a
connection whose SYN went from a well-known port), so that records match
conn.log. A diagnosis speaks of "the client" as the side that called
connect(): the sender of the first SYN, else the receiver of a SYN-ACK, else
the side whose port looks ephemeral (`tcpwhy.tcp.sides`, which flow uses too).
Likewise `Capture.endings()` is the report's own short tally from the
per-stream counts (a few numpy reductions), not `ConnRecord.end`: building
records would run the RFC state machine over every connection of the capture
to say less than the report needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import SCAN_ROWS, extend_filled, first_where, positions, unique_sorted
from tcpwhy.decode.table import (
    ACK,
    COLUMNS,
    FIN,
    FLAG_NAMES,
    PSH,
    RST,
    SYN,
    PacketTable,
    format_endpoint,
)
from tcpwhy.diagnose import icmp as icmp_join
from tcpwhy.diagnose import kernels
from tcpwhy.diagnose.model import Step
from tcpwhy.tcp.analysis import FLAGS as ANALYSIS_FLAGS
from tcpwhy.tcp.analysis import Analyzer
from tcpwhy.tcp.endings import ENDING_SUMMARY
from tcpwhy.tcp.seq import seq_add, seq_geq
from tcpwhy.tcp.sides import client_dirs
from tcpwhy.tcp.state import (
    NO_FRAME,
    Event,
    IcmpErrorRows,
    State,
    state_label,
    with_icmp_rows,
)
from tcpwhy.tcp.state import Step as StateStep
from tcpwhy.tcp.state_kernel import Timelines, run_connections
from tcpwhy.tcp.streams import StreamTracker, rows_by_stream

CLIENT, SERVER = 0, 1
WHO = ("client", "server")
NO_FIN = np.iinfo(np.int64).max  # Capture.first_fin_ns of a side that sent no FIN
CONN_CACHE_ROWS = 200_000  # packets of the Conn views a Capture keeps (LRU)
IN_ORDER_FROM = 1024
"""Packets of a connection from which its `Conn` slices its numpy columns out of the
capture's stream-ordered copies (`Capture.in_order`) instead of gathering its rows: wrk's
387 keep-alive connections of 11,000 packets each were gathered again by every rule that
looked at them (the views' cache holds 200,000 packets), 30 to 60 ms a column a rule."""
STATES_BATCH_ROWS = 1 << 18
"""Packets of the connections whose states one compiled call works out (`timeline_of`)."""
ENDING_WORDS = tuple(words for _, words in ENDING_SUMMARY)
"""`Capture.endings`' words, in `Capture.ending_index` order (from
`tcpwhy.tcp.endings.ENDING_SUMMARY`, with their codes)."""


def flag_text(f: int) -> str:
    names = [n for bit, n in FLAG_NAMES if f & bit and bit != PSH]
    return "[" + ", ".join(names) + "]" if names else "[]"


def fmt_s(seconds: float) -> str:
    """Durations as people read them: 340 µs, 12.5 ms, 1.24 s, 3 min 5 s, 5 h 12 min,
    9 d 4 h."""
    s = abs(seconds)
    if s < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if s < 1:
        return f"{seconds * 1e3:.1f} ms"
    if s < 120:
        return f"{seconds:.2f} s"
    sign = "-" if seconds < 0 else ""
    whole = round(s)
    if whole < 2 * 3600:
        return f"{sign}{whole // 60} min {whole % 60} s"
    if whole < 2 * 86400:
        return f"{sign}{whole // 3600} h {whole % 3600 // 60} min"
    return f"{sign}{whole // 86400} d {whole % 86400 // 3600} h"


def fmt_between(start_ns: int, lo_ns: int, hi_ns: int) -> str:
    """A stretch of capture time as people read it: its UTC wall-clock times and where it
    lies in the capture (`start_ns`: the capture's first packet), as Wireshark's relative
    times count: "from 12:10:03.408 to 12:10:04.425 UTC on 2026-12-01 (+0.408 s to +1.425 s
    into the capture)"."""
    from datetime import UTC, datetime

    lo = datetime.fromtimestamp(lo_ns / 1e9, UTC)
    hi = datetime.fromtimestamp(hi_ns / 1e9, UTC)
    day = lo.strftime("%Y-%m-%d")
    end = hi.strftime("%H:%M:%S.%f")[:-3] + (
        "" if hi.date() == lo.date() else hi.strftime(" on %Y-%m-%d")
    )
    return (
        f"from {lo.strftime('%H:%M:%S.%f')[:-3]} to {end} UTC on {day} "
        f"(+{(lo_ns - start_ns) / 1e9:.3f} s to +{(hi_ns - start_ns) / 1e9:.3f} s into the "
        "capture)"
    )


class SideStates(NamedTuple):
    """One endpoint's states: the `Endpoint.timeline` and final `Endpoint.state` of
    `tcpwhy.tcp.state.run_connection`."""

    timeline: list[StateStep]
    state: State


class States(NamedTuple):
    originator: SideStates
    responder: SideStates


class _Timeline(NamedTuple):
    """One connection's steps as `run_connections` gives them (its `Timelines` rows), and
    its final states, as lists: what `Conn.states` is made from."""

    side: list[int]
    state: list[int]
    ts_ns: list[int]
    frame: list[int]
    event: list[int]
    final: tuple[int, int]


class Endpoints(NamedTuple):
    """Per-stream address columns (addresses as the packet table's hi/lo halves)."""

    client_hi: npt.NDArray[np.uint64]
    client_lo: npt.NDArray[np.uint64]
    server_hi: npt.NDArray[np.uint64]
    server_lo: npt.NDArray[np.uint64]
    server_port: npt.NDArray[np.int64]


class FinTimes(NamedTuple):
    """`Capture.fins`: the streams that sent a FIN, and each side's first FIN time."""

    sids: npt.NDArray[np.int64]  # ascending
    ns: npt.NDArray[np.int64]  # per stream of `sids` and side: its first FIN, NO_FIN if none

    def per_stream(self, nstreams: int, holds: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """A mask of every stream from `holds`, one value per stream of `sids` (the others,
        without a FIN, False)."""
        out = np.zeros(nstreams, np.bool_)
        out[self.sids] = holds
        return out


class StreamConstants:
    """What the stream tracker writes on every row of a stream though it is the same on all
    of them, held once per stream: the two bases its relative numbers count from (by the
    tracker's `dir`) and its conversation. `tcpwhy.tcp.streams` sets a base once in a stream
    (its first packet that way, or an ACK from the other way) and a reused port starts a new
    stream, so every row of a stream and direction gives the same base. Per row they were
    50 MB at 4 M packets; `take` drops them from a chunk's columns as the engine reads."""

    PER_ROW = ("rel_seq", "rel_ack", "conv")

    def __init__(self) -> None:
        self.n = 0  # streams so far
        self.base = np.zeros((0, 2), np.uint32)
        self.conv = np.zeros(0, np.int32)

    def take(self, table: PacketTable, got: dict[str, npt.NDArray[Any]]) -> None:
        """Pop the per-row columns out of `got` (the tracker's columns of `table`'s rows)
        into the per-stream ones, a block of rows at a time (no capture-sized temporaries)."""
        rel_seq, rel_ack, conv = (got.pop(k, None) for k in self.PER_ROW)
        stream, pdir = got.get("stream"), got.get("dir")
        if rel_seq is None or rel_ack is None or conv is None or stream is None or pdir is None:
            return
        if not len(stream):
            return
        self._grow(int(stream.max()) + 1)
        t = table
        kernels.stream_bases(
            stream, pdir, t["flags"], t["seq"], t["ack"], rel_seq, rel_ack, conv, SCAN_ROWS,
            self.base, self.conv,
        )  # fmt: skip

    def _grow(self, need: int) -> None:
        """Streams up to `need` (0 until a row of theirs is taken)."""
        self.base = extend_filled(self.base, self.n, need, 0)
        self.conv = extend_filled(self.conv, self.n, need, 0)
        self.n = max(self.n, need)

    def columns(self, nstreams: int) -> dict[str, npt.NDArray[Any]]:
        """The per-stream columns of streams 0..nstreams-1, as `Capture` takes them beside
        the per-row ones."""
        self._grow(nstreams)
        return {"seq_base": self.base[:nstreams], "stream_conv": self.conv[:nstreams]}


def _side_counts(
    flags: npt.NDArray[Any],
    plen: npt.NDArray[Any],
    stream: npt.NDArray[np.int64],
    side: npt.NDArray[np.int8],
    nstreams: int,
    longest: int,
) -> tuple[npt.NDArray[Any], ...]:
    """Per stream and side: packets, SYNs, SYN-ACKs, FINs, resets and data segments, in one
    compiled pass over the rows (`kernels.side_counts`). Six masked bincounts of the
    capture, a block of rows at a time, were 0.26 s of a 3 M-SYN flood's `analyze`.

    No count exceeds its stream's packets, `longest` at most: int16 where even two of a
    stream's counts added stay in range (a flood's 3 million streams: 72 MB, not 144; the
    peak of its `analyze` 700 MB, not 720-760), else int32. The rules only compare counts,
    add two of one stream, or sum them (numpy sums small integers as int64)."""
    small = 2 * longest <= np.iinfo(np.int16).max
    out = [np.zeros(2 * nstreams, np.int16 if small else np.int32) for _ in range(6)]
    (kernels.side_counts16 if small else kernels.side_counts)(
        np.ascontiguousarray(flags, COLUMNS["flags"][0]),
        np.ascontiguousarray(plen, COLUMNS["payload_len"][0]),
        np.ascontiguousarray(stream, np.int64),
        np.ascontiguousarray(side, np.int8),
        tuple(out),
    )
    return tuple(c.reshape(-1, 2) for c in out)


def _side_bytes(
    plen: npt.NDArray[Any], stream: npt.NDArray[np.int64], side: npt.NDArray[np.int8], nstreams: int
) -> npt.NDArray[np.float64]:
    """Per stream and side: payload bytes, a block of rows at a time (a key of the whole
    capture, stream * 2 + side, would be a capture-sized temporary)."""
    size = 2 * nstreams
    total = np.zeros(size, np.float64)
    step = max(SCAN_ROWS, 8 * nstreams)  # at least four times the sums: few blocks on a flood
    for lo in range(0, len(stream), step):
        sl = slice(lo, lo + step)
        key = stream[sl] * 2
        key += side[sl]
        total += np.bincount(key, weights=plen[sl], minlength=size)
    return total.reshape(-1, 2)


def _held(got: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A per-stream column kept for the whole diagnosis, read-only; one with the same value
    for every stream (the high half of every IPv4 address) as that value broadcast."""
    if len(got) and got.min() == got.max():
        return np.broadcast_to(got[:1].copy(), got.shape)
    got.flags.writeable = False
    return got


class Capture:
    """One capture (or several rotated files joined in time order) with its streams."""

    def __init__(
        self,
        table: PacketTable,
        file_of_row: npt.NDArray[Any],
        files: list[str],
        stream_numbers: npt.NDArray[np.int64] | None = None,
        streams: dict[str, npt.NDArray[Any]] | None = None,
        analyse_ahead: bool = False,
    ):
        """`stream_numbers` maps this table's stream ids to the whole capture's `tcp.stream`
        numbers, when the table holds only some streams (`analyze -Y`); `streams` are the
        table's `StreamTracker` columns when the caller tracked them as it read.
        `analyse_ahead`: the analysis flags (`flag`) are worked out on a thread of their own
        from here on, for a caller that will ask for them (the rules do)."""
        self.table = table
        self.files = files
        self.file_of_row = file_of_row
        n = len(table)
        st = streams if streams is not None and n else (_track_streams(table) if n else {})
        self._streams = st
        self.stream: npt.NDArray[np.int64] = st.get("stream", np.zeros(0, np.int64))
        # ICMP errors about TCP: a stream opened by an error alone has no TCP row here
        icmp_stream = st.pop("icmp_stream", np.zeros(0, np.int64))
        icmp_dir = st.pop("icmp_dir", np.zeros(0, np.int8))
        raw = self.stream
        self.stream, stream_numbers, icmp_sid, renumbered = icmp_join.dense_streams(
            raw, stream_numbers, icmp_stream
        )
        self.reused: npt.NDArray[np.bool_] = st.get("reused", np.zeros(0, np.bool_))
        self.win_scaled: npt.NDArray[np.int32] = st.get("win_scaled", np.zeros(0, np.int32))
        pdir = st.get("dir", np.zeros(0, np.int8))
        self.nstreams = int(self.stream.max()) + 1 if n else 0
        # relative numbers as each stream's two bases and the conversation of each stream,
        # not of each packet (`StreamConstants`: the engine gives them so, as it read)
        if "seq_base" not in st:
            got = StreamConstants()
            got.take(table, st)
            st.update(got.columns(int(raw.max()) + 1 if n else 0))
        base, conv = st.pop("seq_base"), st.pop("stream_conv")
        if renumbered is not None:  # the ids were made dense
            base, conv = base[renumbered], conv[renumbered]
        self._seq_base: npt.NDArray[np.uint32] = base
        self.stream_conv: npt.NDArray[np.int32] = conv
        self._pdir = pdir
        self._bits_ahead = _Ahead(self._bit_inputs()) if analyse_ahead and n else None
        self.stream_numbers = (
            stream_numbers if stream_numbers is not None else np.arange(self.nstreams)
        )
        self.start_ns = int(table["ts_ns"].min()) if n else 0
        self.end_ns = int(table["ts_ns"].max()) if n else 0
        self.order: npt.NDArray[np.signedinteger[Any]]
        if n < 1 << 31:
            # row numbers as int32: a capture-sized array kept for every rule
            self.order, bounds = rows_by_stream(self.stream, self.nstreams)
        else:
            self.order = np.argsort(self.stream, kind="stable")
            bounds = np.searchsorted(self.stream[self.order], np.arange(self.nstreams + 1))
        self.starts = bounds[:-1]
        self.ends = bounds[1:]

        flags = table["flags"]  # its own narrow type: a whole capture's column
        first = self.order[self.starts] if self.nstreams else np.zeros(0, np.int64)
        orig = client_dirs(
            flags,
            pdir,
            self.stream,
            self.nstreams,
            first,
            table["sport"][first],
            table["dport"][first],
        )
        self.orig_dir = orig  # a side (0/1) per stream: a byte, not eight
        self.side = (pdir != orig[self.stream]).astype(np.int8) if n else np.zeros(0, np.int8)

        (
            self.n_pkts,
            self.n_syn,
            self.n_synack,
            self.n_fin,
            self.n_rst,
            self.n_data,
        ) = _side_counts(
            flags,
            table["payload_len"],
            self.stream,
            self.side,
            self.nstreams,
            int((self.ends - self.starts).max()) if self.nstreams else 0,
        )
        ts = table["ts_ns"]
        self.first_ns = ts[self.order[self.starts]] if self.nstreams else np.zeros(0, np.int64)
        self.last_ns = ts[self.order[self.ends - 1]] if self.nstreams else np.zeros(0, np.int64)
        self._conns: dict[int, Conn] = {}
        self._in_order: dict[str, npt.NDArray[Any]] = {}
        # the streams `conns_where` is going through and where it is, and the timelines
        # worked out ahead for the next ones (`timeline_of`)
        self._plan: tuple[npt.NDArray[np.intp], int] | None = None
        self._timelines: dict[int, _Timeline] = {}
        self._conn_rows = 0
        self.icmp = icmp_join.IcmpRows(self, table.icmp, icmp_sid, icmp_dir)
        """The ICMP errors about TCP, joined to the streams (`tcpwhy.diagnose.icmp`)."""

    @cached_property
    def bytes(self) -> npt.NDArray[np.float64]:
        """Per stream and side: payload bytes. Made when a rule first asks (a few do), as
        `first_fin_ns`: 48 MB each on a flood's 3 million streams, not held before then."""
        t = self.table
        return _side_bytes(t["payload_len"], self.stream, self.side, self.nstreams)

    @cached_property
    def fins(self) -> FinTimes:
        """The streams with a FIN (without RST) from either side, and when each side sent its
        first: a flood's millions of streams with none have no entry, where one per stream
        and side was 48 MB and three rules' passes over it (`first_fin_ns` makes that array
        for a caller that needs it)."""
        t = self.table
        fm = (t["flags"] & (FIN | RST)) == FIN
        stream = self.stream[fm]
        sids = unique_sorted(stream)
        ns = np.full((len(sids), 2), NO_FIN, np.int64)
        np.minimum.at(ns, (np.searchsorted(sids, stream), self.side[fm]), t["ts_ns"][fm])
        return FinTimes(sids, ns)

    @cached_property
    def first_fin_ns(self) -> npt.NDArray[np.int64]:
        """Per stream and side: capture time of the first FIN (NO_FIN where none)."""
        out = np.full((self.nstreams, 2), NO_FIN, np.int64)
        out[self.fins.sids] = self.fins.ns
        return out

    def compact_addresses(self) -> bool:
        """Replace the table's address and port columns by one value per stream and
        direction (`StreamColumn`), when every row agrees with its stream's (a stream is one
        4-tuple; checked, not assumed): 36 bytes a packet become 36 a connection, and
        indexing them gives the same values. For a table the capture owns (the engine's slim
        copy); True when they were replaced."""
        t, n = self.table, len(self.table)
        if not n or any(isinstance(t.cols[k], StreamColumn) for k in ADDRESS_COLUMNS):
            return False
        if not compact_pays(self.nstreams, n):
            return False
        pdir = self._streams["dir"]
        first = self.order[self.starts]
        fwd = pdir[first] == 0
        # per stream: the endpoint its dir-0 rows come from (a) and go to (b)
        ends = {}
        for a, b in (("src_hi", "dst_hi"), ("src_lo", "dst_lo"), ("sport", "dport")):
            ends[a] = np.where(fwd, t[a][first], t[b][first])
            ends[b] = np.where(fwd, t[b][first], t[a][first])
        cols = {
            k: StreamColumn(ends[k], ends[PEER[k]], self.stream, pdir, t[k].dtype)
            for k in ADDRESS_COLUMNS
        }
        for lo in range(0, n, TRACK_CHUNK):
            sl = slice(lo, min(n, lo + TRACK_CHUNK))
            st, back = self.stream[sl], pdir[sl] != 0
            for k, c in cols.items():
                if not np.array_equal(np.where(back, c.rev[st], c.fwd[st]), t[k][sl]):
                    return False
        # indexed as the arrays were wherever a table is read (not an ndarray for the typing)
        t.cols.update(cast(dict[str, npt.NDArray[Any]], cols))
        return True

    @cached_property
    def endpoints(self) -> Endpoints:
        """Per stream: the client's and the server's address and the server's port, from the
        stream's first packet and the side that packet came from (read-only arrays).

        A column with one value for every stream (the high half of every IPv4 address) is
        that value broadcast, no memory per stream: these are kept for the whole diagnosis,
        and a flood's 3 million streams made each column 24 MB."""
        t = self.table
        first = self.order[self.starts]
        if not any(isinstance(t.cols[k], StreamColumn) for k in ADDRESS_COLUMNS):
            # compiled passes over the streams: which columns vary, then those columns
            # (five numpy gathers and selections per column, each a temporary of every
            # stream, were 0.35 s of a 3 M-SYN flood's `analyze`)
            args = (
                np.ascontiguousarray(first, np.int64),
                np.ascontiguousarray(self.side, np.int8),
                CLIENT,
                t.endpoints(),
            )
            n = len(first)
            bits = kernels.varying_endpoints(*args)
            got: list[npt.NDArray[Any]] = [
                np.empty(n if bits >> i & 1 else min(n, 1), np.int64 if i == 4 else np.uint64)
                for i in range(5)
            ]
            kernels.stream_endpoints(*args, *got)
            for v in got:
                v.flags.writeable = False
            return Endpoints(*(v if len(v) == n else np.broadcast_to(v, (n,)) for v in got))
        from_client = self.side[first] == CLIENT

        def pick(a: str, b: str, dtype: type[np.generic]) -> npt.NDArray[Any]:
            return _held(np.where(from_client, t[a][first], t[b][first]).astype(dtype, copy=False))

        return Endpoints(
            pick("src_hi", "dst_hi", np.uint64),
            pick("src_lo", "dst_lo", np.uint64),
            pick("dst_hi", "src_hi", np.uint64),
            pick("dst_lo", "src_lo", np.uint64),
            pick("dport", "sport", np.int64),
        )

    @cached_property
    def _analysis_bits(self) -> npt.NDArray[np.uint32]:
        """Wireshark's TCP analysis flags of every row as bits (`tcpwhy.tcp.analysis.FLAGS`),
        computed on first use (or ahead, `analyse_ahead`); only the bits are kept (the RTT
        and duplicate-ACK columns, six times their size, are not read by any rule)."""
        ahead, self._bits_ahead = getattr(self, "_bits_ahead", None), None
        if ahead is not None:
            return ahead.result()
        if not len(self.table):
            return np.zeros(0, np.uint32)
        return _analysis_bits(*self._bit_inputs())

    def _bit_inputs(
        self,
    ) -> tuple[
        dict[str, npt.NDArray[Any]],
        dict[str, npt.NDArray[Any]],
        npt.NDArray[np.int32],
        npt.NDArray[np.int64],
    ]:
        """What `_analysis_bits` reads, taken out of the capture: a thread working on them
        meets no attribute or dict the caller changes meanwhile (`compact_addresses`). The
        tracker columns only the analysis reads leave the capture with them, to be freed
        once it is done (8 MB at 4 M packets, at the rules' peak)."""
        cols = {k: self.table.cols[k] for k in ANALYSIS_COLUMNS}
        st = self._streams
        streams = {k: st.pop(k) if k in _ANALYSIS_ONLY else st[k] for k in ANALYSIS_STREAM_COLUMNS}
        return cols, streams, self.stream_conv, self.stream

    def rel_seq(self, rows: npt.NDArray[Any]) -> npt.NDArray[np.uint32]:
        """Rows' sequence numbers relative to their direction's base (Wireshark's tcp.seq,
        `tcpwhy.tcp.streams`)."""
        base = self._seq_base[self.stream[rows], self._pdir[rows]]
        return cast(npt.NDArray[np.uint32], self.table["seq"][rows] - base)

    def rel_ack(self, rows: npt.NDArray[Any]) -> npt.NDArray[np.uint32]:
        """Rows' acknowledgement numbers relative to the other direction's base, 0 on a
        segment without ACK (Wireshark's tcp.ack)."""
        base = self._seq_base[self.stream[rows], 1 - self._pdir[rows]]
        got = self.table["ack"][rows] - base
        return cast(
            npt.NDArray[np.uint32], np.where((self.table["flags"][rows] & ACK) != 0, got, 0)
        )

    def in_order(self, name: str) -> npt.NDArray[Any]:
        """Column `name` (a `Conn` column: `side`, `flags`, `plen`, ...) in stream order
        (`order`), so that stream s's values are the slice ``[starts[s]:ends[s]]``. Made on
        first use and kept: the rules that read a column for every stream (refused
        connections, TIME_WAIT reuse) and long connections' views (`IN_ORDER_FROM`) share
        one gather. Not to be written to."""
        got = self._in_order.get(name)
        if got is None:
            got = self._in_order[name] = _column(self, name, self.order)
        return got

    def first_rows(self, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.signedinteger[Any]]:
        """Per stream, the first row (capture order) where `mask` holds, else -1
        (`arrays.first_where`)."""
        return first_where(mask, self.stream, self.nstreams)

    def flag(self, name: str) -> npt.NDArray[np.bool_]:
        """Per row: one of Wireshark's analysis flags (`tcpwhy.tcp.analysis.FLAGS`), e.g.
        `keep_alive` (0/1-byte segments at next seq - 1, also how Linux sends zero-window
        probes) or `zero_window`."""
        # made at each call, not kept: a few rules ask, once each, and a mask kept per flag
        # was a byte a packet each (25 MB at 4 M packets); a connection's own rows are read
        # from the bits (`Conn.flag`)
        return (self._analysis_bits & (1 << ANALYSIS_FLAGS.index(name))) != 0

    def conn(self, sid: int) -> Conn:
        """The `Conn` view of a stream. The views used last are kept, up to CONN_CACHE_ROWS
        packets in all: a rule that looks at many long connections does not keep every
        one's lists alive."""
        c = self._conns.pop(sid, None)
        if c is None:
            c = Conn(self, sid)
            self._conn_rows += c.n
        self._conns[sid] = c
        while self._conn_rows > CONN_CACHE_ROWS and len(self._conns) > 1:
            old = self._conns.pop(next(iter(self._conns)))
            self._conn_rows -= old.n
        return c

    def conns_where(self, mask: npt.NDArray[np.bool_]) -> Iterator[Conn]:
        """The connections of the streams where `mask` (one value per stream) holds."""
        sids = np.flatnonzero(mask)
        for i, sid in enumerate(sids.tolist()):
            self._plan = (sids, i)  # (set at each one: a loop inside this one sets its own)
            yield self.conn(sid)
        self._plan = None

    def run_states(
        self, rows: npt.NDArray[Any], frames: npt.NDArray[Any], bounds: npt.NDArray[Any]
    ) -> Timelines:
        """The compiled state machine over `rows` of the table, connection by connection
        (``bounds``: where each one's rows start, and the end), each step named by the
        `frames` value of its packet, timers due by the capture's end fired. The ICMP
        errors about them run among their rows (`tcpwhy.tcp.state.with_icmp_rows`); their
        steps have no packet of the connection to be named by, so they are named
        `NO_FRAME` and placed by time (`Conn.state_after`)."""
        t = self.table
        cols: tuple[npt.NDArray[Any], ...] = (
            self.side[rows],
            t["flags"][rows],
            t["seq"][rows],
            t["ack"][rows],
            t["payload_len"][rows],
            t["ts_ns"][rows],
            np.asarray(frames),
        )
        errors = self._icmp_errors(rows, bounds)
        if errors is not None:
            cols, bounds = with_icmp_rows(bounds, rows, cols, errors)
        d, fl, sq, ak, pl, ts, fr = cols
        return run_connections(d, fl, sq, ak, pl, ts, fr, bounds, end_ns=self.end_ns)

    def _icmp_errors(
        self, rows: npt.NDArray[Any], bounds: npt.NDArray[Any]
    ) -> IcmpErrorRows | None:
        """The ICMP errors (not "too big") about the connections of `run_states`, keyed by
        the table row each came before; None when there are none (nearly always)."""
        ic = self.icmp
        if not len(ic.err_streams) or ic.table is None:
            return None
        b = np.asarray(bounds, np.int64)
        has = b[1:] > b[:-1]
        conn = np.flatnonzero(has)
        sids = self.stream[np.asarray(rows)[b[:-1][has]]]
        if not len(sids):
            return None
        err = ic.err_rows
        at, mine = positions(sids, ic.sid[err])
        err, at = err[mine], at[mine]
        if not len(err):
            return None
        return IcmpErrorRows(
            conn[at],
            ic.table["icmp_at"][err].astype(np.int64),
            ic.side[err].astype(np.uint8),
            ic.table["ts_ns"][err],
            np.full(len(err), NO_FRAME, np.uint64),
        )

    def timeline_of(self, sid: int) -> _Timeline:
        """Stream `sid`'s steps through both endpoints' states (`Conn.states`). Asked for
        the stream `conns_where` is at, the ones it comes to next are worked out in the same
        compiled call, STATES_BATCH_ROWS packets at most: a rule that asks each of its
        candidates' states (a capture of long flows: 3,000) called the state machine once
        per connection, 0.3 s of calls for 0.05 s of work."""
        got = self._timelines.pop(sid, None)
        if got is not None:
            return got
        self._timelines.clear()
        sids = np.array([sid], np.intp)
        if self._plan is not None and int(self._plan[0][self._plan[1]]) == sid:
            ahead = self._plan[0][self._plan[1] + 1 :]
            room = STATES_BATCH_ROWS - int(self.ends[sid] - self.starts[sid])
            fits = np.searchsorted(np.cumsum(self.ends[ahead] - self.starts[ahead]), room, "right")
            sids = np.concatenate([sids, ahead[:fits]])
        lo, hi = self.starts[sids], self.ends[sids]
        bounds = np.concatenate([[0], np.cumsum(hi - lo)])
        own = np.repeat(bounds[:-1], hi - lo)  # each row's connection's first place
        at = np.arange(int(bounds[-1]))
        rows = self.order[np.repeat(lo - bounds[:-1], hi - lo) + at]
        # local positions as "frames", so steps map back to a Conn's rows
        tl = self.run_states(rows, at - own + 1, bounds)
        step = tl.offsets.tolist()
        side, state, ts = tl.side.tolist(), tl.state.tolist(), tl.ts_ns.tolist()
        frame, event, final = tl.frame.tolist(), tl.event.tolist(), tl.final.tolist()
        for j, s in enumerate(sids.tolist()):
            a, b = step[j], step[j + 1]
            self._timelines[s] = _Timeline(
                side[a:b], state[a:b], ts[a:b], frame[a:b], event[a:b], (final[j][0], final[j][1])
            )
        return self._timelines.pop(sid)

    @property
    def numbers_are_ids(self) -> bool:
        """Each stream's tcp.stream number is its id (no display filter renumbered them):
        the numbers ascend without repeats, so from 0 to nstreams - 1 they are 0, 1, 2 ..."""
        sn = self.stream_numbers
        return len(sn) == self.nstreams and (
            not len(sn) or (int(sn[0]) == 0 and int(sn[-1]) == len(sn) - 1)
        )

    @cached_property
    def has_rst(self) -> npt.NDArray[np.bool_]:
        """Per stream: a RST from either side (made once: several rules ask, and a sum
        across the two sides of 3 million streams took numpy 60 ms each time)."""
        return (self.n_rst[:, 0] > 0) | (self.n_rst[:, 1] > 0)

    def closes_first(self, who: int) -> npt.NDArray[np.bool_]:
        """Per stream: `who` sent a FIN before the peer did (or the peer sent none)."""
        f = self.fins
        return f.per_stream(self.nstreams, f.ns[:, who] < f.ns[:, 1 - who])

    def ts_of(self, row: int) -> int:
        return int(self.table["ts_ns"][row])

    def file_name(self, row: int) -> str:
        return self.files[int(self.file_of_row[row])] if self.files else ""

    def ending_index(self) -> npt.NDArray[np.int8]:
        """Per stream: its index in `ENDING_WORDS` (one category per connection); the text
        report's tally and the HTML report's connection table both read it, so they agree."""
        syn_c = self.n_syn[:, CLIENT] > 0
        answered = (self.n_synack[:, SERVER] > 0) | (self.n_pkts[:, SERVER] > 0)
        rst = self.has_rst
        refused = syn_c & (self.n_synack[:, SERVER] == 0) & (self.n_rst[:, SERVER] > 0)
        # nothing came back and the client sent nothing but SYNs (a client that goes on
        # talking got an answer the capture missed: a one-way capture)
        no_answer = syn_c & ~answered & (self.n_pkts[:, CLIENT] == self.n_syn[:, CLIENT])
        fins = (self.n_fin[:, 0] > 0).view(np.int8) + (self.n_fin[:, 1] > 0).view(np.int8)
        # an ICMP error ended the connect(): the path or the host answered instead of the peer
        icmp = self.icmp.syn_err & (self.n_synack[:, SERVER] == 0) & ~refused
        # who reset: the side whose RST the capture saw first (as conns names the resetter),
        # worked out for the streams with a RST only (not two times for every stream)
        t = self.table
        rm = np.flatnonzero((t["flags"] & RST) != 0) if len(t) else np.zeros(0, np.int64)
        reset, at = np.unique(self.stream[rm], return_inverse=True)
        first_rst = np.full((len(reset), 2), NO_FIN, np.int64)
        np.minimum.at(first_rst, (at, self.side[rm]), t["ts_ns"][rm])
        by_client = np.zeros(self.nstreams, np.bool_)
        by_client[reset] = first_rst[:, CLIENT] <= first_rst[:, SERVER]
        return ending_codes(rst, refused, no_answer, fins, icmp, by_client)

    def endings(self, keep: npt.NDArray[np.bool_] | None = None) -> dict[str, int]:
        """Connections by how they ended (vectorised over the per-stream counts); with `keep`,
        only those streams (a connection already counted at another capture point is not)."""
        if not self.nstreams:
            return {}
        idx = self.ending_index()
        if keep is not None:
            idx = idx[keep]
        # one count per category: a bincount widens the codes to 64 bits first (a flood's
        # 3 million streams: 24 MB at the end of `analyze`, where its peak was)
        n = [int(np.count_nonzero(idx == k)) for k in range(len(ENDING_WORDS))]
        return {w: n[k] for k, w in enumerate(ENDING_WORDS) if n[k]}


def ending_codes(
    rst: npt.NDArray[np.bool_],
    refused: npt.NDArray[np.bool_],
    no_answer: npt.NDArray[np.bool_],
    fins: npt.NDArray[np.integer[Any]],
    icmp: npt.NDArray[np.bool_],
    by_client: npt.NDArray[np.bool_],
) -> npt.NDArray[np.int8]:
    """Per stream, its index in `ENDING_WORDS` from what `Capture.ending_index` found (a RST,
    refused, no answer, FINs seen, an ICMP error, a reset from the client first): later
    lines win."""
    out = np.full(len(rst), 7, np.int8)  # open at capture end
    out[~rst & ~no_answer & (fins == 1)] = 6
    out[~rst & ~no_answer & (fins == 2)] = 5
    out[rst & ~refused] = 4
    out[rst & ~refused & by_client] = 3
    out[no_answer & ~rst & ~icmp] = 2
    out[icmp] = 1
    out[refused] = 0
    return out


def _column(cap: Capture, name: str, rows: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A `Conn` column's values at `rows` (the capture's): `side`, the scaled window `win`,
    the relative `rseq` and `rack`, else a table column (`_LIST_COLUMNS`)."""
    if name == "side":
        return cap.side[rows]
    if name == "win":
        return cap.win_scaled[rows]
    if name == "rseq":
        return cap.rel_seq(rows)
    if name == "rack":
        return cap.rel_ack(rows)
    return cap.table[_LIST_COLUMNS[name]][rows]


def _column_list(name: str) -> cached_property[list[int]]:
    """A `Conn` property: column `name` of its packets (`_column`) as a list, made on first
    use."""

    def values(conn: Conn) -> list[int]:
        got: list[int] = _column(conn.cap, name, conn.rows).tolist()
        return got

    return cached_property(values)


class Conn:
    """One connection's packets in capture order, seen from the client (originator) side."""

    def __init__(self, cap: Capture, sid: int) -> None:
        self.cap = cap
        self.sid = sid
        self.no = int(cap.stream_numbers[sid])  # the tcp.stream number shown to the user
        r = cap.order[cap.starts[sid] : cap.ends[sid]]
        self.rows = r
        self.n = len(r)
        self.cache: dict[str, Any] = {}

    # the endpoints as text, made on first use: most views a rule builds are looked at
    # with numpy and dropped, and formatting addresses cost more than the rest of a view
    @cached_property
    def _ends(self) -> tuple[str, str]:
        t = self.cap.table
        first = int(self.rows[0])
        src = format_endpoint(t["src_hi"][first], t["src_lo"][first], t["sport"][first])
        dst = format_endpoint(t["dst_hi"][first], t["dst_lo"][first], t["dport"][first])
        return (src, dst) if self.cap.side[first] == CLIENT else (dst, src)

    @cached_property
    def client(self) -> str:
        """`address:port` of the side that called connect()."""
        return self._ends[0]

    @cached_property
    def server_addr(self) -> str:
        return self._ends[1]

    @cached_property
    def server_ip(self) -> str:
        """The server's address alone, as an ICMP error's sender is written (an IPv6
        address without the brackets it takes beside a port)."""
        return self.server_addr.rsplit(":", 1)[0].strip("[]")

    @cached_property
    def client_ip(self) -> str:
        """The client's address alone (see `server_ip`)."""
        return self.client.rsplit(":", 1)[0].strip("[]")

    @cached_property
    def on_one_host(self) -> bool:
        """Both ends on one host (one address, or loopback ones): no path between them, so
        nothing on a path (a middlebox, a link's MTU) can have touched their packets, and
        their timing is the scheduler's, not a network's."""
        import ipaddress

        a, b = ipaddress.ip_address(self.client_ip), ipaddress.ip_address(self.server_ip)
        return a == b or (a.is_loopback and b.is_loopback)

    @cached_property
    def server(self) -> str:
        """The server as findings name it: `api.example (10.0.0.2:443)` when its connections
        name it (TLS SNI, HTTP Host; `tcpwhy.diagnose.tls.server_label`), else its address."""
        from tcpwhy.diagnose.tls import server_label

        return server_label(self.cap, self.sid, self.server_addr)

    # the packet columns as lists, each made on first use: a long connection's lists are
    # big, and a rule that only looks for its first RST (numpy) needs none of them
    side = _column_list("side")
    ts = _column_list("ts")
    flags = _column_list("flags")
    seq = _column_list("seq")
    ack = _column_list("ack")
    plen = _column_list("plen")
    win = _column_list("win")
    frame = _column_list("frame")
    ttl = _column_list("ttl")
    rseq = _column_list("rseq")
    rack = _column_list("rack")

    def at(self, name: str, i: int) -> int:
        """One local row's value of a column list (`side`, `ts`, `flags`, `seq`, `ack`,
        `plen`, `ttl`, `frame`): from the list when it was made, else read from the table,
        so that looking at a few rows of a long connection does not make its whole list."""
        got: list[int] | None = self.__dict__.get(name)
        if got is not None:
            return got[i]
        return int(_column(self.cap, name, self.rows[i : i + 1])[0])

    # -- simple facts ---------------------------------------------------------------
    def idx(self, who: int, mask: int = 0, data: bool = False) -> list[int]:
        """Local indices of `who`'s packets carrying all `mask` bits (and data, if asked)."""
        return [
            i
            for i in range(self.n)
            if self.side[i] == who
            and (self.flags[i] & mask) == mask
            and (not data or (self.plen[i] > 0 and not self.flags[i] & RST))
        ]

    def n_server_data(self) -> int:
        return sum(1 for i in range(self.n) if self.side[i] == SERVER and self.plen[i] > 0)

    def n_synack_server(self) -> int:
        return sum(
            1
            for i in range(self.n)
            if self.side[i] == SERVER and (self.flags[i] & (SYN | ACK | RST)) == (SYN | ACK)
        )

    def is_rst(self, i: int) -> bool:
        return bool(self.flags[i] & RST)

    def is_fin(self, i: int) -> bool:
        return bool(self.flags[i] & FIN) and not self.flags[i] & RST

    def fin_end(self, i: int) -> int:
        """Sequence number just past the FIN sent at i."""
        return seq_add(self.seq[i], self.plen[i] + (1 if self.flags[i] & SYN else 0) + 1)

    def acks(self, i: int, seq_end: int) -> bool:
        return bool(self.flags[i] & ACK) and seq_geq(self.ack[i], seq_end)

    def _np_column(self, name: str) -> npt.NDArray[Any]:
        """Column `name` (`_column`) of the connection's packets: a long connection's is a
        view of the capture's stream-ordered copy (`IN_ORDER_FROM`), not to be written to."""
        if self.n >= IN_ORDER_FROM:
            cap = self.cap
            return cap.in_order(name)[cap.starts[self.sid] : cap.ends[self.sid]]
        return _column(self.cap, name, self.rows)

    @cached_property
    def _np_flags(self) -> npt.NDArray[np.int64]:
        return self._np_column("flags").astype(np.int64)

    @cached_property
    def _np_side(self) -> npt.NDArray[np.int8]:
        return self._np_column("side")

    def _first(self, m: npt.NDArray[np.bool_]) -> int | None:
        idx = np.flatnonzero(m)
        return int(idx[0]) if len(idx) else None

    def fin_rows(self, who: int) -> list[int]:
        """`who`'s FINs (not RSTs), local rows, by numpy: long connections are scanned often."""
        got: list[int] = np.flatnonzero(self._fin_mask(who)).tolist()
        return got

    def first_fin(self, who: int) -> int | None:
        """`who`'s first FIN (not a RST)."""
        return self._first(self._fin_mask(who))

    def _fin_mask(self, who: int) -> npt.NDArray[np.bool_]:
        return (self._np_side == who) & ((self._np_flags & (FIN | RST)) == FIN)

    def next_from(self, who: int, start: int, stop: int | None = None) -> int | None:
        """`who`'s first packet at or after local row `start` (and before `stop`)."""
        for j in range(start, self.n if stop is None else stop):
            if self.side[j] == who:
                return j
        return None

    def next_rst(self, who: int, after: int) -> int | None:
        """`who`'s first RST after local row `after`."""
        for j in range(after + 1, self.n):
            if self.side[j] == who and self.is_rst(j):
                return j
        return None

    def fin_acked_by(self, who: int, fin: int, stop: int | None = None) -> int | None:
        """`who`'s first packet after the FIN at `fin` (and before `stop`) acknowledging it."""
        end = self.fin_end(fin)
        for j in range(fin + 1, self.n if stop is None else stop):
            if self.side[j] == who and self.acks(j, end):
                return j
        return None

    def first_rst(self, who: int | None = None) -> int | None:
        m = (self._np_flags & RST) != 0
        return self._first(m if who is None else m & (self._np_side == who))

    def last_data_before(self, i: int, who: int | None = None) -> int | None:
        """The last segment before row i carrying application data: a segment that carries
        only a TLS closing alert (close_notify before a FIN) is the close, not data."""
        from tcpwhy.diagnose.tls import closing_rows

        if i <= 0:
            return None
        skip = closing_rows(self)
        m = self._np_data[:i] if who is None else self._np_data[:i] & (self._np_side[:i] == who)
        idx = np.flatnonzero(m)
        if not skip:  # the last one (not a list of every data row of a long connection)
            return int(idx[-1]) if len(idx) else None
        for j in idx[::-1].tolist():
            if j not in skip:
                return int(j)
        return None

    @cached_property
    def _np_rseq(self) -> npt.NDArray[np.int64]:
        """Per local row: the relative sequence number (`Capture.rel_seq`)."""
        return self.cap.rel_seq(self.rows).astype(np.int64)

    @cached_property
    def _np_rack(self) -> npt.NDArray[np.int64]:
        """Per local row: the relative acknowledgement number, 0 without ACK (`rel_ack`)."""
        return self.cap.rel_ack(self.rows).astype(np.int64)

    @cached_property
    def _np_plen(self) -> npt.NDArray[np.int64]:
        return self._np_column("plen").astype(np.int64)

    @cached_property
    def _np_data(self) -> npt.NDArray[np.bool_]:
        """Per local row: carries data and no RST."""
        return (self._np_plen > 0) & ((self._np_flags & RST) == 0)

    def s(self, i: int) -> float:
        """Seconds since the connection's first packet."""
        return (self.at("ts", i) - self.at("ts", 0)) / 1e9

    def dt(self, i: int, j: int) -> float:
        return (self.at("ts", j) - self.at("ts", i)) / 1e9

    @cached_property
    def rtt(self) -> float | None:
        """Handshake round trip (SYN → the client's ACK of the SYN-ACK), seconds.

        Not Wireshark's `initial_rtt`: that one is also set without a SYN-ACK (a SYN
        answered by RST, a one-way capture), where the rules want no round trip at all.
        By numpy: a connection whose capture starts after its handshake is otherwise
        walked to its end for nothing.
        """
        syn, synack, client = self._handshake_rows
        if not len(syn) or not len(synack):
            return None
        # the client's first packet other than a SYN after both a SYN and a SYN-ACK; the
        # round trip runs from the client's last SYN before it
        after = client[client > max(int(syn[0]), int(synack[0]))]
        if not len(after):
            return None
        i = int(after[0])
        return max(self.dt(int(syn[syn < i][-1]), i), 1e-6)

    def rtt_to(self, who: int) -> float | None:
        """Round trip from the capture point to `who` and back, from the handshake: SYN →
        SYN-ACK for the server, SYN-ACK → the client's next packet for the client."""
        syn, synack, client = self._handshake_rows
        if not len(synack):
            return None
        k = int(synack[0])
        if who == SERVER:
            before = syn[syn < k]
            return self.dt(int(before[-1]), k) if len(before) else None
        after = client[client > k]
        if not len(after):
            return None
        i = int(after[0])
        return self.dt(int(synack[synack < i][-1]), i)

    @cached_property
    def _handshake_rows(
        self,
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """Local rows without RST of the client's SYNs, the server's SYN-ACKs and the client's
        other packets: what `rtt` and `rtt_to` walk through."""
        f = self._np_flags
        side = self._np_side
        plain = (f & RST) == 0
        sa = f & (SYN | ACK)
        syn = plain & (side == CLIENT) & (sa == SYN)
        synack = plain & (side == SERVER) & (sa == (SYN | ACK))
        client = plain & (side == CLIENT) & (sa != SYN)
        return np.flatnonzero(syn), np.flatnonzero(synack), np.flatnonzero(client)

    @cached_property
    def states(self) -> States:
        """Both endpoints' timelines, from the compiled state machine (`run_connection`'s
        twin), for this connection and the next ones a rule goes through
        (`Capture.timeline_of`)."""
        tl = self.cap.timeline_of(self.sid)
        sides = tl.side
        steps = [
            StateStep(State(s), ts, f, Event(e) if e >= 0 else None)
            for s, ts, f, e in zip(tl.state, tl.ts_ns, tl.frame, tl.event, strict=True)
        ]
        ends = (State(tl.final[0]), State(tl.final[1]))
        return States(
            *(
                SideStates([x for x, w in zip(steps, sides, strict=True) if w == k], ends[k])
                for k in (0, 1)
            )
        )

    def state_after(self, who: int, i: int, at_ns: int | None = None) -> State:
        """`who`'s state after local row `i`, and after the steps no row of the connection
        caused (a timer, an ICMP error) up to `at_ns` (row `i`'s time unless given)."""
        ep = self.states.originator if who == CLIENT else self.states.responder
        st = ep.timeline[0].state
        ts = self.at("ts", i) if at_ns is None else at_ns
        for step in ep.timeline:
            if step.frame and step.frame - 1 > i:
                break
            if not step.frame and step.ts_ns > ts:
                break
            st = step.state
        return st

    def state_label(self, who: int, state: State) -> str:
        """`state` as a person reads it for `who` (`tcpwhy.tcp.state.state_label`)."""
        ep = self.states.originator if who == CLIENT else self.states.responder
        sent = bool(self.cap.n_pkts[self.sid, who])
        return state_label(state, [s.state for s in ep.timeline], sent)

    def final_state(self, who: int) -> State:
        ep = self.states.originator if who == CLIENT else self.states.responder
        return ep.state

    def entered(self, who: int, state: State) -> list[int]:
        """Local rows at which `who` entered `state`."""
        ep = self.states.originator if who == CLIENT else self.states.responder
        return [s.frame - 1 for s in ep.timeline if s.state is state and s.frame]

    def describe(self, i: int) -> str:
        """One packet in words; its values read one by one (`at`), so that explaining a row
        of a long connection does not make its lists."""
        f = self.at("flags", i)
        txt = f"{flag_text(f)} seq={self.at('rseq', i)}"
        if f & ACK:
            txt += f" ack={self.at('rack', i)}"
        txt += f" len={self.at('plen', i)}"
        if not f & (SYN | RST) and self.at("win", i) == 0:
            txt += " win=0"
        return txt

    def step(self, i: int, note: str) -> Step:
        row = int(self.rows[i])
        return Step(
            ts_ns=self.at("ts", i),
            rel_s=round(self.s(i), 6),
            frame=self.at("frame", i),
            file=self.cap.file_name(row),
            stream=self.no,
            sender=WHO[self.at("side", i)],
            packet=self.describe(i),
            note=note,
            client_state=self.state_label(CLIENT, self.state_after(CLIENT, i)),
            server_state=self.state_label(SERVER, self.state_after(SERVER, i)),
        )

    def flag(self, name: str) -> list[bool]:
        """Per local row: one of Wireshark's analysis flags (see `Capture.flag`)."""
        got: list[bool] | None = self.cache.get(name)
        if got is None:
            bit = 1 << ANALYSIS_FLAGS.index(name)
            got = self.cache[name] = ((self.cap._analysis_bits[self.rows] & bit) != 0).tolist()
        return got

    def payload(self, i: int, limit: int = 2048) -> bytes:
        return self.cap.table.payload(int(self.rows[i]), limit)

    def label(self) -> str:
        return f"stream {self.no} ({self.client} → {self.server})"


_LIST_COLUMNS = {
    "ts": "ts_ns",
    "flags": "flags",
    "seq": "seq",
    "ack": "ack",
    "plen": "payload_len",
    "ttl": "ip_ttl",
    "frame": "frame",
}
"""`Conn.at`'s names of the table's columns."""

COMPACT_RATIO = 4
"""`Capture.compact_addresses` pays when a connection has this many packets on average."""


def compact_pays(streams: int, rows: int) -> bool:
    """Whether addresses held per stream pay for `rows` packets of `streams` streams: not for
    a flood's or a scan's streams of a packet or two, where per stream is no smaller and every
    read over millions of rows would gather through the streams."""
    return streams * COMPACT_RATIO <= rows


ADDRESS_COLUMNS = ("src_hi", "src_lo", "sport", "dst_hi", "dst_lo", "dport")
PEER = {"src_hi": "dst_hi", "src_lo": "dst_lo", "sport": "dport"}
PEER.update({v: k for k, v in PEER.items()})


class StreamColumn:
    """A packet column whose value is set by the row's stream and direction (an address or
    a port): `fwd[stream]` on the stream's dir-0 rows, `rev[stream]` on its dir-1 rows.
    Indexed like the array it replaces (a row, a slice, a mask, rows), with the same dtype;
    `numpy.asarray` makes the whole column."""

    def __init__(
        self,
        fwd: npt.NDArray[Any],
        rev: npt.NDArray[Any],
        stream: npt.NDArray[np.int64],
        direction: npt.NDArray[np.int8],
        dtype: np.dtype[Any],
    ) -> None:
        self.fwd = fwd.astype(dtype, copy=False)
        self.rev = rev.astype(dtype, copy=False)
        self.stream = stream
        self.direction = direction
        self.dtype = dtype
        self.shape = stream.shape
        self.ndim = 1

    def __len__(self) -> int:
        return int(self.stream.shape[0])

    def __getitem__(self, idx: Any) -> Any:
        s = self.stream[idx]
        d = self.direction[idx]
        if np.ndim(s) == 0:
            return self.rev[s] if d else self.fwd[s]
        return np.where(d == 0, self.fwd[s], self.rev[s])

    def __array__(self, dtype: Any = None, copy: Any = None) -> npt.NDArray[Any]:
        got = self[:]
        return got if dtype is None else got.astype(dtype)

    @property
    def nbytes(self) -> int:
        return int(self.fwd.nbytes + self.rev.nbytes)

    def astype(self, dtype: Any) -> npt.NDArray[Any]:
        return np.asarray(self).astype(dtype)

    def copy(self) -> npt.NDArray[Any]:
        return np.asarray(self)


ANALYSIS_COLUMNS = ("frame", "ts_ns", "flags", "seq", "ack", "payload_len", "win")
"""The packet columns `tcpwhy.tcp.analysis` reads."""

ANALYSIS_STREAM_COLUMNS = ("dir", "rev_ws", "reused", "new")
"""The stream tracker's columns `tcpwhy.tcp.analysis` reads (besides its conversation)."""

_ANALYSIS_ONLY = ("rev_ws", "new")

TRACK_CHUNK = 1 << 18
"""Rows fed to the stream tracker at a time: it reserves room for one new conversation per
row it is given, which for a whole capture at once is gigabytes of hash table."""


NARROW_STREAM_COLUMNS = {"conv": np.int32, "win_scaled": np.int32}
"""Tracker columns a capture keeps narrower than the tracker makes them: a conversation
slot and a scaled window (65535 << 14 at most) fit in 32 bits; 8 bytes a packet."""


def narrow_streams(got: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """A chunk's `StreamTracker` columns as a `Capture` keeps them (NARROW_STREAM_COLUMNS)."""
    for k, dt in NARROW_STREAM_COLUMNS.items():
        if k in got:
            got[k] = got[k].astype(dt)
    return got


def _track_streams(table: PacketTable) -> dict[str, npt.NDArray[Any]]:
    """`StreamTracker().feed(table)`, fed chunk by chunk (the same rows out: the tracker
    carries its state from one chunk to the next and forgets nothing on its own)."""
    tracker = StreamTracker()
    n = len(table)
    out: dict[str, npt.NDArray[Any]] = {}
    icmp: list[dict[str, npt.NDArray[Any]]] = []  # the ICMP rows' stream and dir, in order
    for lo in range(0, n, TRACK_CHUNK):
        hi = min(n, lo + TRACK_CHUNK)
        got = narrow_streams(tracker.feed(table.between(lo, hi)))
        if tracker.icmp_out is not None:
            icmp.append(tracker.icmp_out)
        if not out:
            out = {k: np.empty((n, *v.shape[1:]), v.dtype) for k, v in got.items()}
        for k, v in got.items():
            out[k][lo:hi] = v
    if icmp:
        out["icmp_stream"] = np.concatenate([x["stream"] for x in icmp])
        out["icmp_dir"] = np.concatenate([x["dir"] for x in icmp])
    return out


def streams_where(mask: npt.NDArray[np.bool_]) -> list[int]:
    return [int(s) for s in np.flatnonzero(mask)]


def _analysis_bits(
    cols: dict[str, npt.NDArray[Any]],
    streams: dict[str, npt.NDArray[Any]],
    sconv: npt.NDArray[np.int32],
    stream: npt.NDArray[np.int64],
) -> npt.NDArray[np.uint32]:
    """`Capture._analysis_bits` of the columns `Capture._bit_inputs` takes out."""
    n = len(stream)
    bits = np.zeros(n, np.uint32)
    if not n:
        return bits
    # The rules read flags only of segments without SYN or RST (keep-alives, zero
    # windows, resent data), so conversations that have none (a flood's millions of
    # lone SYNs) are left out; conversations are analysed independently of each other.
    flags = cols["flags"]
    wanted = np.zeros(int(sconv.max()) + 1, np.bool_)
    for lo in range(0, n, TRACK_CHUNK):
        plain = (flags[lo : lo + TRACK_CHUNK] & (SYN | RST)) == 0
        wanted[sconv[stream[lo : lo + TRACK_CHUNK][plain]]] = True
    del plain
    # the kept conversations numbered again densely: the analyzer's state is per slot,
    # and the slots of a flood's few real connections run into the millions
    slot = (np.cumsum(wanted) - 1).astype(np.int64)
    # the kept rows are gathered a chunk at a time (a copy of every kept row's columns
    # at once was hundreds of MB at the peak of a large capture), and their bits written
    # in place: the analyzer carries its state across chunks, so where they are cut
    # does not matter
    # fed chunk by chunk, as when streaming: its buffers stay small, and are the same ones
    # from chunk to chunk (each chunk's bits are copied out before the next)
    analyzer = Analyzer(reuse=True)
    for lo in range(0, n, TRACK_CHUNK):
        hi = min(n, lo + TRACK_CHUNK)
        conv = sconv[stream[lo:hi]]
        keep = wanted[conv]
        sel: slice | npt.NDArray[np.intp] = (
            slice(lo, hi) if keep.all() else lo + np.flatnonzero(keep)
        )
        part = PacketTable({k: cols[k][sel] for k in ANALYSIS_COLUMNS})
        if not len(part):
            continue
        got = {k: v[sel] for k, v in streams.items()}
        got["conv"] = slot[conv if keep.all() else conv[keep]]
        bits[sel] = analyzer.feed(part, got).bits
    return bits


class _Ahead:
    """`_analysis_bits` worked out on a thread of its own, from the capture's set-up on: the
    analysis is compiled and releases Python's lock, so it runs on the second core while the
    set-up and the rules before the first that asks go on (on 4.3 M packets of short
    connections it took 0.1 s of the rules' 0.8, with the other core idle). A daemon
    thread: an interrupted run does not wait for it."""

    def __init__(self, inputs: tuple[Any, ...]) -> None:
        import threading

        self._done = threading.Event()
        self._got: npt.NDArray[np.uint32] | None = None
        self._error: BaseException | None = None
        threading.Thread(
            target=self._run, args=(inputs,), name="tcpwhy-analysis", daemon=True
        ).start()

    def _run(self, inputs: tuple[Any, ...]) -> None:
        try:
            self._got = _analysis_bits(*inputs)
        except BaseException as exc:  # raised again in the thread that asks (`result`)
            self._error = exc
        finally:
            self._done.set()

    def result(self) -> npt.NDArray[np.uint32]:
        while not self._done.wait(0.5):  # in steps: a Ctrl-C is not held up by the wait
            pass
        if self._error is not None:
            raise self._error
        assert self._got is not None
        return self._got
