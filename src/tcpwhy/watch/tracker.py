"""Open connections of a watched capture, and the windows of connections whose fate is known.

`watch` cannot hold the capture, so it keeps the packet rows of open connections only.
When a connection ends (its RST, both FINs and a short linger), goes idle, or has to make
room (too many connections or rows held), its rows leave in a *window*: a small packet
table the ordinary rules (`diagnose.engine.run_rules`) read as if it were a capture.

Everything here is numpy over a chunk's rows and the open connections' few columns: no
Python per packet. Connections are keyed by a 64-bit hash of their canonical 4-tuple (both
directions hash alike); a collision would merge two connections' rows into one window,
where the stream tracker still separates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import (
    ACK,
    FIN,
    RST,
    SYN,
    PacketTable,
    compact_payloads,
    concat_icmp,
    icmp_kept,
)
from tcpwhy.diagnose.engine import DIAGNOSIS_COLUMNS
from tcpwhy.tcp.streams import pair_hashes

NS = 1_000_000_000

# why a connection left the tracker
ENDINGS = ("reset", "closed", "idle", "evicted", "end")


def conn_keys(t: PacketTable) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int8]]:
    """Per row: the connection's key (the same for both directions: the stream table's hash,
    `tcp.streams.pair_hashes`) and the direction (0 from the lower endpoint)."""
    n = len(t)
    keys, dirs = np.empty(n, np.uint64), np.empty(n, np.int8)
    pair_hashes(t.endpoints(), keys, dirs)
    return keys, dirs


PAYLOAD_BYTES = 256
"""Payload bytes kept per segment: what the rules read of a payload is at its start (the
HTTP request or status line, a TLS record header); bulk data would cost memory and copies."""


def slim(t: PacketTable, payload_bytes: int = PAYLOAD_BYTES) -> PacketTable:
    """The diagnosis columns of a chunk, with the start of each payload copied compactly
    (the chunk's buffers, which hold every column and the raw frames, can then go)."""
    t = PacketTable({k: t.cols[k] for k in DIAGNOSIS_COLUMNS}, t.data, t.icmp)
    return take_compact(t, None, payload_bytes)


def take_compact(
    t: PacketTable, keep: npt.NDArray[Any] | None = None, payload_bytes: int | None = None
) -> PacketTable:
    """Rows `keep` (all when None) with their own compact payload buffer (at most
    `payload_bytes` per row), ICMP rows kept with them."""

    if keep is None:
        cols = {k: t.cols[k].copy() for k in DIAGNOSIS_COLUMNS}
    else:
        cols = {k: t.cols[k][keep] for k in DIAGNOSIS_COLUMNS}
    if payload_bytes is not None:
        cols["payload_cap"] = np.minimum(cols["payload_cap"], payload_bytes).astype(
            cols["payload_cap"].dtype
        )
    out = PacketTable(cols, compact_payloads(cols, [(t.data, cols["payload_off"])]))
    if t.icmp is not None and len(t.icmp):
        if keep is None:
            out.icmp = t.icmp
        else:
            mask = np.zeros(len(t), np.bool_)
            mask[keep] = True
            ik, _ = conn_keys(t.icmp)
            tk, _ = conn_keys(t)
            out.icmp = icmp_kept(t, mask, np.isin(ik, tk[mask]))
    return out


def concat_slim(parts: list[PacketTable]) -> PacketTable:
    """Slim tables joined, payload bytes compacted."""

    icmp = concat_icmp(parts)
    parts = [p for p in parts if len(p)]
    if len(parts) == 1:
        out = PacketTable(parts[0].cols, parts[0].data, icmp)
        return out
    if not parts:
        return PacketTable(
            {k: np.zeros(0, np.int64) for k in DIAGNOSIS_COLUMNS}, np.zeros(0, np.uint8), icmp
        )
    cols = {k: np.concatenate([p.cols[k] for p in parts]) for k in DIAGNOSIS_COLUMNS}
    data = compact_payloads(cols, [(p.data, p.cols["payload_off"]) for p in parts])
    return PacketTable(cols, data, icmp)


Pick = tuple[PacketTable, "npt.NDArray[np.bool_] | None", "npt.NDArray[np.bool_] | None"]
"""A slim table, its TCP rows taken (None: all) and its ICMP rows taken (None: all)."""


def take_many(items: list[Pick]) -> PacketTable:
    """The rows picked from several slim tables as one compact slim table, each column and
    payload byte copied once (a take and a join would copy them twice)."""
    if len(items) == 1:
        t, sel, isel = items[0]
        if sel is None and isel is None:
            return t
    # the rows as indices, found once: each column is then a take of those rows only (a
    # compress reads the whole mask again per column, and a few rows leave a long part)
    idx = [None if sel is None else np.flatnonzero(sel) for _, sel, _ in items]
    n = [len(t) if i is None else len(i) for (t, _, _), i in zip(items, idx, strict=True)]
    total = sum(n)
    cols: dict[str, npt.NDArray[Any]] = {}
    for k in DIAGNOSIS_COLUMNS:
        ref = next((t.cols[k] for t, _, _ in items if k in t.cols), None)
        out = np.empty(total, ref.dtype if ref is not None else np.int64)
        at = 0
        for (t, _, _), i, m in zip(items, idx, n, strict=True):
            if m:
                if i is None:
                    out[at : at + m] = t.cols[k]
                else:
                    np.take(t.cols[k], i, out=out[at : at + m])
            at += m
        cols[k] = out
    old_off = cols["payload_off"]  # each part's rows, in turn
    parts = [
        (t.data, old_off[a - m : a]) for (t, _, _), m, a in zip(items, n, np.cumsum(n), strict=True)
    ]
    data = compact_payloads(cols, parts)
    shells = []
    for (t, sel, isel), m in zip(items, n, strict=True):
        ic = None
        if t.icmp is not None and len(t.icmp):
            if sel is None and isel is None:
                ic = t.icmp
            else:
                keep = np.ones(len(t), np.bool_) if sel is None else sel
                ikeep = np.ones(len(t.icmp), np.bool_) if isel is None else isel
                ic = icmp_kept(t, keep, ikeep)
        # concat_icmp reads a table's length and ICMP rows only
        shells.append(PacketTable({"frame": np.empty(m, np.int64)}, icmp=ic))
    return PacketTable(cols, data, concat_icmp(shells))


@dataclass
class Part:
    """Rows of open connections as they came (a chunk, or parts joined), with the rows of
    connections that already left masked out: rows leave without copying the rest, which is
    compacted only once most of it has gone."""

    table: PacketTable
    keys: npt.NDArray[np.uint64]
    nos: npt.NDArray[np.int64]  # per row: its connection's number (`ConnTracker.no`)
    alive: npt.NDArray[np.bool_] | None = None  # None: every row
    ialive: npt.NDArray[np.bool_] | None = None  # the ICMP rows', None: every one
    n_alive: int = -1
    _ikeys: npt.NDArray[np.uint64] | None = None

    def __post_init__(self) -> None:
        if self.n_alive < 0:
            self.n_alive = len(self.table)

    def ikeys(self) -> npt.NDArray[np.uint64]:
        ic = self.table.icmp
        if self._ikeys is None:
            self._ikeys = conn_keys(ic)[0] if ic is not None and len(ic) else keys_none()
        return self._ikeys

    def pick(self) -> Pick:
        return self.table, self.alive, self.ialive

    def live_keys(self) -> npt.NDArray[np.uint64]:
        return self.keys if self.alive is None else self.keys[self.alive]

    def live_nos(self) -> npt.NDArray[np.int64]:
        return self.nos if self.alive is None else self.nos[self.alive]


def keys_none() -> npt.NDArray[np.uint64]:
    return np.zeros(0, np.uint64)


LOOKUP_SPAN = 1 << 24
"""Connection numbers a release's lookup table may span (bytes): beyond it (a connection open
for days among millions of short ones) rows are matched by key instead."""


def _leaving(gone_no: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.bool_], int] | None:
    """A lookup table of the leaving connections' numbers and its first number, or None when
    they span more than `LOOKUP_SPAN`. Numbers, unlike keys, are small dense integers: a
    row's membership is one gather, not a binary search of its key (a third of the time
    `watch` spent releasing connections)."""
    if not len(gone_no):
        return np.zeros(0, np.bool_), 0
    lo, hi = int(gone_no.min()), int(gone_no.max())
    if hi - lo >= LOOKUP_SPAN:
        return None
    lut = np.zeros(hi - lo + 1, np.bool_)
    lut[gone_no - lo] = True
    return lut, lo


def _in_lookup(
    nos: npt.NDArray[np.int64], lut: npt.NDArray[np.bool_], lo: int
) -> npt.NDArray[np.bool_]:
    if not len(lut):
        return np.zeros(len(nos), np.bool_)
    idx = nos - lo
    ok = (idx >= 0) & (idx < len(lut))
    return lut[np.where(ok, idx, 0)] & ok


def _member(
    keys: npt.NDArray[np.uint64], sorted_keys: npt.NDArray[np.uint64]
) -> npt.NDArray[np.bool_]:
    """Per key: in `sorted_keys`."""
    if not len(sorted_keys):
        return np.zeros(len(keys), np.bool_)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.asarray(sorted_keys[pos] == keys)


@dataclass
class Limits:
    """How long and how much `watch` holds; every bound of its memory is here."""

    idle_s: float = 300.0  # a connection silent this long leaves (pools idle for minutes)
    fin_linger_s: float = 2.0  # after both FINs: room for the last ACK and a resent FIN
    rst_linger_s: float = 0.2  # after a RST: the other direction's RST of a middlebox
    max_conns: int = 100_000  # open connections held; the longest idle leave first
    max_rows: int = 500_000  # packet rows held (~200 MB); the connections with most rows leave
    recent_s: float = 5.0  # late segments of a connection that left are dropped this long
    # a closed 4-tuple that keeps being reused (a new SYN before its linger ends) leaves once
    # it holds this many rows: each window still shows the reuse, none holds it all
    reuse_rows: int = 512


@dataclass
class Window:
    """Rows of connections that left the tracker, with each row's connection number."""

    table: PacketTable
    numbers: npt.NDArray[np.int64]  # per row: the connection's number (order first seen)
    now_ns: int
    endings: dict[str, int] = field(default_factory=dict)
    keys: npt.NDArray[np.uint64] = field(default_factory=lambda: np.zeros(0, np.uint64))
    """Per row: the connection's key (`conn_keys`)."""
    unended: npt.NDArray[np.uint64] = field(default_factory=lambda: np.zeros(0, np.uint64))
    """Sorted keys of the connections that left without ending (idle, evicted): their later
    packets are followed again as a connection of their own."""


class ConnTracker:
    """Per-connection state as sorted numpy columns, plus the open connections' rows."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.keys = np.zeros(0, np.uint64)
        self.no = np.zeros(0, np.int64)
        self.last_ns = np.zeros(0, np.int64)
        self.fin = np.zeros(0, np.uint8)  # bit per direction
        self.rst_ns = np.zeros(0, np.int64)  # first RST, 0 when none
        self.synack = np.zeros(0, np.bool_)
        self.rows = np.zeros(0, np.int64)
        # the open connections' rows, chunk by chunk, each with its rows' keys
        self.parts: list[Part] = []
        self.pending_rows = 0
        self.next_no = 0
        self.recent_keys = np.zeros(0, np.uint64)
        self.recent_until = np.zeros(0, np.int64)
        self.late_dropped = 0
        self.now_ns = 0
        self.ended: dict[str, int] = dict.fromkeys(ENDINGS, 0)

    @property
    def open(self) -> int:
        return len(self.keys)

    def states(self) -> dict[str, int]:
        """Open connections by state, as the metrics show them."""
        rst = self.rst_ns > 0
        fin = (self.fin != 0) & ~rst
        syn = ~self.synack & ~rst & ~fin
        return {
            "handshake": int(syn.sum()),
            "established": int((~rst & ~fin & self.synack).sum()),
            "closing": int(fin.sum()),
            "reset": int(rst.sum()),
        }

    def feed(self, chunk: PacketTable) -> None:
        """Take a chunk's rows (slim, in capture order) into the open connections."""
        if not len(chunk):
            if chunk.icmp is not None and len(chunk.icmp):
                self.parts.append(Part(chunk, keys_none(), np.zeros(0, np.int64)))
            return
        keys, dirs = conn_keys(chunk)
        all_keys = keys
        kept: npt.NDArray[np.bool_] | None = None  # rows held (None: all)
        ts = chunk["ts_ns"].astype(np.int64)
        self.now_ns = max(self.now_ns, int(ts.max()))
        flags = chunk["flags"].astype(np.int64)
        if len(self.recent_keys):
            # late segments of a connection that already left (a second RST, a resent FIN):
            # alone they would look like a connection without a start
            pos = np.searchsorted(self.recent_keys, keys)
            pos = np.minimum(pos, len(self.recent_keys) - 1)
            m = (self.recent_keys[pos] == keys) & (ts <= self.recent_until[pos])
            late = m & ((flags & (SYN | ACK)) != SYN)
            syn = np.flatnonzero(m & ~late)
            if len(syn):  # a new connection on the 4-tuple: its segments are not late
                uk, fi = np.unique(keys[syn], return_index=True)
                at = np.minimum(np.searchsorted(uk, keys), len(uk) - 1)
                reopened = (uk[at] == keys) & (np.arange(len(keys)) >= syn[fi][at])
                late &= ~reopened
                self.recent_until[np.searchsorted(self.recent_keys, uk)] = 0
            if late.any():
                self.late_dropped += int(late.sum())
                keep = ~late
                if chunk.icmp is not None and len(chunk.icmp):
                    chunk = take_compact(chunk, keep)  # ICMP rows go with their connections
                    all_keys = keys[keep]
                else:
                    kept = keep  # masked in the part, not copied
                keys, dirs, ts, flags = keys[keep], dirs[keep], ts[keep], flags[keep]
                if not len(keys):
                    return
        u, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        n = len(u)
        last = np.zeros(n, np.int64)
        np.maximum.at(last, inv, ts)
        fin = np.zeros(n, np.uint8)
        fm = (flags & (FIN | RST)) == FIN
        np.bitwise_or.at(fin, inv[fm], (1 << dirs[fm]).astype(np.uint8))
        rst = np.zeros(n, np.int64)
        rm = (flags & RST) != 0
        if rm.any():
            rst_ts = np.full(n, np.iinfo(np.int64).max, np.int64)
            np.minimum.at(rst_ts, inv[rm], ts[rm])
            rst = np.where(rst_ts == np.iinfo(np.int64).max, 0, rst_ts)
        sa = np.zeros(n, np.bool_)
        sa[inv[(flags & (SYN | ACK)) == (SYN | ACK)]] = True
        cnt = np.bincount(inv, minlength=n).astype(np.int64)

        pos = np.searchsorted(self.keys, u)
        found = np.zeros(n, np.bool_)
        no_of = np.empty(n, np.int64)  # each connection's number
        if len(self.keys):
            pc = np.minimum(pos, len(self.keys) - 1)
            found = self.keys[pc] == u
            at = pc[found]
            no_of[found] = self.no[at]
            self.last_ns[at] = np.maximum(self.last_ns[at], last[found])
            self.fin[at] |= fin[found]
            r = self.rst_ns[at]
            self.rst_ns[at] = np.where(r == 0, rst[found], r)
            self.synack[at] |= sa[found]
            self.rows[at] += cnt[found]
        new = ~found
        if new.any():
            order = np.argsort(first[new], kind="stable")
            nos = np.empty(int(new.sum()), np.int64)
            nos[order] = np.arange(self.next_no, self.next_no + len(nos))
            self.next_no += len(nos)
            no_of[new] = nos
            keys_all = np.concatenate([self.keys, u[new]])
            srt = np.argsort(keys_all, kind="stable")
            self.keys = keys_all[srt]
            self.no = np.concatenate([self.no, nos])[srt]
            self.last_ns = np.concatenate([self.last_ns, last[new]])[srt]
            self.fin = np.concatenate([self.fin, fin[new]])[srt]
            self.rst_ns = np.concatenate([self.rst_ns, rst[new]])[srt]
            self.synack = np.concatenate([self.synack, sa[new]])[srt]
            self.rows = np.concatenate([self.rows, cnt[new]])[srt]
        if kept is None:
            self.parts.append(Part(chunk, keys, no_of[inv]))
        else:
            row_nos = np.full(len(kept), -1, np.int64)
            row_nos[kept] = no_of[inv]
            self.parts.append(Part(chunk, all_keys, row_nos, kept, None, len(keys)))
        self.pending_rows += len(keys)
        if len(self.parts) > 64:  # few parts: a release looks at each
            table = take_many([p.pick() for p in self.parts])
            self.parts = [
                Part(
                    table,
                    np.concatenate([p.live_keys() for p in self.parts]),
                    np.concatenate([p.live_nos() for p in self.parts]),
                )
            ]

    def due(self, now_ns: int | None = None) -> npt.NDArray[np.bool_]:
        """Per open connection: leaves now, and why (`self._why`)."""
        lim = self.limits
        now = self.now_ns if now_ns is None else max(now_ns, self.now_ns)
        self.now_ns = now
        reset = (self.rst_ns > 0) & (self.rst_ns + int(lim.rst_linger_s * NS) <= now)
        closed = (self.fin == 3) & ~reset
        closed &= (self.last_ns + int(lim.fin_linger_s * NS) <= now) | (self.rows >= lim.reuse_rows)
        reset |= (self.rst_ns > 0) & (self.rows >= lim.reuse_rows)
        idle = (self.last_ns + int(lim.idle_s * NS) <= now) & ~reset & ~closed
        go = reset | closed | idle
        evicted = np.zeros(len(go), np.bool_)
        left = ~go
        over = int(left.sum()) - lim.max_conns
        # ties go by connection number (the oldest first), not by where the keys sort
        if over > 0:  # the longest idle make room
            cand = np.flatnonzero(left)
            pick = cand[np.lexsort((self.no[cand], self.last_ns[cand]))[:over]]
            evicted[pick] = True
        rows_left = int(self.rows[left & ~evicted].sum())
        if rows_left > lim.max_rows:  # the connections holding most rows make room
            cand = np.flatnonzero(left & ~evicted)
            by = cand[np.lexsort((self.no[cand], -self.rows[cand]))]
            need = rows_left - lim.max_rows // 2
            k = int(np.searchsorted(np.cumsum(self.rows[by]), need)) + 1
            evicted[by[:k]] = True
        self._why = {"reset": reset, "closed": closed, "idle": idle, "evicted": evicted}
        return go | evicted

    def release(self, now_ns: int | None = None, everything: bool = False) -> Window | None:
        """The window of the connections that leave now (all of them with `everything`),
        or None."""
        if everything:
            mask = np.ones(len(self.keys), np.bool_)
            self._why = {"end": mask}
        else:
            mask = self.due(now_ns)
        if not mask.any() and not (everything and self.parts):
            return None
        endings = {k: int(v.sum()) for k, v in self._why.items() if v.any()}
        for k, v in endings.items():
            self.ended[k] += v
        gone_keys = self.keys[mask]
        gone_no = self.no[mask]
        lookup = _leaving(gone_no)
        # parts without a leaving connection's row stay as they are, and the rows that stay
        # in a part are only masked: no copy of what stays
        picks: list[Pick] = []
        win_keys: list[npt.NDArray[np.uint64]] = []
        win_nos: list[npt.NDArray[np.int64]] = []
        parts: list[Part] = []
        for part in self.parts:
            if lookup is not None:
                sel = _in_lookup(part.nos, *lookup)
            else:
                sel = _member(part.keys, gone_keys)
            if part.alive is not None:
                sel &= part.alive
            ik = part.ikeys()
            isel = None
            if len(ik):
                isel = _member(ik, gone_keys)
                if part.ialive is not None:
                    isel &= part.ialive
            nsel = int(np.count_nonzero(sel))
            nisel = int(np.count_nonzero(isel)) if isel is not None else 0
            if not nsel and not nisel:
                parts.append(part)
                continue
            whole = part.alive is None and nsel == len(sel)
            iwhole = isel is None or (part.ialive is None and nisel == len(isel))
            picks.append((part.table, None if whole else sel, None if iwhole else isel))
            win_keys.append(part.keys if whole else part.keys[sel])
            win_nos.append(part.nos if whole else part.nos[sel])
            ialive = None
            if isel is not None:
                ialive = ~isel if part.ialive is None else part.ialive & ~isel
            if nsel == part.n_alive and (ialive is None or not ialive.any()):
                continue  # the whole part left
            alive = ~sel if part.alive is None else part.alive & ~sel
            n_alive = part.n_alive - nsel
            if 2 * n_alive < len(sel):  # mostly gone: the rest in a buffer of its own
                rest = take_many([(part.table, alive, ialive)])
                parts.append(Part(rest, part.keys[alive], part.nos[alive]))
            else:
                parts.append(
                    Part(part.table, part.keys, part.nos, alive, ialive, n_alive, part._ikeys)
                )
        self.parts = parts
        self.pending_rows = sum(p.n_alive for p in parts)
        win = take_many(picks) if picks else concat_slim([])
        wk = np.concatenate(win_keys) if win_keys else np.zeros(0, np.uint64)
        numbers = np.concatenate(win_nos) if win_nos else None
        keep = ~mask
        # remember who ended (reset, closed), to drop their late segments; a connection that
        # left idle or evicted has not ended: its next segments are followed again
        why = self._why
        ended = why.get("reset", np.zeros(len(mask), np.bool_)) | why.get(
            "closed", np.zeros(len(mask), np.bool_)
        )
        ended_keys = self.keys[ended & mask]
        until = self.now_ns + int(self.limits.recent_s * NS)
        alive = self.recent_until > self.now_ns
        rk = np.concatenate([self.recent_keys[alive], ended_keys])
        ru = np.concatenate([self.recent_until[alive], np.full(len(ended_keys), until, np.int64)])
        srt = np.argsort(rk, kind="stable")
        self.recent_keys, self.recent_until = rk[srt], ru[srt]
        unended = np.sort(self.keys[mask & ~ended & ~why.get("end", np.zeros(len(mask), np.bool_))])
        for name in ("keys", "no", "last_ns", "fin", "rst_ns", "synack", "rows"):
            setattr(self, name, getattr(self, name)[keep])
        return Window(
            win,
            numbers if numbers is not None else np.zeros(0, np.int64),
            self.now_ns,
            endings,
            wk,
            unended,
        )
