"""Connections: the packets of a capture grouped into one record per connection.

A connection is a Wireshark ``tcp.stream`` (the numbers come from
`StreamTracker`), described the way Zeek's conn.log describes it
(`tcpwhy.tcp.zeek`), plus the final RFC 9293 state of each endpoint
(`tcpwhy.tcp.state`) and how it ended, in words.

The builder is fed the capture chunk by chunk and keeps state only for
connections still active: one integer row per connection and, for the
RFC state machine, only the packets that can change a state (SYN, FIN, RST,
the first packets of each side, the ACKs of a FIN). A connection is emitted
and forgotten when it is over -- a new stream on its 4-tuple, Zeek's timers
(``boundaries="zeek"``), a long idle time, the end of the capture -- or
when the number of active connections reaches `max_active`, when the one
idle longest is evicted with a warning.

Two ways to draw boundaries:

* ``"stream"`` (default): one record per tcp.stream. A stream is cut only if
  it went idle past the idle timeouts (or was evicted) and then came back;
  the continuation is a record of its own with ``continued`` set.
* ``"zeek"``: Zeek's own session lifetime -- its close, reset, attempt,
  partial-close, expire and inactivity timers and its 4-tuple reuse check
  -- so one stream may give several records, as in Zeek's conn.log.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import positions, sparse_zeros, unique_inverse
from tcpwhy.decode.table import (
    ACK,
    COLUMNS,
    FIN,
    RST,
    SYN,
    CaptureStats,
    PacketTable,
)
from tcpwhy.tcp import zeek as z
from tcpwhy.tcp.endings import ENDINGS
from tcpwhy.tcp.records import (
    CONN_STATE_WORDS,
    IRTT_UNSET,
    NO_RFC_STATE,
    ConnColumns,
    ConnRecord,
    empty_columns,
)
from tcpwhy.tcp.state import IcmpErrorRows, State, icmp_errors, with_icmp_rows
from tcpwhy.tcp.state_kernel import run_connections
from tcpwhy.tcp.streams import StreamTracker

# Zeek's likely_server_ports with its default scripts loaded (the ports its analyzers
# register; tcp only). Bare mode (-b) loads only what a script names: see `zeek_ports`.
ZEEK_ANALYZER_PORTS: dict[str, tuple[int, ...]] = {
    "ftp": (21, 2811),
    "ssh": (22,),
    "smtp": (25, 587),
    "dns": (53, 5353, 5355),
    "http": (80, 81, 631, 1080, 3128, 8000, 8080, 8888),
    "krb": (88,),
    "pop3": (110,),
    "dce-rpc": (135,),
    "netbios": (139,),
    "ldap": (389, 3268),
    "ssl": (443, 563, 585, 614, 636, 989, 990, 992, 993, 995, 5223),
    "smb": (445,),
    "modbus": (502,),
    "syslog": (514,),
    "mysql": (3306,),
    "rdp": (3389,),
    "postgresql": (5432,),
    "xmpp": (5222, 5269),
    "irc": (6666, 6667, 6668, 6669),
    "redis": (6379,),
    "dnp3": (20000,),
    "socks": (1080,),
    "sip": (5060,),
    "imap": (143,),
    "ntlm": (),
    "radius": (),
    "mqtt": (1883,),
}
DEFAULT_LIKELY_SERVER_PORTS: frozenset[int] = frozenset(
    p for ports in ZEEK_ANALYZER_PORTS.values() for p in ports
)

DEFAULT_MAX_ACTIVE = 500_000
IDLE_TIMEOUT_S = 3600.0
"""Stream mode: a connection with no packet for this long is emitted (and forgotten)."""
CLOSED_IDLE_S = 120.0
"""Stream mode: a connection closed on both sides (or reset) is emitted after this much silence
(2 x Linux's 60 s TIME_WAIT, so retransmitted FINs and their ACKs still land in it)."""

SWEEP_EVERY_NS = 1_000_000_000
"""With Zeek's timers (`--boundaries zeek`), capture time between two sweeps of the
connections that have gone silent; without them a sweep comes when one may be due."""
OUT_ROWS = 4096
RECORD_ROWS = 8192
"""Records per batch, about (a batch is cut once the rows emitted reach this many). The
batches on their way out (building, formatting, text to write) are most of `conns`' memory
on a flood beside the connections open: 8192 against 16384 took 45 MB off a 3 M-SYN
flood's peak (595 to 550 MB) in the same time; 4096 took 8 MB more and a tenth longer."""
PREALLOC_SLOTS = 1 << 20
"""Slots whose rows are reserved (not written) when the pool first grows, at most."""
QUEUE_ROWS = 1 << 16
"""Rows of the attempt-timer ring at the start (a power of two; it grows when half live)."""
FINISH_ROWS = RECORD_ROWS
"""Records per batch written at the end of the capture."""
FORGET_EVERY = 1 << 16
"""Rows of the capture between two moments the stream tracker may forget conversations
(above `max_active` of them): fixed rows, so a capture gives the same stream numbers however
it is cut into chunks (a chunk is at most this many rows)."""
PARK_FROM = 1 << 14
"""Connections open at once from which a new one that starts with a pure SYN is parked
(`tcpwhy.tcp.zeek.P`): a SYN flood's half a million then take 104 bytes each, not a slot's
728. Below it each connection's SYN-ACK would come before parking paid off: parking and
replaying costs a pass more of its first packet."""


def zeek_ports(scripts: Iterable[str]) -> frozenset[int]:
    """Likely server ports for a bare-mode Zeek run that loaded `scripts` (``@load`` lines)."""
    ports: set[int] = set()
    for line in scripts:
        for name, pp in ZEEK_ANALYZER_PORTS.items():
            if f"protocols/{name}" in line:
                ports.update(pp)
    return frozenset(ports)


PacketFlags = Callable[
    [PacketTable, dict[str, npt.NDArray[Any]]], dict[str, npt.NDArray[Any]] | None
]


class WiresharkFlags:
    """Per-packet `retransmission` and `zero_window` flags as Wireshark sets them.

    The counts in the records (`retransmissions`, `zero_windows`) then match
    the packets `tcpwhy packets` marks `[TCP Retransmission]` and
    `[TCP ZeroWindow]` (fast and spurious retransmissions included). The
    analysis keeps its state per conversation slot of the stream tracker, so it
    is bounded as the tracker is.
    """

    def __init__(self) -> None:
        from tcpwhy.tcp.analysis import Analyzer

        self.analyzer = Analyzer(reuse=True)  # its `Analysis` is done with before the next

    def __call__(
        self, table: PacketTable, streams: dict[str, npt.NDArray[Any]]
    ) -> dict[str, npt.NDArray[Any]]:
        from tcpwhy.tcp.analysis import A_RETRANS, A_ZERO_WIN

        bits = self.analyzer.feed(table, streams).bits
        return {"retransmission": (bits & A_RETRANS) != 0, "zero_window": (bits & A_ZERO_WIN) != 0}


def zeek_style_flags(
    table: PacketTable, streams: dict[str, npt.NDArray[Any]]
) -> dict[str, npt.NDArray[Any]] | None:
    """No external flags: the builder counts Zeek-style instead (a payload packet that ends at
    or before the highest sequence number already seen is a retransmission; a window of 0 on
    a packet that is not a RST is a zero-window event)."""
    return None


class _KeptPackets:
    """The packets kept for the RFC state machine, until their connection's record is written.

    One growing set of columns, rows dropped lazily: taking a batch's packets marks their rows
    gone and the columns are compacted only once half of them are. Re-filtering every kept
    row at every batch would cost (connections open) x (batches): on a SYN flood with half a
    million connections open, most of `conns`' time."""

    FIELDS = z.KEPT_FIELDS
    DTYPES: ClassVar[dict[str, Any]] = {
        "uid": np.int64,
        "dir": np.int8,
        "flags": COLUMNS["flags"][0],
        "seq": COLUMNS["seq"][0],
        "ack": COLUMNS["ack"][0],
        "plen": COLUMNS["payload_len"][0],
        "ts": COLUMNS["ts_ns"][0],
        "frame": COLUMNS["frame"][0],
    }
    """Each column's type: the packet table's, as the rows kept straight from it have."""

    def __init__(self) -> None:
        self.cols: dict[str, npt.NDArray[Any]] = {}
        self.alive = np.zeros(0, np.bool_)
        self.scratch = np.zeros(0, np.int64)  # `take`'s row numbers, reused batch after batch
        self.n = 0
        self.dead = 0

    def __bool__(self) -> bool:
        return self.n > self.dead

    def append(self, rows: dict[str, npt.NDArray[Any]]) -> None:
        m = len(rows["uid"])
        if self.n + m > len(self.alive):
            size = max(1024, 2 * (self.n + m))
            for k in self.FIELDS:
                grown = np.empty(size, rows[k].dtype)
                if k in self.cols:
                    grown[: self.n] = self.cols[k][: self.n]
                self.cols[k] = grown
            alive = np.zeros(size, np.bool_)
            alive[: self.n] = self.alive[: self.n]
            self.alive = alive
        for k in self.FIELDS:
            self.cols[k][self.n : self.n + m] = rows[k]
        self.alive[self.n : self.n + m] = True
        self.n += m

    def take(self, uids: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[Any]] | None:
        """The kept rows of the connections `uids`, grouped by connection in the order of
        `uids`, each connection's in the order they were kept, and ``rec``: each row's
        connection, its place in `uids` (the first of equal uids). They are gone from here
        afterwards."""
        if not self or not len(uids):
            return None
        from tcpwhy.tcp.records_kernel import group_kept, kept_rows

        at = np.ascontiguousarray(uids, np.int64)  # a strided column of the batch's rows
        lo = int(at.min())
        at = at - lo
        mark = np.zeros(int(at.max()) + 1, np.bool_)
        mark[at] = True
        # each uid's place in `uids`, the first of equal ones written last; read where
        # marked only, so never filled whole. Numbering the groups by it, not by the uids'
        # order, hands each row its record without a sort and a search of the rows' uids
        # (the RFC states' `positions`: 0.14 s of a 3 M-SYN flood's `conns`)
        rank = np.empty(len(mark), np.int32)
        rank[at[::-1]] = np.arange(len(at) - 1, -1, -1, dtype=np.int32)
        if len(self.scratch) < self.n:
            self.scratch = np.empty(len(self.alive), np.int64)
        start = np.zeros(len(at) + 1, np.int64)
        k = kept_rows(self.cols["uid"], self.alive, self.n, lo, mark, rank, start, self.scratch)
        if not k:
            return None
        idx = np.empty(k, np.int64)  # grouped by record: one gather of each column
        group_kept(self.cols["uid"], lo, rank, start, self.scratch, idx)
        sel = {k: self.cols[k][idx] for k in self.FIELDS}
        sel["rec"] = rank[sel["uid"] - lo].astype(np.int64)
        self.alive[idx] = False
        self.dead += len(idx)
        if 2 * self.dead >= self.n:
            keep = np.flatnonzero(self.alive[: self.n])
            for k in self.FIELDS:
                self.cols[k][: len(keep)] = self.cols[k][keep]
            self.alive[: len(keep)] = True
            self.alive[len(keep) : self.n] = False
            self.n, self.dead = len(keep), 0
        return sel


class ConnectionBuilder:
    """Feed packet tables in capture order; get finished connections back as they end."""

    def __init__(
        self,
        *,
        boundaries: str = "stream",
        likely_server_ports: Iterable[int] = DEFAULT_LIKELY_SERVER_PORTS,
        check_checksums: bool = False,
        max_active: int = DEFAULT_MAX_ACTIVE,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        closed_idle_s: float = CLOSED_IDLE_S,
        rfc_states: bool = True,
        packet_flags_fn: PacketFlags | None = None,
        uid_prefix: str = "C",
        icmp_counts: dict[int, dict[str, int]] | None = None,
        park_from: int | None = None,
    ) -> None:
        """`icmp_counts`, when given, is filled with the ICMP errors about each tcp.stream
        (`tcpwhy.report.conns_icmp`). `park_from`: with this many connections open, new
        ones that start with a pure SYN are parked (`PARK_FROM`)."""
        self.icmp_counts = icmp_counts
        # the ICMP errors other than "too big" about open connections (`icmp_errors`), in
        # capture order: a SYN that got one and nothing else was answered by it, and each
        # runs in its connection's state machine (`_build_records`)
        self._icmp_err = icmp_errors(None, None)
        if boundaries not in ("stream", "zeek"):
            raise ValueError("boundaries must be 'stream' or 'zeek'")
        self.zeek_timers = boundaries == "zeek"
        self.likely = np.zeros(65536, np.bool_)
        for p in likely_server_ports:
            self.likely[int(p)] = True
        self.check_csum = check_checksums
        self.max_active = max(1, int(max_active))
        self.idle_ns = int(idle_timeout_s * 1e9)
        self.closed_idle_ns = int(closed_idle_s * 1e9)
        self.rfc_states = rfc_states
        self.packet_flags_fn: PacketFlags = (
            packet_flags_fn if packet_flags_fn is not None else WiresharkFlags()
        )
        self.uid_prefix = uid_prefix
        self.tracker = StreamTracker()
        self.warnings: list[str] = []
        self.evicted = 0
        self._cap = 0
        # per slot: the fields that need 64 bits (S) and the others (W); see `tcpwhy.tcp.zeek`
        self.S = np.zeros((0, z.NFIELDS), np.int64)
        self.W = np.zeros((0, z.NFIELDS32), np.int32)
        self.H = np.zeros((0, z.HIST_MAX), np.uint8)
        # per slot: a parked connection's packet (P), and whether the slot's is parked; S, W
        # and H have one row more than the pool, the scratch slot the parked ones replay into
        self.P = np.zeros((0, z.NPARK), np.int64)
        self.parked = np.zeros(0, np.bool_)
        self.park_from = PARK_FROM if park_from is None else max(0, int(park_from))
        self.free = np.zeros(0, np.int64)
        self.nfree = 0
        self.conv_slot = np.full(1024, -1, np.int64)
        self.next_uid = 0
        self.now = 0
        self._next_sweep = 0  # capture time of the next sweep of idle connections
        self._soonest = z.NEVER  # when one of the connections the last sweep left may go
        # packets kept for the RFC state machine, per connection uid
        self._kept = _KeptPackets()
        # the batch of records being emitted: the compiled loop writes each record straight
        # into its row (it stops when fewer than `OUT_ROWS` rows are left) and a full batch
        # leaves as it is, for a new one (`_batch_rows`)
        self._out, self._ow, self._oh = self._batch_rows()
        # attempt timers as they were armed (see `z.process_chunk`), a ring of (due, slot, uid)
        # (large from the start: every SYN arms a timer, and on a capture of many short
        # connections a small ring filled, stopping the compiled loop to compact it, every
        # thousand connections)
        self._q = np.zeros((QUEUE_ROWS, 3), np.int64)
        self._qmeta = np.zeros(2, np.int64)
        # connections idle longest, listed when the cap is reached: (slot, uid, seen time)
        self._victims = np.zeros((0, 3), np.int64)
        self._vmeta = np.zeros(2, np.int64)
        # conversations whose connection was written out, oldest first: (conv, stream) blocks;
        # the stream tracker forgets the oldest of them when it holds more than `max_active`
        self._gone: list[npt.NDArray[np.int64]] = []
        self._rows_fed = 0  # rows fed to the stream tracker so far (`FORGET_EVERY`)
        # server names (`_note_names`): every distinct name seen (b"" first), and per
        # connection uid named and not yet written out, its index there (sorted by uid)
        self._name_list: list[bytes] = [b""]
        self._name_ids: dict[bytes, int] = {b"": 0}
        self._name_uid = np.zeros(0, np.int64)
        # per connection uid: its first payload was looked at already (named or not)
        self._name_seen = np.zeros(1024, np.bool_)
        # connections whose ClientHello went on past their first payload (`_note_names`)
        from tcpwhy.tcp.server_names import Hellos

        self._hellos = Hellos()
        self._name_code = np.zeros(0, np.int32)

    # -- capacity ------------------------------------------------------------------------
    @property
    def active(self) -> int:
        return self._cap - self.nfree

    def _grow(self) -> None:
        """Doubles the slot pool, up to `max_active` slots; the compiled loop asks for it when
        every slot is taken, so the pool follows the connections open at once."""
        old = self._cap
        cap = min(max(2 * old, 1024), self.max_active)
        S, W, H, P, parked = self.S, self.W, self.H, self.P, self.parked
        if cap + 1 > len(S):
            # rows for up to `PREALLOC_SLOTS` at once, and the scratch slot: mapped lazily
            # (`sparse_zeros`), so memory follows the rows written, and growing copies nothing
            # (a pool of half a million slots copied as it doubled cost a second and half
            # again its memory at the peak)
            rows = max(cap, min(self.max_active, PREALLOC_SLOTS))
            S = sparse_zeros((rows + 1, z.NFIELDS), np.int64)
            S[:old] = self.S[:old]
            W = sparse_zeros((rows + 1, z.NFIELDS32), np.int32)
            W[:old] = self.W[:old]
            H = sparse_zeros((rows + 1, z.HIST_MAX), np.uint8)
            H[:old] = self.H[:old]
            P = np.zeros((rows, z.NPARK), np.int64)
            P[:old] = self.P[:old]
            parked = np.zeros(rows, np.bool_)
            parked[:old] = self.parked[:old]
        free = np.empty(cap, np.int64)
        free[: self.nfree] = self.free[: self.nfree]
        added = np.arange(cap - 1, old - 1, -1, dtype=np.int64)
        free[self.nfree : self.nfree + len(added)] = added
        self.nfree += len(added)
        self.S, self.W, self.H, self.free, self._cap = S, W, H, free, cap
        self.P, self.parked = P, parked

    # -- feeding -------------------------------------------------------------------------
    def feed(
        self, t: PacketTable, streams: dict[str, npt.NDArray[Any]] | None = None
    ) -> list[ConnRecord]:
        """Process one chunk (capture order); returns the connections it finished."""
        return [r for c in self.feed_columns(t, streams) for r in c]

    def finish(self) -> list[ConnRecord]:
        """The connections still active at the end of the capture, in stream order."""
        return self.finish_columns().records()

    def feed_columns(
        self, t: PacketTable, streams: dict[str, npt.NDArray[Any]] | None = None
    ) -> list[ConnColumns]:
        """Process one chunk (capture order); returns batches of the connections it finished."""
        return [b() for b in self.feed_jobs(t, streams)]

    def feed_jobs(
        self, t: PacketTable, streams: dict[str, npt.NDArray[Any]] | None = None
    ) -> list[BatchJob]:
        """`feed_columns`, with the batches still to build (`BatchJob`)."""
        n = len(t)
        if n == 0 or streams is not None:
            return self._feed_part(t, streams) if n else []
        # the stream tracker forgets at rows of the capture, not of the chunk: at every
        # FORGET_EVERY-th row, where the chunk is cut for it when the cap may be near
        out: list[BatchJob] = []
        lo = 0
        if self.tracker.conversations + n + FORGET_EVERY > self.max_active:
            for b in range(-self._rows_fed % FORGET_EVERY, n, FORGET_EVERY):
                if b > lo:
                    out += self._feed_part(t.between(lo, b), None)
                    lo = b
                self._forget_gone(self.tracker.conversations + FORGET_EVERY - self.max_active)
        out += self._feed_part(t if lo == 0 else t.between(lo, n), None)
        self._rows_fed += n
        return out

    def _feed_part(
        self, t: PacketTable, streams: dict[str, npt.NDArray[Any]] | None
    ) -> list[BatchJob]:
        """`feed_jobs` of a chunk, or of the part of one between two rows the tracker forgets
        at; `streams`: the chunk's tracker columns, when the caller tracked them."""
        n = len(t)
        s = streams if streams is not None else self.tracker.feed(t)
        if self.tracker.icmp_out is not None and t.icmp is not None and len(t.icmp):
            if self.icmp_counts is not None:
                count_icmp(self.icmp_counts, t.icmp, self.tracker.icmp_out["stream"])
            got = icmp_errors(t.icmp, self.tracker.icmp_out)
            if len(got["stream"]):
                self._icmp_err = {k: np.concatenate([v, got[k]]) for k, v in self._icmp_err.items()}
        out: list[BatchJob] = []
        conv = s["conv"]
        if conv.size and int(conv.max()) >= len(self.conv_slot):
            grown = np.full(max(int(conv.max()) + 1, 2 * len(self.conv_slot)), -1, np.int64)
            grown[: len(self.conv_slot)] = self.conv_slot
            self.conv_slot = grown
        ext = self.packet_flags_fn(t, s)
        ext_retx = np.full(n, -1, np.int8)
        ext_zwin = np.full(n, -1, np.int8)
        if ext is not None:
            if "retransmission" in ext:
                ext_retx = np.asarray(ext["retransmission"], np.int8)
            if "zero_window" in ext:
                ext_zwin = np.asarray(ext["zero_window"], np.int8)
        row_uid = np.full(n, -1, np.int64)
        row_keep = np.zeros(n, np.bool_)
        # parked connections' packets handed over (`z.LK`): at most a row per record emitted
        # and per row run, in a call
        LK = np.empty((OUT_ROWS + n, z.NKEPT), np.int64)
        lkmeta = np.zeros(1, np.int64)
        # the capture's time so far: the connections open at its end are worded as of it
        self.now = max(self.now, int(t["ts_ns"].max()))
        ts = t["ts_ns"]
        OUT, OW, OH = self._out, self._ow, self._oh
        done_n = 0  # rows of the batch filled
        i = 0
        named = 0  # rows before this one had their server names noted (`_note_names`)
        while i < n:
            if self.nfree == 0 and self._cap < self.max_active:
                self._grow()
            if self._qmeta[1] - self._qmeta[0] >= len(self._q):
                self._compact_queue()
            evicted = int(self._vmeta[1])
            top = done_n + OUT_ROWS
            self.nfree, self.next_uid, k, j = z.process_chunk(
                self._pool(),
                self.nfree,
                self.next_uid,
                i,
                conv,
                s["stream"],
                s["new"],
                s["dir"],
                t["ts_ns"],
                t["flags"],
                t["seq"],
                t["ack"],
                t["win"],
                t["payload_len"],
                t["ip_len"],
                t["sport"],
                t["dport"],
                t["src_hi"].view(np.int64),
                t["src_lo"].view(np.int64),
                t["dst_hi"].view(np.int64),
                t["dst_lo"].view(np.int64),
                t["csum_ok"],
                t["truncated"],
                ext_retx,
                ext_zwin,
                self.likely,
                self.check_csum,
                self.zeek_timers,
                self.idle_ns,
                self.closed_idle_ns,
                row_uid,
                row_keep,
                (OUT[done_n:top], OW[done_n:top], OH[done_n:top]),
                self._q,
                self._qmeta,
                self.active >= self.park_from,
                self._cap >= self.max_active,
                self._victims,
                self._vmeta,
                t["frame"],
                LK,
                lkmeta,
                self._next_sweep,
            )
            if k:
                self._gone.append(OUT[done_n : done_n + k, [z.F_CONV, z.F_STREAM]])
            if int(self._vmeta[1]) > evicted:
                self._evicted(OUT[done_n : done_n + k], OW[done_n : done_n + k])
            done_n += k
            if j < n and self.nfree == 0 and self._cap >= self.max_active and done_n < top:
                self._list_victims()
            self._hand_over(LK, lkmeta)
            if self.rfc_states and row_keep[i:j].any():
                idx = i + np.flatnonzero(row_keep[i:j])
                self._kept.append(
                    {
                        "uid": row_uid[idx],
                        "dir": s["dir"][idx].astype(np.int8),
                        "flags": t["flags"][idx],
                        "seq": t["seq"][idx],
                        "ack": t["ack"][idx],
                        "plen": t["payload_len"][idx],
                        "ts": t["ts_ns"][idx],
                        "frame": t["frame"][idx],
                    }
                )
            i = j
            swept = None
            if i < n and int(ts[i]) >= self._next_sweep:
                # idle connections leave at the first row at or after their idle time ran
                # out, as of that row: not at a chunk's end, which would make a record's
                # words and place depend on how the capture was read
                now = int(ts[i])
                swept = self._swept(self._active_slots(), now, force=False, reason=-1)
                self._next_sweep = self._sweep_after(now)
            if swept is not None and done_n + len(swept[0]) <= len(OUT):
                # after the batch's rows, in it: a batch per sweep made a capture of long
                # flows' records in 600 batches, each built and formatted on its own
                m = len(swept[0])
                OUT[done_n : done_n + m], OW[done_n : done_n + m], OH[done_n : done_n + m] = swept
                done_n += m
                swept = None
            if done_n >= RECORD_ROWS or swept is not None:
                # names for all rows so far at once (one whole-array pass, not one per call)
                self._note_names(t, row_uid, named, j)
                named = j
            if done_n >= RECORD_ROWS or (swept is not None and done_n):
                out += self._flush(done_n)  # before the sweep's records: they end later
                OUT, OW, OH = self._out, self._ow, self._oh
                done_n = 0
            if swept is not None:
                out += self._records(*swept)  # more than a batch holds: a batch of their own
        self._note_names(t, row_uid, named, n)
        if done_n:
            out += self._flush(done_n)
        return out

    def _flush(self, rows: int) -> list[BatchJob]:
        """The first `rows` rows of the batch as one batch of records: batches of about
        `RECORD_ROWS`, as looking up the kept packets costs about the same for any size while
        the rows, columns and text of a batch are held at once. A full batch leaves as it is
        and a new one takes its place (a flood's records were copied twice on their way,
        once out of the loop's rows and once joined: 4 GB of copying); the last rows of a
        chunk are copied out, so that the batch is reused."""
        OUT, OW, OH = self._out[:rows], self._ow[:rows], self._oh[:rows]
        if rows >= RECORD_ROWS:
            self._out, self._ow, self._oh = self._batch_rows()
        else:
            OUT, OW, OH = OUT.copy(), OW.copy(), OH.copy()
        return self._records(OUT, OW, OH)

    @staticmethod
    def _batch_rows() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.uint8]]:
        """Rows for a batch of records: a batch is cut from `RECORD_ROWS` rows, and the loop
        writes at most `OUT_ROWS` rows a call."""
        rows = RECORD_ROWS + OUT_ROWS
        return (
            np.empty((rows, z.NFIELDS), np.int64),
            np.empty((rows, z.NFIELDS32), np.int32),
            np.empty((rows, z.HIST_MAX), np.uint8),
        )

    def _note_names(self, t: PacketTable, row_uid: npt.NDArray[np.int64], i: int, j: int) -> None:
        """Keeps the server name of each connection whose first payload is among rows i to
        j -- the SNI of a ClientHello or the Host of an HTTP request, none otherwise
        (`tcpwhy.tcp.server_names`) -- until its record is written: a record may come
        chunks after the payload that named it. Whole-array steps over the first payload of
        each new connection; only the distinct names become Python bytes."""
        from tcpwhy.tcp import server_names as sn

        if not t.data.size or i >= j:
            return
        every = i + np.flatnonzero(t.data_mask(i, j))
        rows = every
        uid = row_uid[rows]
        ok = uid >= 0
        if ok.any() and int(uid.max()) >= len(self._name_seen):
            grown = np.zeros(max(int(uid.max()) + 1, 2 * len(self._name_seen)), np.bool_)
            grown[: len(self._name_seen)] = self._name_seen
            self._name_seen = grown
        ok &= ~self._name_seen[np.maximum(uid, 0)]
        rows, uid = rows[ok], uid[ok]
        if not len(rows) and not len(self._hellos):
            return
        uid, first = np.unique(uid, return_index=True)
        rows = rows[first]
        self._name_seen[uid] = True
        off, length = sn.locate(t, rows, *sn.kinds(t, rows))
        words, code = sn.distinct(t.data, off, length)
        # a ClientHello longer than its first segment: named once its next segments complete it
        part = sn.partial_hellos(t, rows, length)
        if part.any():
            self._hellos.start(t, rows[part], uid[part])
        if len(self._hellos):
            late_uid, late = self._hellos.feed(t, every, row_uid[every])
            uid = np.concatenate([uid, late_uid])
            code = np.concatenate([code, len(words) + np.arange(len(late), dtype=np.int64)])
            words = words + late
        if not len(uid):
            return
        ids = self._name_ids
        for w in words:
            if w not in ids:
                ids[w] = len(self._name_list)
                self._name_list.append(w)
        glob = np.array([ids[w] for w in words], np.int32)[code]
        # only the named are kept: a record without an entry has no name (code 0)
        uid, glob = uid[glob != 0], glob[glob != 0]
        if not len(uid):
            return
        u = np.concatenate([self._name_uid, uid])
        order = np.argsort(u, kind="stable")
        self._name_uid = u[order]
        self._name_code = np.concatenate([self._name_code, glob])[order]

    def _take_names(
        self, uids: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int32], tuple[str, ...]]:
        """Each record's server name as a code into the batch's words ("" first), and the
        words; the names of these connections are then dropped."""
        code = np.zeros(len(uids), np.int64)
        self._hellos.forget(uids)
        if len(self._name_uid) and len(uids):
            pos = np.minimum(np.searchsorted(self._name_uid, uids), len(self._name_uid) - 1)
            hit = self._name_uid[pos] == uids
            code[hit] = self._name_code[pos[hit]]
            keep = np.ones(len(self._name_uid), bool)
            keep[pos[hit]] = False
            self._name_uid, self._name_code = self._name_uid[keep], self._name_code[keep]
        if not code.any():  # no names (a flood's batches): no sort of the codes
            return np.zeros(len(uids), np.int32), ("",)
        # the codes used, ascending, "" first (what `numpy.union1d` with 0 gives), by marking
        # them among the names met so far: a batch's codes take no sort
        seen = np.zeros(len(self._name_list), np.bool_)
        seen[0] = True
        seen[code] = True
        used = np.flatnonzero(seen)
        local = (np.cumsum(seen, dtype=np.int32) - 1)[code]
        words = tuple(self._name_list[g].decode("utf-8", "backslashreplace") for g in used.tolist())
        return local, words

    def finish_columns(self) -> ConnColumns:
        """The connections still active at the end of the capture, in stream order."""
        return ConnColumns.concat(list(self.finish_batches()), self.uid_prefix)

    def finish_batches(self) -> Iterator[ConnColumns]:
        """The connections still active at the end of the capture, in stream order, in batches
        of at most `FINISH_ROWS` records (the pool may hold `max_active` of them: one batch
        would hold all their rows, columns and text at once)."""
        return (b() for b in self.finish_jobs())

    def finish_jobs(self) -> Iterator[BatchJob]:
        """`finish_batches`, with the batches still to build (`BatchJob`)."""
        slots = self._active_slots()
        # stream order, as `ConnColumns.stream_order` gives (the sweep keeps the given order)
        order = np.lexsort((self._field(slots, z.F_START_TS), self._field(slots, z.F_STREAM)))
        slots = slots[order]
        for lo in range(0, len(slots), FINISH_ROWS):
            yield from self._sweep_slots(
                slots[lo : lo + FINISH_ROWS], self.now, force=True, reason=z.END_CAPTURE
            )

    def _active_slots(self) -> npt.NDArray[np.int64]:
        """The slots in use: those not on the free list (the compiled loops take a slot off
        it as they set its F_ACTIVE, and put it back as they clear it). Reading F_ACTIVE down
        the pool instead reads a cache line per slot, with half a million slots in use on a
        SYN flood, at every sweep and every listing of victims."""
        used = np.ones(self._cap, np.bool_)
        used[self.free[: self.nfree]] = False
        return np.flatnonzero(used).astype(np.int64)

    def _field(self, slots: npt.NDArray[np.int64], field: int) -> npt.NDArray[np.int64]:
        """Field `field` of S (one of `z.PARKED_AS`) of the connections in these slots, parked
        or not."""
        slots = np.ascontiguousarray(slots, np.int64)
        out = np.empty(len(slots), np.int64)
        z.slot_field(self._pool(), slots, field, z.PARKED_AS[field], out)
        return out

    def _pool(self) -> tuple[Any, ...]:
        """The slot pool as the Zeek loops take it (`z._POOL`): the slots' state (S, W, H),
        the free list, each conversation's slot, and the parked connections' packets and
        marks (P, parked); the free list's length goes beside it."""
        return self.S, self.W, self.H, self.free, self.conv_slot, self.P, self.parked

    def _sweep_after(self, now: int) -> int:
        """When to sweep next, after a sweep at capture time `now`: with Zeek's timers a
        second later; else when the first of the connections left goes idle long enough, or
        one that a later row starts or closes could, whichever is sooner. Sweeping every
        second instead stopped the compiled loop 17,000 times on a capture of long flows
        (most sweeps found none): `conns` took 1.9 s against 0.7 s."""
        if self.zeek_timers:
            return now + SWEEP_EVERY_NS
        return min(self._soonest, now + min(self.idle_ns, self.closed_idle_ns) + 1)

    def _sweep_slots(
        self, slots: npt.NDArray[np.int64], now: int, *, force: bool, reason: int
    ) -> list[BatchJob]:
        swept = self._swept(slots, now, force=force, reason=reason)
        return [] if swept is None else self._records(*swept)

    def _swept(
        self, slots: npt.NDArray[np.int64], now: int, *, force: bool, reason: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.uint8]] | None:
        """The rows of the connections of `slots` whose time is up by `now` (all of them if
        `force`), emitted (their slots freed), None if none is; their records are still to
        be made (`_records`)."""
        if not len(slots):
            self._soonest = z.NEVER
            return None
        OUT = np.empty((len(slots), z.NFIELDS), np.int64)
        OW = np.empty((len(slots), z.NFIELDS32), np.int32)
        OH = np.empty((len(slots), z.HIST_MAX), np.uint8)
        LK = np.empty((len(slots), z.NKEPT), np.int64)
        lkmeta = np.zeros(1, np.int64)
        self.nfree, k, soonest = z.sweep(
            self._pool(),
            self.nfree,
            self.likely,
            self.check_csum,
            slots,
            now,
            self.zeek_timers,
            self.idle_ns,
            self.closed_idle_ns,
            force,
            reason,
            (OUT, OW, OH),
            self._q,
            self._qmeta,
            LK,
            lkmeta,
        )
        self._hand_over(LK, lkmeta)
        self._soonest = int(soonest)
        if not k:
            return None
        OUT, OW, OH = OUT[:k], OW[:k], OH[:k]
        if not force and k > 1:
            # in stream order, as at the capture's end, not in the pool's order of slots
            order = np.lexsort((OUT[:, z.F_START_TS], OUT[:, z.F_STREAM]))
            OUT, OW, OH = OUT[order], OW[order], OH[order]
        self._gone.append(OUT[:, [z.F_CONV, z.F_STREAM]])
        return OUT, OW, OH

    def _hand_over(self, LK: npt.NDArray[np.int64], lkmeta: npt.NDArray[np.int64]) -> None:
        """The packets of parked connections that the compiled loop handed over (`z.LK`),
        kept as the rows the connection would have kept, before any row after them."""
        m = int(lkmeta[0])
        if not m:
            return
        lkmeta[0] = 0
        if self.rfc_states:
            self._kept.append(
                {k: LK[:m, j].astype(_KeptPackets.DTYPES[k]) for j, k in enumerate(z.KEPT_FIELDS)}
            )

    def _list_victims(self) -> None:
        """Lists the connections idle longest for the compiled loop to evict, idlest first:
        enough for a while (`VICTIMS_SHARE`), so that listing (a pass over the pool) is
        rare."""
        slots = self._active_slots()
        seen = self._field(slots, z.F_SEEN_TS)
        want = min(len(slots), max(64, self.max_active // VICTIMS_SHARE))
        if want < len(slots):
            # every slot as idle as the want-th one, in slot order: what a stable sort of all
            # would list first, whatever the cut (a partition's pick among equal times is not)
            keep = np.flatnonzero(seen <= np.partition(seen, want - 1)[want - 1])
            slots, seen = slots[keep], seen[keep]
        order = np.argsort(seen, kind="stable")
        self._victims = np.stack(
            [slots[order], self._field(slots[order], z.F_UID), seen[order]], axis=1
        ).astype(np.int64)
        self._vmeta[0] = 0

    def _evicted(self, rows: npt.NDArray[np.int64], rows32: npt.NDArray[np.int32]) -> None:
        """Once the compiled loop evicted connections: the warning, the count, and the stream
        tracker forgets their conversations, so its memory is bounded as well (a later packet
        of an evicted conversation starts a new stream number)."""
        if not self.evicted:
            msg = (
                f"more than {self.max_active} connections active at once: the ones idle "
                "longest are written out early (end: 'evicted'); later packets of them "
                "start a continued record"
            )
            self.warnings.append(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=5)
        self.evicted = int(self._vmeta[1])
        convs = rows[rows32[:, z.F_REASON] == z.END_EVICTED, z.F_CONV]
        # not those a later packet of the chunk started again
        self.tracker.forget(convs[self.conv_slot[convs] < 0])

    def _compact_queue(self) -> None:
        """The attempt-timer ring is full: drop the rows of connections gone, grow if need be."""
        q, (head, tail) = self._q, self._qmeta
        rows = q[np.arange(head, tail) & (len(q) - 1)]
        s = rows[:, 1]
        live = rows[
            ((self.W[s, z.F_ACTIVE] != 0) | self.parked[s])
            & (self._field(s, z.F_UID) == rows[:, 2])
        ]
        size = len(q)
        while 2 * len(live) >= size:
            size *= 2
        if size != len(q):
            self._q = np.zeros((size, 3), np.int64)
        self._q[: len(live)] = live
        self._qmeta[:] = (0, len(live))

    def _forget_gone(self, count: int) -> None:
        """The stream tracker forgets `count` conversations, the ones whose connection was
        written out longest ago, if they are still inactive: bounds its memory (and the
        analysis's) on captures of very many connections. Below `max_active` conversations
        nothing is forgotten; a later packet of a forgotten one starts a new stream number."""
        while count > 0 and self._gone:
            block = self._gone[0]
            take, rest = block[:count], block[count:]
            if len(rest):
                self._gone[0] = rest
            else:
                self._gone.pop(0)
            conv, stream = take[:, 0], take[:, 1]
            ok = conv < len(self.tracker.st_stream)
            conv, stream = conv[ok], stream[ok]
            ok = (self.conv_slot[conv] < 0) & (self.tracker.st_stream[conv] == stream)
            self.tracker.forget(conv[ok])
            count -= len(take)

    # -- records -------------------------------------------------------------------------
    def _records(
        self, OUT: npt.NDArray[np.int64], OW32: npt.NDArray[np.int32], OH: npt.NDArray[np.uint8]
    ) -> list[BatchJob]:
        """Emitted slot rows (S and W) as one batch of records to build (`BatchJob`). What the
        builder holds for these connections (their kept packets, their server names) is
        taken out here; the rest is the batch's own, so it may be built on another thread."""
        uids = OUT[:, z.F_UID]
        kept = self._kept.take(uids) if self.rfc_states else None
        names = self._take_names(uids)
        errors = None
        if len(self._icmp_err["stream"]):
            # and the errors of the streams written leave: it holds open connections' only
            hit = np.isin(self._icmp_err["stream"], OUT[:, z.F_STREAM])
            if hit.any():
                errors = {k: v[hit] for k, v in self._icmp_err.items()}
                self._icmp_err = {k: v[~hit] for k, v in self._icmp_err.items()}
        return [
            functools.partial(
                _build_records,
                OUT,
                OW32,
                OH,
                kept,
                self.rfc_states,
                names,
                self.uid_prefix,
                errors,
            )
        ]


BatchJob = Callable[[], ConnColumns]
"""A batch of records to build: the builder took what it holds for them, the rest needs no
builder (`iter_connection_columns` builds them on a thread of their own)."""


def _rfc_states(
    OUT: npt.NDArray[np.int64],
    OW: npt.NDArray[np.int32],
    sel: dict[str, npt.NDArray[Any]] | None,
    now: npt.NDArray[np.int64],
    errors: dict[str, npt.NDArray[Any]] | None = None,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Final RFC states (`State` codes) of each emitted record's originator and responder,
    from its kept packets `sel` (`_Kept.take`) and the ICMP errors about it (`icmp_errors`),
    placed among them by frame."""
    n = len(OUT)
    o_state = np.full(n, State.CLOSED, np.uint8)
    r_state = np.full(n, State.CLOSED, np.uint8)
    if sel is None:
        return o_state, r_state
    # record index of each row (`_KeptPackets.take`), and its direction relative to that
    # record's originator
    rec = sel["rec"]
    direction = (sel["dir"].astype(np.int64) != OW[rec, z.F_ODIR]).astype(np.uint8)
    # every record's kept packets through the state machine in one compiled call; a
    # TIME_WAIT entered 2 MSL before the record was written has ended by then
    starts = np.flatnonzero(np.r_[True, rec[1:] != rec[:-1]])
    cols: tuple[npt.NDArray[Any], ...] = (
        direction,
        sel["flags"],
        sel["seq"],
        sel["ack"],
        sel["plen"],
        sel["ts"],
        sel["frame"],
    )
    offsets = np.r_[starts, len(rec)]
    if errors is not None and len(errors["stream"]):
        # each error's record (by stream) and its connection among the ones run here
        r, ok = positions(OUT[:, z.F_STREAM], errors["stream"])
        conn_of = np.full(n, -1, np.int64)
        conn_of[rec[starts]] = np.arange(len(starts))
        c = np.where(ok, conn_of[r], -1)
        cols, offsets = with_icmp_rows(
            offsets,
            sel["frame"].astype(np.int64),
            cols,
            IcmpErrorRows(
                c,
                errors["frame"].astype(np.int64),
                (errors["dir"].astype(np.int64) != OW[r, z.F_ODIR]).astype(np.uint8),
                errors["ts_ns"],
                errors["frame"],
            ),
        )
    d, fl, sq, ak, pl, ts, fr = cols
    res = run_connections(d, fl, sq, ak, pl, ts, fr, offsets, end_ns=now[rec[starts]])
    o_state[rec[starts]] = res.final[:, 0]
    r_state[rec[starts]] = res.final[:, 1]
    return o_state, r_state


def _build_records(
    OUT: npt.NDArray[np.int64],
    OW32: npt.NDArray[np.int32],
    OH: npt.NDArray[np.uint8],
    kept: dict[str, npt.NDArray[Any]] | None,
    rfc_states: bool,
    names: tuple[npt.NDArray[np.int32], tuple[str, ...]],
    uid_prefix: str,
    errors: dict[str, npt.NDArray[Any]] | None = None,
) -> ConnColumns:
    """Emitted slot rows (S and W) as one batch of columns (`tcpwhy.tcp.records`); the
    words are looked up once per distinct value, not per record. Each record is worded as of
    the capture time it was written at (`z.F_AS_OF`). `errors`: the ICMP errors (not "too
    big", `icmp_errors`) about their streams before they were written, for the end words and
    the RFC state machine."""
    n = len(OUT)
    now = OUT[:, z.F_AS_OF]

    def wide(field: int) -> npt.NDArray[np.int64]:
        # one 32-bit field as 64 bits, for the arithmetic below: widening the whole block
        # was a tenth of a second of a 3 M-SYN flood's `conns`
        return OW32[:, field].astype(np.int64)

    if rfc_states:
        o_rfc, r_rfc = _rfc_states(OUT, OW32, kept, now, errors)
    else:
        o_rfc = r_rfc = np.full(n, NO_RFC_STATE, np.uint8)
    od = wide(z.F_ODIR)
    # the columns that depend on which side originates, in one compiled pass
    R = np.empty((z.NSIDES, n), np.int64)
    if n:
        z.record_sides(np.ascontiguousarray(OUT), np.ascontiguousarray(OW32), R)
    zo, zr = R[z.R_ZEEK_ORIG], R[z.R_ZEEK_RESP]
    osize, rsize = R[z.R_ORIG_SIZE], R[z.R_RESP_SIZE]
    hlen = wide(z.F_HLEN)
    history = np.ascontiguousarray(OH)
    cs = _conn_state_codes(zo, zr, (osize == 0) & (rsize == 0), history, hlen)
    start = OUT[:, z.F_START_TS]
    reason = wide(z.F_REASON)
    idle = np.where(
        (reason == z.END_IDLE) & _OPEN_CODES[cs], (now - OUT[:, z.F_SEEN_TS]) // 10**9, 0
    )
    ff = wide(z.F_FIRST_FLAGS) & (SYN | ACK)
    key = (
        ((((wide(z.F_CLOSE1) * 16 + wide(z.F_CLOSE2)) * 16 + wide(z.F_CLOSE3)) * 2 + od)
         * 16 + cs) * 16 + reason
    ) * 32 + ff + (idle << 26)  # fmt: skip
    keys, end = unique_inverse(key)
    cols: dict[str, npt.NDArray[Any]] = {
        "uid": OUT[:, z.F_UID].copy(),
        "stream": OUT[:, z.F_STREAM].copy(),
        "orig_hi": R[z.R_ORIG_HI].view(np.uint64),
        "orig_lo": R[z.R_ORIG_LO].view(np.uint64),
        "orig_p": R[z.R_ORIG_P],
        "resp_hi": R[z.R_RESP_HI].view(np.uint64),
        "resp_lo": R[z.R_RESP_LO].view(np.uint64),
        "resp_p": R[z.R_RESP_P],
        "orientation": OW32[:, z.F_ORIENT].astype(np.uint8),
        "start_ns": start.copy(),
        "duration_ns": OUT[:, z.F_LAST_TS] - start,
        "orig_pkts": R[z.R_ORIG_PKTS],
        "resp_pkts": R[z.R_RESP_PKTS],
        "orig_bytes": osize.view(np.uint64),
        "resp_bytes": rsize.view(np.uint64),
        "orig_payload": R[z.R_ORIG_PAYLOAD],
        "resp_payload": R[z.R_RESP_PAYLOAD],
        "orig_ip_bytes": R[z.R_ORIG_IPBYTES],
        "resp_ip_bytes": R[z.R_RESP_IPBYTES],
        "missed_bytes": OUT[:, z.F_MISSED].copy(),
        "irtt_ns": R[z.R_IRTT],
        "retransmissions": R[z.R_RETX],
        "zero_windows": R[z.R_ZWIN],
        "orig_state": o_rfc,
        "resp_state": r_rfc,
        "end": end.reshape(-1).astype(np.int32),
        "conn_state": cs.astype(np.uint8),
        "history": history.copy(),
        "history_len": hlen,
        "continued": OW32[:, z.F_CONTINUED] != 0,
        "emitted": reason.astype(np.uint8),
        "zeek_orig_state": zo.astype(np.uint8),
        "zeek_resp_state": zr.astype(np.uint8),
    }
    cols["server_name"], name_words = names
    words = tuple(_end_words_of_key(k) for k in keys.tolist())
    if errors is not None and ENDINGS["no_answer"] in words:
        # a SYN answered by nothing but an ICMP error (host or port unreachable, prohibited):
        # the connect() failed at once, as analyze counts it, not for want of an answer
        unanswered = cols["end"] == words.index(ENDINGS["no_answer"])
        icmp = np.isin(cols["stream"], errors["stream"])
        if (icmp & unanswered).any():
            words = (*words, ENDINGS["rejected_by_icmp"])
            cols["end"][icmp & unanswered] = len(words) - 1
    return ConnColumns(cols, words, uid_prefix, name_words=name_words)


assert z.IRTT_NONE == IRTT_UNSET  # the kernel writes the records' value itself

_CS_CODE = {w: i for i, w in enumerate(CONN_STATE_WORDS)}
_OPEN_CODES = np.array([w in ("S1", "S2", "S3", "SH", "SHR", "OTH") for w in CONN_STATE_WORDS])
"""conn_state values whose end words may mention the idle time."""
_ZN = len(z.ZEEK_STATE_NAMES)
_CS_TABLE = np.array(
    [
        [
            [_CS_CODE[z.zeek_conn_state(o, r, 1 - nb, 1 - nb, "")] for nb in (0, 1)]
            for r in range(_ZN)
        ]
        for o in range(_ZN)
    ],
    np.int64,
)
"""conn_state code by (originator state, responder state, no bytes either way), for every case
but RSTOS0, the one that reads the history."""


def _conn_state_codes(
    zo: npt.NDArray[np.int64],
    zr: npt.NDArray[np.int64],
    no_bytes: npt.NDArray[np.bool_],
    history: npt.NDArray[np.uint8],
    hlen: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """Zeek's conn_state (`tcpwhy.tcp.zeek.zeek_conn_state`) of many records, as codes."""
    cs = _CS_TABLE[zo, zr, no_bytes.astype(np.int64)]
    # an originator reset against a silent responder: RSTOS0 or OTH, by the history's letters
    maybe = np.flatnonzero((zo == z.RESET) & ((zr == z.INACTIVE) | (zr == z.PARTIAL)))
    for i in maybe.tolist():
        h = bytes(history[i, : hlen[i]]).decode("ascii")
        cs[i] = _CS_CODE[z.zeek_conn_state(int(zo[i]), int(zr[i]), 1, 1, h)]
    return cs


@functools.lru_cache(maxsize=4096)
def _end_words_of_key(key: int) -> str:
    """`end_words` of the packed key `_records` groups records by."""
    ff = key & 31
    reason = (key >> 5) & 15
    cs = (key >> 9) & 15
    odir = (key >> 13) & 1
    c3, c2, c1 = (key >> 14) & 15, (key >> 18) & 15, (key >> 22) & 15
    idle = key >> 26
    return end_words([c1, c2, c3], odir, CONN_STATE_WORDS[cs], reason, ff, float(idle))


def end_words(
    closes: list[int], odir: int, conn_state: str, reason: int, first_flags: int, idle_s: float
) -> str:
    """How the connection ended, in words, from the order of its first FINs and RSTs."""
    events = []
    for c in closes:
        if not c:
            continue
        d, kind = divmod(c - 1, 4)
        events.append(("originator" if d == odir else "responder", "FIN" if kind == 0 else "RST"))
    if conn_state == "REJ" and (first_flags & (SYN | ACK)) == SYN:
        return ENDINGS["refused"]
    if conn_state in ("S0",) or (
        conn_state == "OTH" and not events and first_flags & SYN and not first_flags & ACK
    ):
        return ENDINGS["no_answer"]
    rst = next((i for i, e in enumerate(events) if e[1] == "RST"), None)
    fins = [f"{who} FIN" for who, kind in events if kind == "FIN"]
    if rst is not None:
        who = events[rst][0]
        before = [f"{w} FIN" for w, k in events[:rst] if k == "FIN"]
        text = f"reset by {who}"
        if before:
            text += " after " + ", ".join(before)
        return text
    if len(fins) >= 2:
        return "closed by " + ", ".join(fins)
    tail = {
        z.END_CAPTURE: ENDINGS["open_at_end"],
        z.END_EVICTED: ENDINGS["evicted"],
        z.END_IDLE: f"idle for {idle_s:.0f} s, {ENDINGS['no_close']}",
        z.END_INACTIVITY: ENDINGS["inactivity_timeout"],
    }.get(reason, ENDINGS["no_close"])
    if fins:
        return f"half-closed by {fins[0]}; {tail}"
    return tail


_CODE_OF_WORDS = {
    ENDINGS[c]: c
    for c in (
        "refused",
        "no_answer",
        "rejected_by_icmp",
        "open_at_end",
        "evicted",
        "inactivity_timeout",
        "no_close",
    )
}
"""The endings `end_words` words exactly as `ENDINGS` describes them."""


@functools.lru_cache(maxsize=256)
def end_code(words: str) -> str:
    """The `ENDINGS` code of `end_words`' words (the words name who reset or closed)."""
    if words in _CODE_OF_WORDS:
        return _CODE_OF_WORDS[words]
    for prefix, code in (
        ("reset by originator", "reset_by_originator"),
        ("reset by responder", "reset_by_responder"),
        ("closed by ", "fin_both"),
        ("half-closed by ", "half_closed"),
        ("idle for ", "idle"),
    ):
        if words.startswith(prefix):
            return code
    return "other"


IcmpCounts = dict[int, dict[str, int]]
"""tcp.stream -> {"type/code": count}"""


def count_icmp(counts: IcmpCounts, icmp: PacketTable | None, stream: Any) -> None:
    """Add a chunk's ICMP rows (`StreamTracker.icmp_out["stream"]`) to `counts`."""
    if icmp is None or not len(icmp):
        return
    for sid, ty, code in zip(
        np.asarray(stream).tolist(),
        icmp["icmp_type"].tolist(),
        icmp["icmp_code"].tolist(),
        strict=True,
    ):
        if sid < 0:
            continue
        d = counts.setdefault(sid, {})
        key = f"{ty}/{code}"
        d[key] = d.get(key, 0) + 1


def reading_options(options: Mapping[str, Any]) -> dict[str, bool]:
    """How a capture is read (`tcpwhy.capture.iter_tables`' keywords) for the records that
    `options` (`ConnectionBuilder`'s keywords) ask for: the segments' checksums checked
    where asked, and with Zeek's boundaries Teredo on any ports, as Zeek decodes it."""
    return {
        "checksums": bool(options.get("check_checksums", False)),
        "teredo_any_port": options.get("boundaries", "stream") == "zeek",
    }


def iter_connection_columns(
    tables: Iterable[PacketTable],
    stats: CaptureStats | None = None,
    *,
    threaded: bool = False,
    **options: Any,
) -> Iterator[ConnColumns]:
    """Connections of a capture's tables (in capture order, read as `reading_options`
    says), in batches of columns as they finish. The builder copies what it keeps, so the
    reader may reuse its buffers. `threaded`: the batches are built on a second thread
    (`_built_beside`)."""
    jobs = iter_connection_jobs(tables, stats, **options)
    if threaded:
        yield from _built_beside(jobs)
    else:
        yield from (c for c in (job() for job in jobs) if len(c))


def iter_connection_jobs(
    tables: Iterable[PacketTable], stats: CaptureStats | None = None, **options: Any
) -> Iterator[BatchJob]:
    """`iter_connection_columns`, each batch still to build (`BatchJob`), for a consumer that
    builds them where it likes (the jobs of the capture's end may build to no records)."""
    b = ConnectionBuilder(**options)
    for t in tables:
        yield from b.feed_jobs(t)
    yield from b.finish_jobs()
    if stats is not None:
        stats.warnings.extend(b.warnings)


VICTIMS_SHARE = 2
"""Of the connections held at the cap, the idlest 1/VICTIMS_SHARE are listed as victims at
a time (`ConnectionBuilder._list_victims`). Each listing reads every slot in use: on a
3 M-SYN flood (2.5 M evictions at the default cap) listing an eighth at a time took 40
listings and `conns` 4.3 to 4.6 s; a half, 10 listings and 4.0 s, for 10 MB more at the
peak (the list itself, 24 bytes a victim). The records are the same: each listing is the
start of a stable sort of the connections held, whatever its length."""

_AHEAD = 2
"""Batches a thread may have to build before the reading waits for it (`_built_beside`)."""


def _built_beside(jobs: Iterable[BatchJob]) -> Iterator[ConnColumns]:
    """The batches, in order, built on a thread of their own while the next tables are fed:
    building the records of a batch (its kept packets through the RFC state machine, the
    columns, the words) is a quarter of reading a capture of short connections, and most of
    it runs without the GIL."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    pending: deque[Future[ConnColumns]] = deque()
    with ThreadPoolExecutor(1, thread_name_prefix="tcpwhy-records") as pool:
        for job in jobs:
            pending.append(pool.submit(job))
            while pending and (len(pending) > _AHEAD or pending[0].done()):
                got = pending.popleft().result()
                if len(got):
                    yield got
        while pending:
            last = pending.popleft().result()
            if len(last):
                yield last


def iter_connections(
    tables: Iterable[PacketTable],
    stats: CaptureStats | None = None,
    **options: Any,
) -> Iterator[ConnRecord]:
    """Connections of a capture's tables, yielded as each one finishes."""
    for batch in iter_connection_columns(tables, stats, **options):
        yield from batch


def connection_columns(table: PacketTable, **options: Any) -> ConnColumns:
    """All connections of one packet table as one batch, in stream order."""
    batches = list(iter_connection_columns([table], None, **options))
    return ConnColumns.concat(batches, options.get("uid_prefix", "C")).stream_order()


def build_connections(table: PacketTable, **options: Any) -> list[ConnRecord]:
    """All connections of one packet table, in stream order."""
    return connection_columns(table, **options).records()


__all__ = [
    "DEFAULT_LIKELY_SERVER_PORTS",
    "ENDINGS",
    "ConnColumns",
    "ConnRecord",
    "ConnectionBuilder",
    "WiresharkFlags",
    "build_connections",
    "connection_columns",
    "empty_columns",
    "end_code",
    "end_words",
    "iter_connection_columns",
    "iter_connection_jobs",
    "iter_connections",
    "zeek_ports",
    "zeek_style_flags",
]

_ = (FIN, RST)
