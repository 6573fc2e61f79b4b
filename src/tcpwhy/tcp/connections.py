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
import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import ACK, FIN, RST, SYN, CaptureStats, PacketTable, format_addr
from tcpwhy.tcp import zeek as z
from tcpwhy.tcp.state import State
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
OUT_ROWS = 4096


def zeek_ports(scripts: Iterable[str]) -> frozenset[int]:
    """Likely server ports for a bare-mode Zeek run that loaded `scripts` (``@load`` lines)."""
    ports: set[int] = set()
    for line in scripts:
        for name, pp in ZEEK_ANALYZER_PORTS.items():
            if f"protocols/{name}" in line:
                ports.update(pp)
    return frozenset(ports)


@dataclass(slots=True)
class ConnRecord:
    """One connection. Addresses are text; times are seconds since the Unix epoch."""

    uid: str
    stream: int
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    orientation: str
    start: float
    duration: float
    orig_pkts: int
    resp_pkts: int
    orig_bytes: int
    resp_bytes: int
    orig_payload: int
    resp_payload: int
    orig_ip_bytes: int
    resp_ip_bytes: int
    missed_bytes: int
    irtt: float | None
    retransmissions: int
    zero_windows: int
    orig_state: str
    resp_state: str
    end: str
    conn_state: str
    history: str
    continued: bool
    emitted: str
    zeek_orig_state: str
    zeek_resp_state: str
    first_ns: int = field(repr=False, default=0)

    def as_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in _JSON_FIELDS}
        d["start"] = round(self.start, 6)
        d["duration"] = round(self.duration, 6)
        if self.irtt is not None:
            d["irtt"] = round(self.irtt, 6)
        return d

    def json_line(self) -> str:
        """``json.dumps(self.as_json(), ensure_ascii=False)``, written out: a fifth of the time,
        which counts on captures of many short connections."""
        s = _json_str
        irtt = "null" if self.irtt is None else repr(round(self.irtt, 6))
        return (
            f'{{"uid": {s(self.uid)}, "stream": {self.stream}, "orig_h": {s(self.orig_h)}, '
            f'"orig_p": {self.orig_p}, "resp_h": {s(self.resp_h)}, "resp_p": {self.resp_p}, '
            f'"orientation": {s(self.orientation)}, "start": {round(self.start, 6)!r}, '
            f'"duration": {round(self.duration, 6)!r}, "orig_pkts": {self.orig_pkts}, '
            f'"resp_pkts": {self.resp_pkts}, "orig_bytes": {self.orig_bytes}, '
            f'"resp_bytes": {self.resp_bytes}, "orig_payload": {self.orig_payload}, '
            f'"resp_payload": {self.resp_payload}, "orig_ip_bytes": {self.orig_ip_bytes}, '
            f'"resp_ip_bytes": {self.resp_ip_bytes}, "missed_bytes": {self.missed_bytes}, '
            f'"irtt": {irtt}, "retransmissions": {self.retransmissions}, '
            f'"zero_windows": {self.zero_windows}, "orig_state": {s(self.orig_state)}, '
            f'"resp_state": {s(self.resp_state)}, "end": {s(self.end)}, '
            f'"conn_state": {s(self.conn_state)}, "history": {s(self.history)}, '
            f'"continued": {"true" if self.continued else "false"}, '
            f'"emitted": {s(self.emitted)}, "zeek_orig_state": {s(self.zeek_orig_state)}, '
            f'"zeek_resp_state": {s(self.zeek_resp_state)}}}'
        )


_JSON_FIELDS = tuple(f.name for f in fields(ConnRecord) if f.name != "first_ns")
_json_str = json.encoder.encode_basestring

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

        self.analyzer = Analyzer()

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


_STATE_NAMES = [s.name for s in State]
_addr_text = functools.lru_cache(maxsize=1 << 16)(format_addr)


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
    ) -> None:
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
        self.S = np.zeros((0, z.NFIELDS), np.int64)
        self.H = np.zeros((0, z.HIST_MAX), np.uint8)
        self.free = np.zeros(0, np.int64)
        self.nfree = 0
        self.conv_slot = np.full(1024, -1, np.int64)
        self.next_uid = 0
        self.now = 0
        self._last_sweep = 0
        # packets kept for the RFC state machine, per connection uid
        self._kept: list[dict[str, npt.NDArray[Any]]] = []
        # records emitted by one call of the compiled loop (it stops when this is full)
        self._out = np.empty((OUT_ROWS, z.NFIELDS), np.int64)
        self._oh = np.empty((OUT_ROWS, z.HIST_MAX), np.uint8)
        self._kept_n = 0

    # -- capacity ------------------------------------------------------------------------
    @property
    def active(self) -> int:
        return self._cap - self.nfree

    def _grow(self) -> None:
        """Doubles the slot pool; the compiled loop asks for it when every slot is taken, so the
        pool follows the connections open at once."""
        old = self._cap
        cap = max(2 * old, 1024)
        S = np.zeros((cap, z.NFIELDS), np.int64)
        S[:old] = self.S
        H = np.zeros((cap, z.HIST_MAX), np.uint8)
        H[:old] = self.H
        free = np.empty(cap, np.int64)
        free[: self.nfree] = self.free[: self.nfree]
        added = np.arange(cap - 1, old - 1, -1, dtype=np.int64)
        free[self.nfree : self.nfree + len(added)] = added
        self.nfree += len(added)
        self.S, self.H, self.free, self._cap = S, H, free, cap

    # -- feeding -------------------------------------------------------------------------
    def feed(
        self, t: PacketTable, streams: dict[str, npt.NDArray[Any]] | None = None
    ) -> list[ConnRecord]:
        """Process one chunk (capture order); returns the connections it finished."""
        n = len(t)
        if n == 0:
            return []
        s = streams if streams is not None else self.tracker.feed(t)
        out: list[ConnRecord] = []
        # memory cap: make room for every row of the chunk being a new connection
        room = self.max_active - self.active
        if room < n:
            out += self._evict(n - room)
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
        row_uid = np.empty(n, np.int64)
        row_keep = np.zeros(n, np.bool_)
        # records are worded as of the chunk's last packet (idle times, TIME_WAIT expiry)
        self.now = max(self.now, int(t["ts_ns"].max()))
        OUT, OH = self._out, self._oh
        i = 0
        while i < n:
            if self.nfree == 0:
                self._grow()
            self.nfree, self.next_uid, k, j = z.process_chunk(
                self.S,
                self.H,
                self.free,
                self.nfree,
                self.conv_slot,
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
                ext_retx,
                ext_zwin,
                self.likely,
                self.check_csum,
                self.zeek_timers,
                self.idle_ns,
                self.closed_idle_ns,
                row_uid,
                row_keep,
                OUT,
                OH,
            )
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
                self._kept_n += len(idx)
            if k:
                out += self._records(OUT[:k], OH[:k])
            i = j
        if self.now - self._last_sweep >= SWEEP_EVERY_NS:
            self._last_sweep = self.now
            out += self._sweep(self.now, force=False, reason=-1)
        return out

    def finish(self) -> list[ConnRecord]:
        """The connections still active at the end of the capture, in stream order."""
        recs = self._sweep(self.now, force=True, reason=z.END_CAPTURE)
        recs.sort(key=lambda r: (r.stream, r.first_ns))
        return recs

    def _active_slots(self) -> npt.NDArray[np.int64]:
        return np.flatnonzero(self.S[:, z.F_ACTIVE]).astype(np.int64)

    def _sweep(self, now: int, *, force: bool, reason: int) -> list[ConnRecord]:
        slots = self._active_slots()
        if not len(slots):
            return []
        return self._sweep_slots(slots, now, force=force, reason=reason)

    def _sweep_slots(
        self, slots: npt.NDArray[np.int64], now: int, *, force: bool, reason: int
    ) -> list[ConnRecord]:
        OUT = np.empty((len(slots), z.NFIELDS), np.int64)
        OH = np.empty((len(slots), z.HIST_MAX), np.uint8)
        self.nfree, k = z.sweep(
            self.S,
            self.H,
            self.free,
            self.nfree,
            self.conv_slot,
            slots,
            now,
            self.zeek_timers,
            self.idle_ns,
            self.closed_idle_ns,
            force,
            reason,
            OUT,
            OH,
        )
        return self._records(OUT[:k], OH[:k]) if k else []

    def _evict(self, count: int) -> list[ConnRecord]:
        """Drop the `count` connections idle longest, once with a warning."""
        slots = self._active_slots()
        if not len(slots):
            return []
        count = min(count, len(slots))
        order = np.argsort(self.S[slots, z.F_SEEN_TS], kind="stable")[:count]
        victims = slots[order]
        if not self.evicted:
            msg = (
                f"more than {self.max_active} connections active at once: the ones idle "
                "longest are written out early (end: 'evicted'); later packets of them "
                "start a continued record"
            )
            self.warnings.append(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
        self.evicted += len(victims)
        convs = self.S[victims, z.F_CONV].copy()
        out = self._sweep_slots(victims, self.now, force=True, reason=z.END_EVICTED)
        # the stream tracker forgets them too, so its memory is bounded as well; a later
        # packet of an evicted conversation starts a new stream number
        self.tracker.forget(convs)
        return out

    # -- records -------------------------------------------------------------------------
    def _take_kept(self, OUT: npt.NDArray[np.int64]) -> list[tuple[str, str]]:
        """Final RFC states of each emitted record, from its kept packets (then dropped)."""
        n = len(OUT)
        none = [("CLOSED", "CLOSED")] * n
        if not self._kept:
            return none
        cols = {k: np.concatenate([c[k] for c in self._kept]) for k in self._kept[0]}
        uids = OUT[:, z.F_UID]
        lo = int(uids.min())
        mark = np.zeros(int(uids.max()) - lo + 1, np.bool_)
        mark[uids - lo] = True
        rel = cols["uid"] - lo
        inside = (rel >= 0) & (rel < len(mark))
        mine = np.zeros(len(rel), np.bool_)
        mine[inside] = mark[rel[inside]]
        rest = {k: v[~mine] for k, v in cols.items()}
        self._kept = [rest] if len(rest["uid"]) else []
        self._kept_n = len(rest["uid"])
        if not mine.any():
            return none
        sel = {k: v[mine] for k, v in cols.items()}
        order = np.argsort(sel["uid"], kind="stable")
        sel = {k: v[order] for k, v in sel.items()}
        # record index of each row, and its direction relative to that record's originator
        by_uid = np.argsort(uids, kind="stable")
        rec = by_uid[np.searchsorted(uids, sel["uid"], sorter=by_uid)]
        direction = (sel["dir"].astype(np.int64) != OUT[rec, z.F_ODIR]).astype(np.uint8)
        # every record's kept packets through the state machine in one compiled call; a
        # TIME_WAIT entered 2 MSL before the chunk's last packet has ended by now
        starts = np.flatnonzero(np.r_[True, rec[1:] != rec[:-1]])
        res = run_connections(
            direction,
            sel["flags"],
            sel["seq"],
            sel["ack"],
            sel["plen"],
            sel["ts"],
            sel["frame"],
            np.r_[starts, len(rec)],
            end_ns=self.now,
        )
        pairs = [(a, b) for a in _STATE_NAMES for b in _STATE_NAMES]
        out = list(none)
        codes = (res.final[:, 0].astype(np.int64) * len(State) + res.final[:, 1]).tolist()
        for r, code in zip(rec[starts].tolist(), codes, strict=True):
            out[r] = pairs[code]
        return out

    def _records(self, OUT: npt.NDArray[np.int64], OH: npt.NDArray[np.uint8]) -> list[ConnRecord]:
        """Records from emitted slot rows; column work is vectorised, words are cached."""
        n = len(OUT)
        rfc = self._take_kept(OUT) if self.rfc_states else [("", "")] * n
        hl = OUT[:, z.F_HLEN].tolist()
        hist = [bytes(h[:k]).decode("ascii") for h, k in zip(OH, hl, strict=True)]
        rows = np.arange(n)
        od = OUT[:, z.F_ODIR]
        eo = z.EP0 + od * z.EPN
        er = z.EP0 + (1 - od) * z.EPN

        def col(base: npt.NDArray[np.int64], f: int) -> npt.NDArray[np.int64]:
            return OUT[rows, base + f]

        zo, zr = col(eo, z.E_STATE), col(er, z.E_STATE)
        osize = _sizes(OUT, rows, eo, zr)
        rsize = _sizes(OUT, rows, er, zo)
        a0 = z.F_A0HI + np.where(od == 0, 0, 3)
        b0 = z.F_A0HI + np.where(od == 0, 3, 0)
        u64 = 0xFFFFFFFFFFFFFFFF
        hs = OUT[:, z.F_HSACK_TS]
        sy = OUT[:, z.F_SYN_TS]
        irtt = np.where((hs >= 0) & (sy >= 0), (hs - sy) / 1e9, np.nan).tolist()
        cols = zip(
            OUT[:, z.F_UID].tolist(),
            OUT[:, z.F_STREAM].tolist(),
            OUT[rows, a0].tolist(),
            OUT[rows, a0 + 1].tolist(),
            OUT[rows, a0 + 2].tolist(),
            OUT[rows, b0].tolist(),
            OUT[rows, b0 + 1].tolist(),
            OUT[rows, b0 + 2].tolist(),
            OUT[:, z.F_ORIENT].tolist(),
            OUT[:, z.F_START_TS].tolist(),
            (OUT[:, z.F_LAST_TS] - OUT[:, z.F_START_TS]).tolist(),
            col(eo, z.E_PKTS).tolist(),
            col(er, z.E_PKTS).tolist(),
            osize.tolist(),
            rsize.tolist(),
            col(eo, z.E_PAYLOAD).tolist(),
            col(er, z.E_PAYLOAD).tolist(),
            col(eo, z.E_IPBYTES).tolist(),
            col(er, z.E_IPBYTES).tolist(),
            irtt,
            (col(eo, z.E_RETX) + col(er, z.E_RETX)).tolist(),
            (col(eo, z.E_ZWIN) + col(er, z.E_ZWIN)).tolist(),
            rfc,
            hist,
            zo.tolist(),
            zr.tolist(),
            OUT[:, z.F_CONTINUED].tolist(),
            OUT[:, z.F_REASON].tolist(),
            OUT[:, z.F_CLOSE1].tolist(),
            OUT[:, z.F_CLOSE2].tolist(),
            OUT[:, z.F_CLOSE3].tolist(),
            od.tolist(),
            (OUT[:, z.F_FIRST_FLAGS] & (SYN | ACK)).tolist(),
            ((self.now - OUT[:, z.F_SEEN_TS]) // 1_000_000_000).tolist(),
            strict=True,
        )
        out = []
        pre = self.uid_prefix
        for (
            uid, stream, ahi, alo, ap, bhi, blo, bp, orient, start, dur, opk, rpk, ob, rb,
            opl, rpl, oip, rip, rtt, retx, zw, (o_rfc, r_rfc), h, zos, zrs, cont, reason,
            c1, c2, c3, odir, ff, idle,
        ) in cols:  # fmt: skip
            cs = _conn_state(zos, zrs, ob == 0 and rb == 0, h)
            out.append(
                ConnRecord(
                    uid=f"{pre}{uid:x}",
                    stream=stream,
                    orig_h=_addr_text(ahi & u64, alo & u64),
                    orig_p=ap,
                    resp_h=_addr_text(bhi & u64, blo & u64),
                    resp_p=bp,
                    orientation=z.ORIENT_WORDS[orient],
                    start=start / 1e9,
                    duration=dur / 1e9,
                    orig_pkts=opk,
                    resp_pkts=rpk,
                    orig_bytes=ob & u64,
                    resp_bytes=rb & u64,
                    orig_payload=opl,
                    resp_payload=rpl,
                    orig_ip_bytes=oip,
                    resp_ip_bytes=rip,
                    missed_bytes=0,
                    irtt=None if rtt != rtt else rtt,
                    retransmissions=retx,
                    zero_windows=zw,
                    orig_state=o_rfc,
                    resp_state=r_rfc,
                    end=_end_words(
                        (c1, c2, c3),
                        odir,
                        cs,
                        reason,
                        ff,
                        idle if reason == z.END_IDLE and cs in _OPEN else 0,
                    ),
                    conn_state=cs,
                    history=h,
                    continued=bool(cont),
                    emitted=z.END_WORDS[reason],
                    zeek_orig_state=z.ZEEK_STATE_NAMES[zos],
                    zeek_resp_state=z.ZEEK_STATE_NAMES[zrs],
                    first_ns=start,
                )
            )
        return out


def _sizes(
    OUT: npt.NDArray[np.int64],
    rows: npt.NDArray[Any],
    e: npt.NDArray[np.int64],
    peer_state: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """Zeek's TCP_Endpoint::Size() over many records (see `tcpwhy.tcp.zeek.zeek_size`)."""
    last = OUT[rows, e + z.E_LAST]
    ackr = OUT[rows, e + z.E_ACKR]
    size = np.where(last > ackr, last, ackr)
    size = np.where(size != 0, size - 1, size)
    size = np.where((OUT[rows, e + z.E_FIN_CNT] > 0) & (size != 0), size - 1, size)
    aborted = (
        (OUT[rows, e + z.E_PREV] == z.SYN_SENT)
        & (OUT[rows, e + z.E_STATE] == z.RESET)
        & (peer_state == z.INACTIVE)
        & (ackr != 0)
        & (ackr != 1)
    )
    return np.where(aborted, 0, size)


_OPEN = frozenset({"S1", "S2", "S3", "SH", "SHR", "OTH"})
"""conn_state values whose end words may mention the idle time."""


@functools.lru_cache(maxsize=4096)
def _conn_state(os_: int, rs: int, no_bytes: bool, history: str) -> str:
    return z.zeek_conn_state(os_, rs, 0 if no_bytes else 1, 0 if no_bytes else 1, history)


@functools.lru_cache(maxsize=4096)
def _end_words(
    closes: tuple[int, int, int], odir: int, conn_state: str, reason: int, ff: int, idle_s: int
) -> str:
    return end_words(list(closes), odir, conn_state, reason, ff, float(idle_s))


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
        return "refused (RST to SYN)"
    if conn_state in ("S0",) or (
        conn_state == "OTH" and not events and first_flags & SYN and not first_flags & ACK
    ):
        return "no answer to SYN"
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
        z.END_CAPTURE: "still open at end of capture",
        z.END_EVICTED: "evicted while still open (too many active connections)",
        z.END_IDLE: f"idle for {idle_s:.0f} s, no close seen",
        z.END_INACTIVITY: "no close seen before Zeek's inactivity timeout",
    }.get(reason, "no close seen")
    if fins:
        return f"half-closed by {fins[0]}; {tail}"
    return tail


def iter_connections(
    source: str | Iterable[PacketTable],
    stats: CaptureStats | None = None,
    **options: Any,
) -> Iterator[ConnRecord]:
    """Connections of a capture (a path, "-", or tables), yielded as each one finishes."""
    from tcpwhy.capture import iter_tables

    b = ConnectionBuilder(**options)
    # the builder copies what it keeps, so the reader may reuse its buffers
    tables = (
        iter_tables(
            source, stats, reuse=True, checksums=b.check_csum, teredo_any_port=b.zeek_timers
        )
        if isinstance(source, str)
        else source
    )
    for t in tables:
        yield from b.feed(t)
    yield from b.finish()
    if stats is not None:
        stats.warnings.extend(b.warnings)


def build_connections(table: PacketTable, **options: Any) -> list[ConnRecord]:
    """All connections of one packet table, in stream order."""
    recs = list(iter_connections([table], None, **options))
    recs.sort(key=lambda r: (r.stream, r.first_ns))
    return recs


__all__ = [
    "DEFAULT_LIKELY_SERVER_PORTS",
    "ConnRecord",
    "ConnectionBuilder",
    "WiresharkFlags",
    "build_connections",
    "end_words",
    "iter_connections",
    "zeek_ports",
    "zeek_style_flags",
]

_ = (FIN, RST)
